//! Turns a resolver watch into the list of instances the balancer picks
//! from, and takes ejected outliers out of it for a while.
//!
//! One task per (service, version) owns the membership: it diffs every new
//! endpoint list against what the balancer has, handles ejection and
//! readmission events sent by endpoints, and publishes the instances in
//! rotation after every change.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::balance::{self, Members};
use crate::endpoint::{EndpointService, Tracker};
use crate::metrics::{Metrics, inc};
use crate::pool::Pool;
use crate::{Endpoint, OutlierConfig, backoff};

/// Most idle connections kept to one instance.
const MAX_IDLE_PER_INSTANCE: usize = 1024;

/// Messages to the membership task.
#[derive(Debug)]
pub(crate) enum Event {
    /// An instance reached its failure streak.
    Eject(Arc<str>),
    /// An ejection ran out (instance id, membership generation).
    Readmit(Arc<str>, u64),
}

/// What the task needs to build endpoints.
pub(crate) struct Setup {
    pub(crate) service: String,
    pub(crate) version: Option<String>,
    /// How long an idle upstream connection is kept.
    pub(crate) pool_idle_timeout: std::time::Duration,
    /// Plain TCP or TLS to the instances.
    pub(crate) connector: crate::Connector,
    pub(crate) outlier: OutlierConfig,
    /// Latency assumed for an instance before it has been measured.
    pub(crate) default_rtt: std::time::Duration,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) cancel: CancellationToken,
}

struct Member {
    endpoint: Endpoint,
    /// Kept across ejection and readmission, so connections survive.
    pool: Arc<Pool>,
    tracker: Arc<Tracker>,
    generation: u64,
    /// In rotation (with its load) unless ejected.
    balanced: Option<Arc<balance::Member>>,
}

impl Member {
    fn ejected(&self) -> bool {
        self.balanced.is_none()
    }
}

struct Task {
    setup: Setup,
    members: HashMap<Arc<str>, Member>,
    rotation: Arc<Members>,
    events_tx: mpsc::UnboundedSender<Event>,
    live: Arc<AtomicUsize>,
    generation: u64,
}

/// Starts the membership task, which keeps `rotation` up to date; returns
/// the number of instances currently in rotation.
pub(crate) fn spawn(
    setup: Setup,
    rotation: Arc<Members>,
    mut endpoints: watch::Receiver<Vec<Endpoint>>,
) -> Arc<AtomicUsize> {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let live = Arc::new(AtomicUsize::new(0));
    let mut task = Task {
        setup,
        members: HashMap::new(),
        rotation,
        events_tx,
        live: live.clone(),
        generation: 0,
    };
    let first = endpoints.borrow_and_update().clone();
    task.update(first);
    tokio::spawn(async move {
        let cancel = task.setup.cancel.clone();
        let mut watching = true;
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                changed = endpoints.changed(), if watching => {
                    if changed.is_err() {
                        watching = false;
                        continue;
                    }
                    let list = endpoints.borrow_and_update().clone();
                    task.update(list);
                }
                Some(event) = events.recv() => task.handle(event),
            }
        }
    });
    live
}

impl Task {
    fn endpoint_service(&self, id: &Arc<str>, member: &Member) -> EndpointService {
        EndpointService::new(
            member.pool.clone(),
            id.clone(),
            member.endpoint.address,
            member.tracker.clone(),
            self.events_tx.clone(),
            self.setup.outlier.consecutive_failures,
        )
    }

    fn balanced(&self, id: &Arc<str>, member: &Member) -> Arc<balance::Member> {
        Arc::new(balance::Member::new(
            self.endpoint_service(id, member),
            self.setup.default_rtt,
        ))
    }

    /// Hands the balancer the instances now in rotation.
    fn publish(&self) {
        let rotation: Vec<_> = self
            .members
            .values()
            .filter_map(|m| m.balanced.clone())
            .collect();
        self.live.store(rotation.len(), Ordering::Relaxed);
        self.rotation.publish(rotation);
    }

    fn update(&mut self, list: Vec<Endpoint>) {
        let wanted: HashMap<Arc<str>, Endpoint> = list
            .into_iter()
            .filter(|e| self.setup.version.as_ref().is_none_or(|v| *v == e.version))
            .map(|e| (Arc::from(e.id.as_str()), e))
            .collect();
        let gone: Vec<Arc<str>> = self
            .members
            .iter()
            .filter(|(id, m)| {
                wanted
                    .get(*id)
                    .is_none_or(|e| e.address != m.endpoint.address)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut changed = false;
        for id in gone {
            if self.members.remove(&id).is_some() {
                changed = true;
                tracing::debug!(service = %self.setup.service, instance = %id, reason = "left registry", "instance removed");
            }
        }
        for (id, endpoint) in wanted {
            if self.members.contains_key(&id) {
                continue;
            }
            self.generation += 1;
            let mut member = Member {
                pool: Pool::with_connector(
                    endpoint.address,
                    self.setup.connector.clone(),
                    &self.setup.service,
                    self.setup.pool_idle_timeout,
                    MAX_IDLE_PER_INSTANCE,
                ),
                endpoint,
                tracker: Arc::default(),
                generation: self.generation,
                balanced: None,
            };
            member.balanced = Some(self.balanced(&id, &member));
            tracing::debug!(service = %self.setup.service, instance = %id, address = %member.endpoint.address, "instance added");
            self.members.insert(id, member);
            changed = true;
        }
        if changed {
            self.publish();
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Eject(id) => self.eject(id),
            Event::Readmit(id, generation) => {
                let Some(member) = self.members.get_mut(&id) else {
                    return;
                };
                if member.generation != generation || !member.ejected() {
                    return;
                }
                member.tracker.consecutive.store(0, Ordering::Relaxed);
                let balanced = self.balanced(&id, &self.members[&id]);
                if let Some(member) = self.members.get_mut(&id) {
                    member.balanced = Some(balanced);
                }
                inc(&self.setup.metrics.readmissions);
                tracing::info!(service = %self.setup.service, instance = %id, reason = "ejection elapsed", "instance readmitted");
                self.publish();
            }
        }
    }

    fn eject(&mut self, id: Arc<str>) {
        let total = self.members.len();
        let ejected = self.members.values().filter(|m| m.ejected()).count();
        let cfg = &self.setup.outlier;
        let allowed =
            (ejected + 1) as f64 <= cfg.max_ejected_ratio * total as f64 && total > ejected + 1;
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        if member.ejected() {
            return;
        }
        if !allowed {
            member.tracker.consecutive.store(0, Ordering::Relaxed);
            tracing::warn!(service = %self.setup.service, instance = %id, reason = "consecutive failures", "not ejecting: too many instances already out");
            return;
        }
        let n = member.tracker.ejections.fetch_add(1, Ordering::Relaxed);
        let duration = backoff::ceiling(cfg.base_ejection, cfg.max_ejection, n);
        member.balanced = None;
        let generation = member.generation;
        inc(&self.setup.metrics.ejections);
        tracing::warn!(service = %self.setup.service, instance = %id, reason = "consecutive failures", ejected_for_ms = duration.as_millis() as u64, "instance ejected");
        self.publish();
        let events = self.events_tx.clone();
        let cancel = self.setup.cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = tokio::time::sleep(duration) => {
                    let _ = events.send(Event::Readmit(id, generation));
                }
            }
        });
    }
}
