//! A DNS server that answers for service names from the registry, so a
//! program in any language finds instances with an ordinary resolver.
//!
//! Names, for app `shop` (TTL 1 s, so answers follow the registry):
//! - `catalog.shop.mortar.` — A/AAAA: every ready instance of `catalog`;
//! - `_http._tcp.catalog.shop.mortar.` — SRV: port and target per instance,
//!   with the targets' addresses as additional records;
//! - `catalog-2.catalog.shop.mortar.` — A/AAAA: that one instance.
//!
//! Names outside the zone are refused (this is not a recursive resolver).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::registry::{Instance, Registry};

/// The top-level domain of every mortar zone.
pub const TLD: &str = "mortar";
/// TTL of every answer, in seconds: short, so clients follow changes.
pub const TTL: u32 = 1;

/// Why the DNS server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The app name does not make a valid zone.
    #[error("cannot build the DNS zone {zone:?}: {message}")]
    Zone {
        /// The zone tried.
        zone: String,
        /// The parser's message.
        message: String,
    },
    /// The port cannot be bound.
    #[error(
        "cannot listen for DNS on {addr}: {source}; set MORTAR_DNS_ADDR to a free loopback address"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// What a query name asks for.
#[derive(Debug, PartialEq, Eq)]
enum Query {
    /// `<service>.<zone>`
    Service(String),
    /// `_http._tcp.<service>.<zone>`
    Srv(String),
    /// `<instance>.<service>.<zone>`
    Instance { service: String, id: String },
    /// Inside the zone, but no such form.
    Unknown,
    /// Not in the zone.
    Outside,
}

/// Answers DNS queries from the registry.
#[derive(Clone)]
pub struct Handler {
    registry: Registry,
    zone: Name,
}

impl Handler {
    /// A handler for `<app>.mortar.`.
    pub fn new(registry: Registry, app: &str) -> Result<Self, DnsError> {
        let text = format!("{app}.{TLD}.");
        let zone = Name::from_ascii(&text).map_err(|e| DnsError::Zone {
            zone: text.clone(),
            message: e.to_string(),
        })?;
        Ok(Handler { registry, zone })
    }

    fn classify(&self, name: &Name) -> Query {
        let lower = name.to_lowercase();
        if !self.zone.zone_of(&lower) {
            return Query::Outside;
        }
        let extra = usize::from(lower.num_labels()) - usize::from(self.zone.num_labels());
        let labels: Vec<String> = lower
            .iter()
            .take(extra)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        match labels.as_slice() {
            [service] => Query::Service(service.clone()),
            [proto, transport, service] if proto == "_http" && transport == "_tcp" => {
                Query::Srv(service.clone())
            }
            [id, service] => Query::Instance {
                service: service.clone(),
                id: id.clone(),
            },
            _ => Query::Unknown,
        }
    }

    fn instance_name(&self, instance: &Instance) -> Option<Name> {
        Name::from_ascii(format!(
            "{}.{}.{}",
            instance.id, instance.service, self.zone
        ))
        .ok()
    }

    /// The answer records and additional records for one query, or the
    /// response code when there is nothing to answer.
    fn answer(
        &self,
        name: &Name,
        kind: RecordType,
    ) -> Result<(Vec<Record>, Vec<Record>), ResponseCode> {
        let address = |name: &Name, ip: IpAddr| -> Option<Record> {
            match (ip, kind) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => {
                    Some(Record::from_rdata(name.clone(), TTL, RData::A(A(v4))))
                }
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                    Some(Record::from_rdata(name.clone(), TTL, RData::AAAA(AAAA(v6))))
                }
                _ => None,
            }
        };
        match self.classify(name) {
            Query::Outside => Err(ResponseCode::Refused),
            Query::Unknown => Err(ResponseCode::NXDomain),
            Query::Service(service) => {
                let ready = self.registry.ready_instances(&service);
                if ready.is_empty() {
                    return Err(ResponseCode::NXDomain);
                }
                Ok((
                    ready
                        .iter()
                        .filter_map(|i| address(name, i.address.ip()))
                        .collect(),
                    Vec::new(),
                ))
            }
            Query::Instance { service, id } => match self.registry.instance(&id) {
                Some(i) if i.service == service && i.ready => Ok((
                    address(name, i.address.ip()).into_iter().collect(),
                    Vec::new(),
                )),
                _ => Err(ResponseCode::NXDomain),
            },
            Query::Srv(service) => {
                let ready = self.registry.ready_instances(&service);
                if ready.is_empty() {
                    return Err(ResponseCode::NXDomain);
                }
                if !matches!(kind, RecordType::SRV | RecordType::ANY) {
                    return Ok((Vec::new(), Vec::new()));
                }
                let mut answers = Vec::new();
                let mut additionals = Vec::new();
                for instance in &ready {
                    let Some(target) = self.instance_name(instance) else {
                        continue;
                    };
                    let srv = SRV::new(10, 10, instance.address.port(), target.clone());
                    answers.push(Record::from_rdata(name.clone(), TTL, RData::SRV(srv)));
                    let rdata = match instance.address.ip() {
                        IpAddr::V4(v4) => RData::A(A(v4)),
                        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                    };
                    additionals.push(Record::from_rdata(target, TTL, rdata));
                }
                Ok((answers, additionals))
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.recursion_available = false;
        let outcome = match request.request_info() {
            Ok(info) => self.answer(&Name::from(info.query.name()), info.query.query_type()),
            Err(_) => Err(ResponseCode::FormErr),
        };
        let sent = match outcome {
            Ok((answers, additionals)) => {
                let response = builder.build(
                    metadata,
                    answers.iter(),
                    None.iter(),
                    None.iter(),
                    additionals.iter(),
                );
                response_handle.send_response(response).await
            }
            Err(code) => {
                let response = builder.error_msg(&request.metadata, code);
                response_handle.send_response(response).await
            }
        };
        match sent {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(%error, "could not send a DNS response");
                let mut failed = Metadata::response_from_request(&request.metadata);
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(hickory_proto::op::Header {
                    metadata: failed,
                    counts: Default::default(),
                })
            }
        }
    }
}

/// A running DNS server on UDP and TCP of one port.
pub struct DnsServer {
    addr: SocketAddr,
    server: Server<Handler>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` (port 0 picks one free for both) and
    /// starts answering for `<app>.mortar.`.
    pub async fn start(
        registry: Registry,
        app: &str,
        addr: SocketAddr,
    ) -> Result<DnsServer, DnsError> {
        let handler = Handler::new(registry, app)?;
        let bind_error = |source| DnsError::Bind { addr, source };
        // The OS picks a free UDP port; TCP must then get the same port,
        // which another process may hold: try a few times.
        let mut last_error = None;
        for _ in 0..10 {
            let udp = UdpSocket::bind(addr).await.map_err(bind_error)?;
            let local = udp.local_addr().map_err(bind_error)?;
            match TcpListener::bind(local).await {
                Ok(tcp) => {
                    let mut server = Server::new(handler.clone());
                    server.register_socket(udp);
                    server.register_listener(tcp, Duration::from_secs(5), 64);
                    return Ok(DnsServer {
                        addr: local,
                        server,
                    });
                }
                Err(e) if addr.port() == 0 => last_error = Some(e),
                Err(e) => return Err(bind_error(e)),
            }
        }
        Err(bind_error(
            last_error.unwrap_or_else(|| std::io::Error::other("no free port")),
        ))
    }

    /// The bound address (same port on UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown`, then stops.
    pub async fn run(mut self, shutdown: CancellationToken) {
        tokio::select! {
            result = self.server.block_until_done() => {
                if let Err(e) = result {
                    tracing::error!(error = %e, "the DNS server stopped");
                }
            }
            _ = shutdown.cancelled() => {
                let _ = self.server.shutdown_gracefully().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn registry() -> Registry {
        let r = Registry::new();
        for (id, port, ready) in [
            ("catalog-1", 1001, true),
            ("catalog-2", 1002, true),
            ("catalog-3", 1003, false),
        ] {
            r.register(
                Instance {
                    id: id.into(),
                    service: "catalog".into(),
                    version: "1".into(),
                    address: SocketAddr::from(([127, 0, 0, 1], port)),
                    labels: BTreeMap::new(),
                    ready,
                },
                None,
            )
            .unwrap();
        }
        r
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn names_are_classified() {
        let h = Handler::new(Registry::new(), "shop").unwrap();
        assert_eq!(
            h.classify(&name("catalog.shop.mortar.")),
            Query::Service("catalog".into())
        );
        assert_eq!(
            h.classify(&name("CATALOG.Shop.mortar.")),
            Query::Service("catalog".into())
        );
        assert_eq!(
            h.classify(&name("_http._tcp.catalog.shop.mortar.")),
            Query::Srv("catalog".into())
        );
        assert_eq!(
            h.classify(&name("catalog-1.catalog.shop.mortar.")),
            Query::Instance {
                service: "catalog".into(),
                id: "catalog-1".into()
            }
        );
        assert_eq!(h.classify(&name("example.com.")), Query::Outside);
        assert_eq!(h.classify(&name("a.b.c.d.shop.mortar.")), Query::Unknown);
    }

    #[test]
    fn answers_list_only_ready_instances() {
        let h = Handler::new(registry(), "shop").unwrap();
        let (a, _) = h
            .answer(&name("catalog.shop.mortar."), RecordType::A)
            .unwrap();
        assert_eq!(a.len(), 2);
        let (srv, extra) = h
            .answer(&name("_http._tcp.catalog.shop.mortar."), RecordType::SRV)
            .unwrap();
        let ports: Vec<u16> = srv
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some(s.port),
                _ => None,
            })
            .collect();
        assert_eq!(ports, [1001, 1002]);
        assert_eq!(extra.len(), 2);
        assert_eq!(
            h.answer(&name("nope.shop.mortar."), RecordType::A),
            Err(ResponseCode::NXDomain)
        );
        assert_eq!(
            h.answer(&name("catalog-3.catalog.shop.mortar."), RecordType::A),
            Err(ResponseCode::NXDomain)
        );
        assert_eq!(
            h.answer(&name("example.com."), RecordType::A),
            Err(ResponseCode::Refused)
        );
        let (aaaa, _) = h
            .answer(&name("catalog.shop.mortar."), RecordType::AAAA)
            .unwrap();
        assert!(aaaa.is_empty(), "IPv4 instances have no AAAA records");
    }
}
