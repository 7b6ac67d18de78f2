//! The in-process registry as a resolver for the resilient client.

use mortar_resilience::{Endpoint, Resolve};
use tokio::sync::watch;

use crate::registry::{Instance, Registry};

/// The client's view of registry instances.
pub(crate) fn endpoints(instances: &[Instance]) -> Vec<Endpoint> {
    instances
        .iter()
        .map(|i| Endpoint {
            id: i.id.clone(),
            address: i.address,
            version: i.version.clone(),
        })
        .collect()
}

impl Resolve for Registry {
    /// Follows the registry's watch of `service`. Must be called inside a
    /// Tokio runtime: a small task forwards changes until every receiver is
    /// gone.
    fn watch(&self, service: &str) -> watch::Receiver<Vec<Endpoint>> {
        let mut source = Registry::watch(self, service);
        let (tx, rx) = watch::channel(endpoints(&source.borrow_and_update()));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    changed = source.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        tx.send_replace(endpoints(&source.borrow_and_update()));
                    }
                }
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    #[tokio::test]
    async fn resolver_follows_registry_changes() {
        let registry = Registry::new();
        let mut rx = Resolve::watch(&registry, "catalog");
        assert!(rx.borrow().is_empty());
        registry
            .register(
                Instance {
                    id: "catalog-1".into(),
                    service: "catalog".into(),
                    version: "7".into(),
                    address: SocketAddr::from(([127, 0, 0, 1], 80)),
                    labels: BTreeMap::new(),
                    ready: true,
                },
                None,
            )
            .unwrap();
        rx.changed().await.unwrap();
        let now = rx.borrow_and_update().clone();
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].version, "7");
        registry.set_ready("catalog-1", false).unwrap();
        rx.changed().await.unwrap();
        assert!(rx.borrow().is_empty());
    }
}
