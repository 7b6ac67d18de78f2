//! A TCP proxy in front of the test PostgreSQL that cuts a session at an
//! exact point of the wire protocol — just before a `COMMIT` reaches the
//! server, or just after the server has answered one (so the commit happened
//! but its answer never arrives). Timing-based fault injection cannot hit
//! those windows reliably; reading the protocol's frames can.
//!
//! Frames are a type byte and a length (which counts itself) in both
//! directions, except the client's first message (startup or cancel), which
//! has no type byte. Sessions go through unencrypted (`sslmode=disable`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::stores::postgres_base;

/// Where to cut the next `COMMIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Close both sides instead of forwarding the client's `COMMIT`: the
    /// client sent it, the server never ran it.
    BeforeCommit,
    /// Close both sides instead of forwarding the server's answer to a
    /// `COMMIT`: the server committed, the client never hears so.
    AfterCommit,
}

/// The proxy; see the module docs. Stops when dropped.
#[derive(Debug)]
pub struct PgProxy {
    addr: SocketAddr,
    armed: Arc<Mutex<Option<Cut>>>,
    cuts: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PgProxy {
    /// Listens on a loopback port, forwarding to the test server.
    pub async fn start() -> PgProxy {
        let config: tokio_postgres::Config = postgres_base().parse().expect("a PostgreSQL URL");
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let upstream = format!("{host}:{port}");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let armed: Arc<Mutex<Option<Cut>>> = Arc::default();
        let cuts: Arc<AtomicUsize> = Arc::default();
        let task = {
            let (armed, cuts) = (armed.clone(), cuts.clone());
            tokio::spawn(async move {
                let mut sessions = tokio::task::JoinSet::new();
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        continue;
                    };
                    // Frames are forwarded one by one: no Nagle delays.
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    sessions.spawn(relay(client, server, armed.clone(), cuts.clone()));
                }
            })
        };
        PgProxy {
            addr,
            armed,
            cuts,
            task,
        }
    }

    /// A store URL through the proxy, for `schema`.
    pub fn url(&self, schema: &str) -> String {
        let config: tokio_postgres::Config = postgres_base().parse().expect("a PostgreSQL URL");
        let user = config.get_user().unwrap_or("postgres");
        let db = config.get_dbname().unwrap_or(user);
        format!(
            "postgres://{user}@{}/{db}?sslmode=disable&schema={schema}",
            self.addr
        )
    }

    /// Cuts the next `COMMIT` seen on any session (once).
    pub fn arm(&self, cut: Cut) {
        *self.armed.lock().unwrap() = Some(cut);
    }

    /// How many sessions have been cut so far.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

/// Takes the armed cut if it is `cut`.
fn fire(armed: &Mutex<Option<Cut>>, cut: Cut) -> bool {
    let mut armed = armed.lock().unwrap();
    if *armed == Some(cut) {
        *armed = None;
        true
    } else {
        false
    }
}

/// Splits complete frames off the front of `buf`: `(type byte or None, whole frame)`.
fn frames(buf: &mut Vec<u8>, typed: &mut bool) -> Vec<(Option<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let header = if *typed { 5 } else { 4 };
        if buf.len() < header {
            return out;
        }
        let at = header - 4;
        let len = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        let total = at + len;
        if buf.len() < total {
            return out;
        }
        let frame: Vec<u8> = buf.drain(..total).collect();
        out.push((typed.then(|| frame[0]), frame));
        *typed = true;
    }
}

/// A frame is a `COMMIT`: the client's simple query, or the server's
/// command-complete tag for one.
fn is_commit(kind: Option<u8>, frame: &[u8], from_client: bool) -> bool {
    let expected = if from_client { b'Q' } else { b'C' };
    kind == Some(expected) && frame.get(5..) == Some(b"COMMIT\0".as_slice())
}

async fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    armed: Arc<Mutex<Option<Cut>>>,
    cuts: Arc<AtomicUsize>,
) {
    let (mut from_client, mut from_server) = (Vec::new(), Vec::new());
    let (mut client_typed, mut server_typed) = (false, true);
    let (mut client_chunk, mut server_chunk) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        tokio::select! {
            n = client.read(&mut client_chunk) => {
                let Ok(n @ 1..) = n else { return };
                from_client.extend_from_slice(&client_chunk[..n]);
                for (kind, frame) in frames(&mut from_client, &mut client_typed) {
                    if is_commit(kind, &frame, true) && fire(&armed, Cut::BeforeCommit) {
                        cuts.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    if server.write_all(&frame).await.is_err() {
                        return;
                    }
                }
            }
            n = server.read(&mut server_chunk) => {
                let Ok(n @ 1..) = n else { return };
                from_server.extend_from_slice(&server_chunk[..n]);
                for (kind, frame) in frames(&mut from_server, &mut server_typed) {
                    if is_commit(kind, &frame, false) && fire(&armed, Cut::AfterCommit) {
                        cuts.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    if client.write_all(&frame).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_untyped_startup_then_typed_frames() {
        let mut buf = vec![0, 0, 0, 8, 1, 2, 3, 4];
        buf.extend_from_slice(b"Q\0\0\0\x0bCOMMIT\0");
        buf.extend_from_slice(b"Q\0\0"); // incomplete
        let mut typed = false;
        let got = frames(&mut buf, &mut typed);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, None);
        assert!(is_commit(got[1].0, &got[1].1, true));
        assert!(!is_commit(got[1].0, &got[1].1, false));
        assert_eq!(buf, b"Q\0\0");
    }
}
