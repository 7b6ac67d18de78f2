//! Where endpoints come from: a small trait the registry implements, so this
//! crate never depends on the registry and tests can use a [`StaticResolver`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::sync::watch;

/// One ready instance of a service, as the client needs to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Stable instance id (e.g. `catalog-2`); the balancer's key.
    pub id: String,
    /// Where the instance listens.
    pub address: SocketAddr,
    /// Release version, used for weighted traffic splits.
    pub version: String,
}

impl Endpoint {
    /// An endpoint with version `"v1"`, handy in tests.
    pub fn new(id: impl Into<String>, address: SocketAddr) -> Self {
        Self {
            id: id.into(),
            address,
            version: "v1".to_owned(),
        }
    }

    /// The same endpoint with another version.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }
}

/// Answers "which ready instances does service S have, now and from now on".
///
/// The registry implements this; the client only ever sees names.
pub trait Resolve: Send + Sync + 'static {
    /// A watch of the ready endpoints of `service`; an unknown service yields
    /// an empty list that fills when instances appear.
    fn watch(&self, service: &str) -> watch::Receiver<Vec<Endpoint>>;
}

/// A resolver whose endpoints are set by hand: for tests, benchmarks and
/// fixed topologies.
#[derive(Debug, Default)]
pub struct StaticResolver {
    services: Mutex<HashMap<String, watch::Sender<Vec<Endpoint>>>>,
}

impl StaticResolver {
    /// An empty resolver.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the endpoints of `service`; watchers see the change at once.
    pub fn set(&self, service: &str, endpoints: Vec<Endpoint>) {
        let mut services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        match services.get(service) {
            Some(tx) => {
                tx.send_replace(endpoints);
            }
            None => {
                let (tx, _) = watch::channel(endpoints);
                services.insert(service.to_owned(), tx);
            }
        }
    }
}

impl Resolve for StaticResolver {
    fn watch(&self, service: &str) -> watch::Receiver<Vec<Endpoint>> {
        let mut services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        services
            .entry(service.to_owned())
            .or_insert_with(|| watch::channel(Vec::new()).0)
            .subscribe()
    }
}
