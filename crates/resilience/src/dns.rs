//! Endpoints from the platform's DNS, for where there is no mortar node:
//! in a Kubernetes cluster `<service>` resolves to the Service's address
//! (or, for a headless Service, to every ready pod).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::resolve::{Endpoint, Resolve};

/// How often a watched name is resolved again, so a scaled or moved
/// service is followed.
const REFRESH: Duration = Duration::from_secs(5);

/// Resolves `<service>:<port>` through the system resolver and follows it.
#[derive(Debug, Clone)]
pub struct DnsResolver {
    port: u16,
    watches: Arc<Mutex<HashMap<String, watch::Sender<Vec<Endpoint>>>>>,
}

impl DnsResolver {
    /// A resolver for services that all answer on `port` (80 for the
    /// Services `mortar export kubernetes` writes).
    pub fn new(port: u16) -> Self {
        DnsResolver {
            port,
            watches: Arc::default(),
        }
    }

    async fn follow(self, service: String, tx: watch::Sender<Vec<Endpoint>>) {
        while !tx.is_closed() {
            match tokio::net::lookup_host((service.as_str(), self.port)).await {
                Ok(addresses) => {
                    let mut endpoints: Vec<Endpoint> = addresses
                        .map(|address| Endpoint::new(format!("{service}@{address}"), address))
                        .collect();
                    endpoints.sort_by_key(|e| e.address);
                    endpoints.dedup();
                    tx.send_if_modified(|current| {
                        let changed = *current != endpoints;
                        if changed {
                            *current = endpoints;
                        }
                        changed
                    });
                }
                // A failed lookup keeps the last known endpoints: a DNS
                // blip must not take a healthy service away.
                Err(e) => tracing::debug!(service, error = %e, "DNS lookup failed"),
            }
            tokio::time::sleep(REFRESH).await;
        }
    }
}

impl Resolve for DnsResolver {
    /// Must be called inside a Tokio runtime (the first watch of a service
    /// starts its follower task).
    fn watch(&self, service: &str) -> watch::Receiver<Vec<Endpoint>> {
        let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = watches.get(service)
            && !tx.is_closed()
        {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(Vec::new());
        watches.insert(service.to_owned(), tx.clone());
        tokio::spawn(self.clone().follow(service.to_owned(), tx));
        rx
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[tokio::test]
    async fn a_name_resolves_to_its_addresses_on_the_given_port() {
        let resolver = DnsResolver::new(4321);
        let mut rx = resolver.watch("localhost");
        let endpoints =
            tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|v| !v.is_empty()))
                .await
                .unwrap()
                .unwrap()
                .clone();
        assert!(
            endpoints
                .iter()
                .any(|e| e.address == SocketAddr::from(([127, 0, 0, 1], 4321))),
            "{endpoints:?}"
        );
    }

    #[tokio::test]
    async fn an_unknown_name_has_no_endpoints() {
        let resolver = DnsResolver::new(80);
        let rx = resolver.watch("no-such-service.invalid");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(rx.borrow().is_empty());
    }
}
