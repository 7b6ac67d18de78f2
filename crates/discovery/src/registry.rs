//! The registry: which instances of which service are where, and ready.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

/// One registered instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Instance {
    /// Unique id, e.g. `catalog-2`; also its DNS label.
    pub id: String,
    /// The service it belongs to.
    pub service: String,
    /// The version it runs (used to split traffic between versions).
    pub version: String,
    /// Where it listens.
    #[schema(value_type = String, example = "127.0.0.1:41234")]
    pub address: SocketAddr,
    /// Free-form labels (zone, release, …).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Whether it passes its readiness check; only ready instances are served.
    pub ready: bool,
}

/// Why a registry operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No instance has that id (it never registered, or its lease expired).
    #[error("unknown instance {0:?}; register it first (its lease may have expired)")]
    UnknownInstance(String),
    /// A name is not a DNS label.
    #[error(
        "invalid {what} {value:?}: use 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
    )]
    InvalidName {
        /// Which name.
        what: &'static str,
        /// The value given.
        value: String,
    },
    /// The lease is outside the allowed range.
    #[error("invalid lease of {0:?}: use 1 s to 1 h")]
    InvalidLease(Duration),
}

#[derive(Debug)]
struct Entry {
    instance: Instance,
    ttl: Option<Duration>,
    expires: Option<Instant>,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<String, Entry>,
    version: u64,
    watchers: HashMap<String, watch::Sender<Vec<Instance>>>,
}

impl State {
    fn ready_of(&self, service: &str) -> Vec<Instance> {
        self.entries
            .values()
            .filter(|e| e.instance.service == service && e.instance.ready)
            .map(|e| e.instance.clone())
            .collect()
    }

    /// Publishes a service's ready set to its watchers, if it changed.
    fn changed(&mut self, service: &str, versions: &watch::Sender<u64>) {
        self.version += 1;
        versions.send_replace(self.version);
        let ready = self.ready_of(service);
        if let Some(tx) = self.watchers.get(service) {
            tx.send_if_modified(|current| {
                if *current == ready {
                    false
                } else {
                    *current = ready;
                    true
                }
            });
        }
    }
}

/// The registry; cheap to clone, all clones share state.
#[derive(Clone)]
pub struct Registry {
    state: Arc<Mutex<State>>,
    versions: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("version", &self.version())
            .finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

/// The shortest and longest lease a remote instance may ask for.
const LEASE_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));

fn check_label(what: &'static str, value: &str) -> Result<(), RegistryError> {
    if mortar_sdk::config::is_dns_label(value) {
        Ok(())
    } else {
        Err(RegistryError::InvalidName {
            what,
            value: value.to_owned(),
        })
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry {
            state: Arc::new(Mutex::new(State::default())),
            versions: Arc::new(watch::channel(0).0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every update is a single insert or remove), so the data is usable.
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Adds or replaces an instance. With a `lease`, the instance is removed
    /// unless a heartbeat renews it in time; without one (instances the
    /// node's own supervisor runs) it stays until deregistered.
    pub fn register(
        &self,
        instance: Instance,
        lease: Option<Duration>,
    ) -> Result<(), RegistryError> {
        check_label("service name", &instance.service)?;
        check_label("instance id", &instance.id)?;
        if let Some(ttl) = lease
            && !(LEASE_RANGE.0..=LEASE_RANGE.1).contains(&ttl)
        {
            return Err(RegistryError::InvalidLease(ttl));
        }
        let service = instance.service.clone();
        let mut state = self.lock();
        let previous = state.entries.insert(
            instance.id.clone(),
            Entry {
                instance,
                ttl: lease,
                expires: lease.map(|ttl| Instant::now() + ttl),
            },
        );
        if let Some(previous) = previous
            && previous.instance.service != service
        {
            state.changed(&previous.instance.service, &self.versions);
        }
        state.changed(&service, &self.versions);
        Ok(())
    }

    /// Renews an instance's lease.
    pub fn heartbeat(&self, id: &str) -> Result<(), RegistryError> {
        let mut state = self.lock();
        let entry = state
            .entries
            .get_mut(id)
            .ok_or_else(|| RegistryError::UnknownInstance(id.to_owned()))?;
        entry.expires = entry.ttl.map(|ttl| Instant::now() + ttl);
        Ok(())
    }

    /// Marks an instance ready or not; only ready instances are served.
    pub fn set_ready(&self, id: &str, ready: bool) -> Result<(), RegistryError> {
        let mut state = self.lock();
        let entry = state
            .entries
            .get_mut(id)
            .ok_or_else(|| RegistryError::UnknownInstance(id.to_owned()))?;
        if entry.instance.ready == ready {
            return Ok(());
        }
        entry.instance.ready = ready;
        let service = entry.instance.service.clone();
        state.changed(&service, &self.versions);
        Ok(())
    }

    /// Removes an instance; returns whether it was registered.
    pub fn deregister(&self, id: &str) -> bool {
        let mut state = self.lock();
        match state.entries.remove(id) {
            Some(entry) => {
                state.changed(&entry.instance.service, &self.versions);
                true
            }
            None => false,
        }
    }

    /// The ready instances of a service, ordered by id.
    pub fn ready_instances(&self, service: &str) -> Vec<Instance> {
        self.lock().ready_of(service)
    }

    /// One instance by id, ready or not.
    pub fn instance(&self, id: &str) -> Option<Instance> {
        self.lock().entries.get(id).map(|e| e.instance.clone())
    }

    /// Every registered instance, ready or not, ordered by id.
    pub fn all(&self) -> Vec<Instance> {
        self.lock()
            .entries
            .values()
            .map(|e| e.instance.clone())
            .collect()
    }

    /// Watches a service's ready instances: the receiver sees every change
    /// without polling.
    pub fn watch(&self, service: &str) -> watch::Receiver<Vec<Instance>> {
        let mut state = self.lock();
        let ready = state.ready_of(service);
        state
            .watchers
            .entry(service.to_owned())
            .or_insert_with(|| watch::channel(ready).0)
            .subscribe()
    }

    /// A counter that increases on every change, for blocking queries.
    pub fn version(&self) -> u64 {
        *self.versions.borrow()
    }

    /// Watches the change counter.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.versions.subscribe()
    }

    /// Removes instances whose lease ran out; returns their ids.
    pub fn expire(&self, now: Instant) -> Vec<String> {
        let mut state = self.lock();
        let expired: Vec<(String, String)> = state
            .entries
            .iter()
            .filter(|(_, e)| e.expires.is_some_and(|t| t <= now))
            .map(|(id, e)| (id.clone(), e.instance.service.clone()))
            .collect();
        for (id, service) in &expired {
            state.entries.remove(id);
            state.changed(service, &self.versions);
            tracing::warn!(instance_id = %id, managed_service = %service, "lease expired without heartbeat; instance removed");
        }
        expired.into_iter().map(|(id, _)| id).collect()
    }

    /// Runs [`Registry::expire`] every `period` until `shutdown`.
    pub fn spawn_reaper(
        &self,
        period: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let registry = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(period) => { registry.expire(Instant::now()); }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, service: &str, port: u16, ready: bool) -> Instance {
        Instance {
            id: id.into(),
            service: service.into(),
            version: "1".into(),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            labels: BTreeMap::new(),
            ready,
        }
    }

    #[test]
    fn only_ready_instances_are_served() {
        let r = Registry::new();
        r.register(inst("catalog-1", "catalog", 1, true), None)
            .unwrap();
        r.register(inst("catalog-2", "catalog", 2, false), None)
            .unwrap();
        r.register(inst("orders-1", "orders", 3, true), None)
            .unwrap();
        let ids: Vec<String> = r
            .ready_instances("catalog")
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(ids, ["catalog-1"]);
        r.set_ready("catalog-2", true).unwrap();
        assert_eq!(r.ready_instances("catalog").len(), 2);
        assert!(r.deregister("catalog-1"));
        assert!(!r.deregister("catalog-1"));
        assert_eq!(r.ready_instances("catalog")[0].id, "catalog-2");
    }

    #[tokio::test]
    async fn watchers_see_changes_without_polling() {
        let r = Registry::new();
        let mut w = r.watch("catalog");
        assert!(w.borrow().is_empty());
        r.register(inst("catalog-1", "catalog", 1, true), None)
            .unwrap();
        w.changed().await.unwrap();
        assert_eq!(w.borrow_and_update().len(), 1);
        // A change to another service does not wake this watcher.
        r.register(inst("orders-1", "orders", 3, true), None)
            .unwrap();
        assert!(!w.has_changed().unwrap());
        r.set_ready("catalog-1", false).unwrap();
        w.changed().await.unwrap();
        assert!(w.borrow_and_update().is_empty());
    }

    #[test]
    fn leases_expire_unless_renewed() {
        let r = Registry::new();
        r.register(inst("x-1", "x", 1, true), Some(Duration::from_secs(5)))
            .unwrap();
        r.register(inst("x-2", "x", 2, true), None).unwrap();
        let later = Instant::now() + Duration::from_secs(6);
        assert_eq!(r.expire(later), ["x-1"]);
        assert_eq!(
            r.ready_instances("x").len(),
            1,
            "an instance without lease stays"
        );
        assert_eq!(
            r.heartbeat("x-1"),
            Err(RegistryError::UnknownInstance("x-1".into()))
        );
        r.register(inst("x-3", "x", 3, true), Some(Duration::from_secs(5)))
            .unwrap();
        r.heartbeat("x-3").unwrap();
        assert!(r.expire(Instant::now()).is_empty());
    }

    #[test]
    fn bad_names_and_leases_are_refused_and_change_nothing() {
        let r = Registry::new();
        assert!(matches!(
            r.register(inst("Bad_Id", "x", 1, true), None),
            Err(RegistryError::InvalidName { .. })
        ));
        assert!(matches!(
            r.register(inst("x-1", "x", 1, true), Some(Duration::from_millis(10))),
            Err(RegistryError::InvalidLease(_))
        ));
        assert!(r.all().is_empty());
        assert_eq!(r.version(), 0);
    }
}
