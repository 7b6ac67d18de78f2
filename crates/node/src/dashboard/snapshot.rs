//! The dashboard's document: everything the web page and `mortar top`
//! show, assembled once a second from the node's own state (supervisor,
//! deploys, autoscaler, the gateway's and the bus's counters, the log
//! stream). A typed struct, so the page, the terminal view and the tests
//! read the same fields.

use mortar_manifest::AutoscaleSpec;
use mortar_supervisor::autoscale::Decision;
use mortar_supervisor::deploy::{DeployState, DeployStatus};
use mortar_supervisor::{InstanceState, ServiceState, ServiceStatus};
use serde::{Deserialize, Serialize};

use super::errors::ErrorLine;
use super::history::{History, QueueSeries, TrafficSeries};

/// What the dashboard shows at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The application's name.
    pub app: String,
    /// When it was assembled (RFC 3339).
    pub at: String,
    /// Counts up by one per snapshot, so a client sees it is live.
    pub seq: u64,
    /// Every service in manifest order.
    pub services: Vec<ServiceView>,
    /// Request rate and p99 latency per service, as the gateway saw them.
    pub traffic: Vec<TrafficSeries>,
    /// Backlog, lag and rates per topic and consumer group.
    pub queues: Vec<QueueSeries>,
    /// The latest deploy of each service deployed since the node started.
    pub deploys: Vec<DeployView>,
    /// Each autoscaled service and the autoscaler's latest decision.
    pub autoscaling: Vec<AutoscaleView>,
    /// The latest warn/error log lines, newest first.
    pub errors: Vec<ErrorLine>,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    /// Its name.
    pub name: String,
    /// Derived from its instances.
    pub state: ServiceState,
    /// Instances it should run.
    pub desired: u32,
    /// Instances answering their readiness check.
    pub ready: u32,
    /// Restarts of all its instances.
    pub restarts: u32,
    /// The versions its live instances run (`boot` or a release id).
    pub versions: Vec<String>,
    /// Requests per second through the gateway, lately (0 when not routed).
    pub rps: f64,
    /// p99 latency through the gateway, lately, in milliseconds.
    pub p99_ms: Option<f64>,
    /// Its instances, stopped ones left out.
    pub instances: Vec<InstanceView>,
}

/// One instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    /// Its id, e.g. `catalog-1`.
    pub id: String,
    /// Its life-cycle state; `ready` means healthy.
    pub state: InstanceState,
    /// The version it runs.
    pub version: Option<String>,
    /// Its process id.
    pub pid: Option<u32>,
    /// Restarts after unexpected exits.
    pub restarts: u32,
    /// When the current process started.
    pub started_at: Option<String>,
    /// How the previous process ended.
    pub last_exit: Option<String>,
}

/// A deploy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployView {
    /// Its sequence number.
    pub id: u64,
    /// The service.
    pub service: String,
    /// `rolling`, `recreate` or `blue-green`.
    pub strategy: String,
    /// The version replaced.
    pub from: String,
    /// The version deployed.
    pub to: String,
    /// Where it is.
    pub state: DeployState,
    /// Whether it is still going (running or awaiting promotion).
    pub in_progress: bool,
    /// Why it rolled back.
    pub reason: Option<String>,
    /// When it started.
    pub started_at: String,
    /// Instances of the new version ready.
    pub new_ready: u32,
    /// Instances of the old version still running.
    pub old_running: u32,
    /// Instances the service runs outside the deploy.
    pub desired: u32,
    /// The latest step taken.
    pub last_step: Option<String>,
}

/// An autoscaled service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoscaleView {
    /// The service.
    pub service: String,
    /// The topic whose backlog it scales on.
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// Bounds of its instance count.
    pub min: u32,
    /// Upper bound.
    pub max: u32,
    /// The backlog one instance should carry.
    pub target_backlog: u32,
    /// The backlog last read (`None` before the first decision).
    pub backlog: Option<u64>,
    /// Instances it runs (the autoscaler's count).
    pub current: u32,
    /// What the backlog asks for now.
    pub desired: Option<u32>,
    /// Instances ready now.
    pub ready: u32,
    /// `scale_up`, `scale_down` or `hold` (the latest decision).
    pub action: Option<String>,
    /// Whether instances are being added or removed: the ready count
    /// differs from the count decided, or the backlog asks for another.
    pub in_progress: bool,
}

/// The node's state the snapshot is assembled from.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The application's name.
    pub app: String,
    /// Now, RFC 3339.
    pub at: String,
    /// The snapshot's sequence number.
    pub seq: u64,
    /// Every service's status, manifest order.
    pub services: Vec<ServiceStatus>,
    /// The latest deploy per service (since the node started).
    pub deploys: Vec<DeployStatus>,
    /// Each autoscaled service's rule, manifest order.
    pub autoscale_specs: Vec<(String, AutoscaleSpec)>,
    /// The autoscaler's latest decision per service.
    pub decisions: Vec<(String, Decision)>,
    /// Recent warn/error lines, newest first.
    pub errors: Vec<ErrorLine>,
}

/// Assembles the snapshot from the node's state and the counter history.
pub fn assemble(inputs: Inputs, history: &History) -> Snapshot {
    let traffic = history.traffic();
    let services = inputs
        .services
        .iter()
        .map(|s| {
            let seen = traffic.iter().find(|t| t.service == s.name);
            let live: Vec<&mortar_supervisor::InstanceStatus> = s
                .instances
                .iter()
                .filter(|i| i.state != InstanceState::Stopped)
                .collect();
            let mut versions: Vec<String> = live.iter().filter_map(|i| i.version.clone()).collect();
            versions.sort();
            versions.dedup();
            ServiceView {
                name: s.name.clone(),
                state: s.state,
                desired: s.desired,
                ready: s.ready,
                restarts: s.instances.iter().map(|i| i.restarts).sum(),
                versions,
                rps: seen.map_or(0.0, |t| t.rps),
                p99_ms: seen.and_then(|t| t.p99_ms),
                instances: live
                    .into_iter()
                    .map(|i| InstanceView {
                        id: i.id.clone(),
                        state: i.state,
                        version: i.version.clone(),
                        pid: i.pid,
                        restarts: i.restarts,
                        started_at: i.started_at.clone(),
                        last_exit: i.last_exit.clone(),
                    })
                    .collect(),
            }
        })
        .collect();
    let deploys = inputs
        .deploys
        .into_iter()
        .map(|d| DeployView {
            in_progress: !d.state.is_finished(),
            last_step: d.steps.last().map(|s| s.message.clone()),
            id: d.id,
            service: d.service,
            strategy: d.strategy,
            from: d.from,
            to: d.to,
            state: d.state,
            reason: d.reason,
            started_at: d.started_at,
            new_ready: d.new_ready,
            old_running: d.old_running,
            desired: d.desired,
        })
        .collect();
    let autoscaling = inputs
        .autoscale_specs
        .iter()
        .map(|(service, spec)| {
            let decision = inputs
                .decisions
                .iter()
                .find(|(s, _)| s == service)
                .map(|(_, d)| d);
            let status = inputs.services.iter().find(|s| &s.name == service);
            let current =
                decision.map_or_else(|| status.map_or(spec.min, |s| s.desired), |d| d.decided);
            let ready = status.map_or(0, |s| s.ready);
            AutoscaleView {
                service: service.clone(),
                topic: spec.topic.clone(),
                group: spec.group.clone(),
                min: spec.min,
                max: spec.max,
                target_backlog: spec.target_backlog,
                backlog: decision.map(|d| d.backlog),
                current,
                desired: decision.map(|d| d.desired),
                ready,
                action: decision.map(|d| d.action().to_owned()),
                in_progress: ready != current || decision.is_some_and(|d| d.desired != d.decided),
            }
        })
        .collect();
    Snapshot {
        app: inputs.app,
        at: inputs.at,
        seq: inputs.seq,
        services,
        queues: history.queues(),
        traffic,
        deploys,
        autoscaling,
        errors: inputs.errors,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mortar_bus::{GroupStats, TopicStats};
    use mortar_resilience::UpstreamSnapshot;
    use mortar_supervisor::InstanceStatus;
    use mortar_supervisor::deploy::Step;

    use super::super::history::Sample;
    use super::*;

    fn instance(service: &str, n: u32, state: InstanceState, version: &str) -> InstanceStatus {
        InstanceStatus {
            state,
            pid: Some(1000 + n),
            restarts: n - 1,
            version: Some(version.into()),
            ..InstanceStatus::new(service, &format!("{service}-{n}"))
        }
    }

    fn history() -> History {
        let mut h = History::default();
        let group = |backlog, delivered| GroupStats {
            group: "workers".into(),
            backlog,
            lag: backlog,
            in_flight: 0,
            dead_lettered: 1,
            redelivered: 0,
            delivered,
        };
        let topic = |next, g| TopicStats {
            topic: "jobs".into(),
            first_offset: 0,
            next_offset: next,
            bytes: 10,
            groups: vec![g],
            commits: Default::default(),
        };
        let catalog = |calls: u64| UpstreamSnapshot {
            calls,
            failures: 0,
            latency_sum_us: 0,
            cumulative: vec![calls; 14],
        };
        h.push(Sample {
            at_ms: 10_000,
            upstreams: vec![("catalog".into(), catalog(10))],
            topics: vec![topic(5, group(0, 5))],
        });
        h.push(Sample {
            at_ms: 11_000,
            upstreams: vec![("catalog".into(), catalog(60))],
            topics: vec![topic(45, group(40, 5))],
        });
        h
    }

    fn inputs() -> Inputs {
        Inputs {
            app: "shop".into(),
            at: "2026-11-28T22:00:00Z".into(),
            seq: 7,
            services: vec![
                ServiceStatus::from_instances(
                    "catalog",
                    2,
                    vec![
                        instance("catalog", 1, InstanceState::Ready, "boot"),
                        instance("catalog", 2, InstanceState::Ready, "0042"),
                        instance("catalog", 3, InstanceState::Stopped, "boot"),
                    ],
                ),
                ServiceStatus::from_instances(
                    "worker",
                    2,
                    vec![
                        instance("worker", 1, InstanceState::Ready, "boot"),
                        instance("worker", 2, InstanceState::Starting, "boot"),
                    ],
                ),
            ],
            deploys: vec![DeployStatus {
                id: 3,
                service: "catalog".into(),
                strategy: "rolling".into(),
                from: "boot".into(),
                to: "0042".into(),
                state: DeployState::Running,
                reason: None,
                started_at: "2026-11-28T21:59:00Z".into(),
                finished_at: None,
                desired: 2,
                new_ready: 1,
                old_running: 1,
                analysis: None,
                steps: vec![Step {
                    elapsed_ms: 5,
                    message: "catalog-2 ready on 0042".into(),
                }],
            }],
            autoscale_specs: vec![(
                "worker".into(),
                AutoscaleSpec {
                    min: 1,
                    max: 4,
                    topic: "jobs".into(),
                    group: "workers".into(),
                    target_backlog: 20,
                    scale_down_window: Duration::from_secs(30),
                },
            )],
            decisions: vec![(
                "worker".into(),
                Decision {
                    backlog: 40,
                    target_backlog: 20,
                    current: 1,
                    desired: 2,
                    decided: 2,
                    window_ms: 30_000,
                },
            )],
            errors: vec![ErrorLine {
                ts: "t".into(),
                level: "error".into(),
                service: "catalog".into(),
                instance: Some("catalog-1".into()),
                msg: "boom".into(),
                trace_id: Some("4bf9".into()),
            }],
        }
    }

    #[test]
    fn snapshot_joins_status_traffic_queues_deploys_and_autoscaling() {
        let snap = assemble(inputs(), &history());
        assert_eq!((snap.app.as_str(), snap.seq), ("shop", 7));
        let names: Vec<&str> = snap.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["catalog", "worker"]);

        let catalog = &snap.services[0];
        assert_eq!(catalog.state, ServiceState::Degraded);
        assert_eq!((catalog.desired, catalog.ready), (2, 2));
        // The stopped slot is left out; its restarts still count.
        assert_eq!(catalog.instances.len(), 2);
        assert_eq!(catalog.restarts, 1 + 2);
        assert_eq!(catalog.versions, ["0042", "boot"]);
        assert!((catalog.rps - 50.0).abs() < 1e-9, "{}", catalog.rps);
        assert!(catalog.p99_ms.is_some());
        let worker = &snap.services[1];
        assert_eq!(worker.rps, 0.0);
        assert_eq!(worker.p99_ms, None);

        assert_eq!(snap.queues.len(), 1);
        assert_eq!(snap.queues[0].backlog, 40);
        assert_eq!(snap.queues[0].dead_lettered, 1);
        assert!((snap.queues[0].published_per_s - 40.0).abs() < 1e-9);

        let deploy = &snap.deploys[0];
        assert!(deploy.in_progress);
        assert_eq!(deploy.last_step.as_deref(), Some("catalog-2 ready on 0042"));

        let scaling = &snap.autoscaling[0];
        assert_eq!(scaling.service, "worker");
        assert_eq!(scaling.backlog, Some(40));
        assert_eq!((scaling.current, scaling.ready), (2, 1));
        assert_eq!(scaling.action.as_deref(), Some("scale_up"));
        assert!(scaling.in_progress);

        assert_eq!(snap.errors[0].trace_id.as_deref(), Some("4bf9"));
        // The document round-trips: `mortar top` reads what the page reads.
        let json = serde_json::to_string(&snap).unwrap();
        assert_eq!(serde_json::from_str::<Snapshot>(&json).unwrap(), snap);
    }

    #[test]
    fn an_autoscaled_service_without_a_decision_yet_shows_its_rule() {
        let mut i = inputs();
        i.decisions.clear();
        let snap = assemble(i, &History::default());
        let scaling = &snap.autoscaling[0];
        assert_eq!(scaling.backlog, None);
        assert_eq!(scaling.current, 2);
        assert_eq!(scaling.action, None);
        assert!(snap.traffic.is_empty() && snap.queues.is_empty());
    }
}
