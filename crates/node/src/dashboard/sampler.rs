//! Once a second: read the node's live components, add a sample to the
//! history and publish a new [`Snapshot`] to every dashboard client.
//! Clients share this one reading, however many there are.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mortar_bus_server::BusBackend;
use mortar_supervisor::Supervisor;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::errors::RecentErrors;
use super::history::{History, Sample};
use super::snapshot::{Inputs, Snapshot, assemble};

/// How often a snapshot is made.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// What the sampler reads.
#[derive(Clone)]
pub struct Sources {
    /// Services, instances, deploys, autoscaling.
    pub supervisor: Arc<Supervisor>,
    /// The gateway's per-upstream counters.
    pub gateway: mortar_resilience::Client,
    /// Topics and groups.
    pub bus: Arc<dyn BusBackend>,
    /// Recent warn/error lines.
    pub errors: RecentErrors,
}

/// Reads everything once into a sample and the inputs of a snapshot.
fn read(sources: &Sources, seq: u64) -> (Sample, Inputs) {
    let supervisor = &sources.supervisor;
    let manifest = supervisor.manifest();
    let at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let sample = Sample {
        at_ms,
        upstreams: sources.gateway.upstreams(),
        topics: sources.bus.last_stats(),
    };
    let inputs = Inputs {
        app: manifest.app.name.clone(),
        at: mortar_sdk::logging::now_rfc3339(),
        seq,
        services: supervisor.status(),
        deploys: manifest
            .services
            .iter()
            .filter_map(|s| supervisor.deploy_status(&s.name).ok().flatten())
            .collect(),
        autoscale_specs: manifest
            .services
            .iter()
            .filter_map(|s| Some((s.name.clone(), s.autoscale.clone()?)))
            .collect(),
        decisions: supervisor.autoscale_decisions(),
        errors: sources.errors.newest_first(),
    };
    (sample, inputs)
}

/// Starts sampling; the receiver always holds the latest snapshot.
pub fn start(sources: Sources, stop: CancellationToken) -> watch::Receiver<Arc<Snapshot>> {
    let mut history = History::default();
    let (sample, inputs) = read(&sources, 0);
    history.push(sample);
    let (tx, rx) = watch::channel(Arc::new(assemble(inputs, &history)));
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        let mut seq = 0;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = interval.tick() => {}
            }
            seq += 1;
            let (sample, inputs) = read(&sources, seq);
            history.push(sample);
            tx.send_replace(Arc::new(assemble(inputs, &history)));
        }
    });
    rx
}
