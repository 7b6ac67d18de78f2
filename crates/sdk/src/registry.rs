//! The node's registry reached over HTTP, for services (outside the node's process):
//! blocking queries keep a local cache fresh, and the cache outlives an
//! outage of the node, so callers keep their last known instances.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mortar_resilience::{Endpoint, Resolve};
use tokio::sync::watch;

/// The registry API's answer (`GET /v1/registry/services/{name}`), as far as
/// a client needs it.
#[derive(Debug, serde::Deserialize)]
struct ServiceInstances {
    index: u64,
    instances: Vec<InstanceDoc>,
}

/// One instance in that answer.
#[derive(Debug, serde::Deserialize)]
struct InstanceDoc {
    id: String,
    address: std::net::SocketAddr,
    version: String,
}

fn endpoints(instances: &[InstanceDoc]) -> Vec<Endpoint> {
    instances
        .iter()
        .map(|i| Endpoint {
            id: i.id.clone(),
            address: i.address,
            version: i.version.clone(),
        })
        .collect()
}

/// How long one blocking query waits on the node.
const WAIT: Duration = Duration::from_secs(30);

/// The node's registry API as a resolver.
#[derive(Clone)]
pub struct RemoteRegistry {
    base: String,
    http: reqwest::Client,
    watches: Arc<Mutex<HashMap<String, watch::Sender<Vec<Endpoint>>>>>,
}

impl std::fmt::Debug for RemoteRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRegistry")
            .field("base", &self.base)
            .finish()
    }
}

impl RemoteRegistry {
    /// A resolver asking the node at `node_url` (its admin API).
    pub fn new(node_url: &str) -> Self {
        Self::with_token(node_url, None)
    }

    /// Like [`RemoteRegistry::new`], sending `token` (the instance's
    /// `MORTAR_NODE_TOKEN`) as its credential: the node refuses registry
    /// queries without one.
    pub fn with_token(node_url: &str, token: Option<&str>) -> Self {
        let http = reqwest::Client::builder()
            .default_headers(crate::report::bearer_headers(token))
            .connect_timeout(Duration::from_secs(2))
            .timeout(WAIT + Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        RemoteRegistry {
            base: node_url.trim_end_matches('/').to_owned(),
            http,
            watches: Arc::default(),
        }
    }

    async fn query(&self, service: &str, index: Option<u64>) -> Result<ServiceInstances, String> {
        let mut url = format!("{}/v1/registry/services/{service}", self.base);
        if let Some(index) = index {
            url.push_str(&format!("?index={index}&wait_ms={}", WAIT.as_millis()));
        }
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: {}", resp.status()));
        }
        resp.json().await.map_err(|e| format!("{url}: {e}"))
    }

    /// Follows one service until nobody watches it any more.
    async fn follow(self, service: String, tx: watch::Sender<Vec<Endpoint>>) {
        let mut index = None;
        let mut delay = Duration::from_millis(100);
        loop {
            let answer = tokio::select! {
                _ = tx.closed() => return,
                answer = self.query(&service, index) => answer,
            };
            match answer {
                Ok(answer) => {
                    delay = Duration::from_millis(100);
                    index = Some(answer.index);
                    let now = endpoints(&answer.instances);
                    tx.send_if_modified(|current| {
                        let changed = *current != now;
                        *current = now;
                        changed
                    });
                }
                Err(error) => {
                    // Keep serving the last known instances; the node may be
                    // restarting.
                    tracing::warn!(managed_service = %service, %error, retry_in_ms = delay.as_millis() as u64,
                        "registry query failed; keeping the last known instances");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    index = None;
                }
            }
        }
    }
}

impl Resolve for RemoteRegistry {
    /// Must be called inside a Tokio runtime (the first watch of a service
    /// starts its follower task).
    fn watch(&self, service: &str) -> watch::Receiver<Vec<Endpoint>> {
        let mut watches = match self.watches.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
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
    use super::*;
    use mortar_discovery::{Instance, Registry};
    use std::collections::BTreeMap;
    use std::future::IntoFuture;
    use std::net::SocketAddr;

    #[tokio::test]
    async fn remote_watch_follows_changes_and_survives_a_node_outage() {
        let registry = Registry::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(
            axum::serve(listener, mortar_discovery::http::router(registry.clone())).into_future(),
        );
        let remote = RemoteRegistry::new(&format!("http://{addr}"));
        let mut rx = remote.watch("catalog");
        registry
            .register(
                Instance {
                    id: "catalog-1".into(),
                    service: "catalog".into(),
                    version: "1".into(),
                    address: SocketAddr::from(([127, 0, 0, 1], 9)),
                    labels: BTreeMap::new(),
                    ready: true,
                },
                None,
            )
            .unwrap();
        tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|v| v.len() == 1))
            .await
            .unwrap()
            .unwrap();
        // The node goes away: the last known instances stay.
        server.abort();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(rx.borrow().len(), 1);
    }
}
