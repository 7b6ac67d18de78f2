//! A one-shot DNS client, as `dig @server -p port name type` would be.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The answer to one query.
#[derive(Debug)]
pub struct Answer {
    /// NOERROR, NXDOMAIN, REFUSED…
    pub code: ResponseCode,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The additional section.
    pub additionals: Vec<Record>,
}

impl Answer {
    /// The ports of the SRV records in the answer, sorted.
    pub fn srv_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(srv.port),
                _ => None,
            })
            .collect();
        ports.sort_unstable();
        ports
    }

    /// The IPv4 addresses of the A records in the answer.
    pub fn a_records(&self) -> Vec<std::net::Ipv4Addr> {
        self.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }
}

/// Sends one query over UDP to `server` and returns the parsed answer.
pub fn query(server: SocketAddr, name: &str, kind: RecordType) -> Answer {
    let mut message = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.send_to(&message.to_vec().unwrap(), server).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buf).unwrap();
    let reply = Message::from_vec(&buf[..n]).unwrap();
    Answer {
        code: reply.metadata.response_code,
        answers: reply.answers,
        additionals: reply.additionals,
    }
}

/// A fresh message id per query, so a late answer to an earlier query is
/// never taken for this one's.
fn rand_id() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
