//! `mortar deploy`: moving a service to another revision while it serves.
//!
//! One deploy per service runs at a time, holding the service's lifecycle
//! lock (the autoscaler and `mortar stop` wait for it). Each strategy lives
//! in its own file and undoes its own work when it fails:
//!
//! - [`rolling`]: a few instances at a time (`max_surge`, `max_unavailable`),
//!   each new one ready for `min_ready` before an old one is drained;
//! - [`recreate`]: the gateway holds the service's requests while every old
//!   instance is drained and the new ones start;
//! - [`blue_green`]: the new version at full size beside the old, a share
//!   of the gateway's traffic, a verdict from [`analysis`], then promotion
//!   or rollback (or an operator's `promote`/`abort` with `manual`).
//!
//! Every step is recorded in the deploy's status (what `mortar deploy`
//! shows live) and, when it ends, in the history file `deploys.jsonl`.

pub mod analysis;
mod blue_green;
mod history;
mod recreate;
mod rolling;
mod wait;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mortar_manifest::Strategy;
use mortar_release::{Ledger, Release};
use mortar_resilience::RequestStats;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use utoipa::ToSchema;

pub use analysis::VersionReport;
pub use history::{HistoryError, read_history};

use crate::events::DeployEvent;
use crate::revision::{BOOT_VERSION, Revision, RevisionError};
use crate::supervisor::{Supervisor, UnknownService};

/// What a deploy asks of the gateway; the node implements it over its own.
pub trait Traffic: Send + Sync {
    /// Splits `service`'s traffic between versions by weight; an empty list
    /// ends the split.
    fn set_split(&self, service: &str, weights: Vec<(String, u32)>);
    /// Holds `service`'s requests (bounded queue, bounded time).
    fn hold(&self, service: &str, timeout: Duration, queue: u32);
    /// Lets held requests go on.
    fn release(&self, service: &str);
    /// Cumulative statistics of `service`'s split requests to `version`.
    fn stats(&self, service: &str, version: &str) -> RequestStats;
}

/// Which revision to deploy.
#[derive(Debug, Clone)]
pub enum Target {
    /// A recorded release.
    Release(Box<Release>),
    /// The revision the node started with (the manifest as on disk then).
    Boot,
}

/// A deploy request.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// What to run.
    pub target: Target,
    /// The strategy; the manifest's `deploy.strategy` when `None`.
    pub strategy: Option<Strategy>,
    /// Blue-green: wait for an operator; the manifest's `deploy.manual`
    /// when `None`.
    pub manual: Option<bool>,
}

/// Where a deploy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeployState {
    /// Steps are being taken.
    Running,
    /// Blue-green with `manual`: the new version takes its share of traffic
    /// and waits for `mortar deploy promote|abort`.
    AwaitingPromotion,
    /// The new revision runs everywhere.
    Succeeded,
    /// The old revision runs everywhere again; `reason` says why.
    RolledBack,
}

impl DeployState {
    /// Whether the deploy is over.
    pub fn is_finished(self) -> bool {
        matches!(self, DeployState::Succeeded | DeployState::RolledBack)
    }
}

/// One thing a deploy did, for the live view and the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Step {
    /// Milliseconds since the deploy started.
    pub elapsed_ms: u64,
    /// What happened.
    pub message: String,
}

/// A deploy as the admin API and the history show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeployStatus {
    /// Sequence number, unique in the data directory.
    pub id: u64,
    /// The service deployed.
    pub service: String,
    /// `rolling`, `recreate` or `blue-green`.
    pub strategy: String,
    /// The version it replaces.
    pub from: String,
    /// The version it deploys.
    pub to: String,
    /// Where it is.
    pub state: DeployState,
    /// Why it rolled back, when it did.
    pub reason: Option<String>,
    /// When it started and ended (RFC 3339).
    pub started_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// Instances the service runs outside the deploy.
    pub desired: u32,
    /// Instances of the new version that are ready.
    pub new_ready: u32,
    /// Instances of the old version still running.
    pub old_running: u32,
    /// Blue-green: the latest numbers of both versions.
    pub analysis: Option<Vec<VersionReport>>,
    /// Every step so far.
    pub steps: Vec<Step>,
}

/// An operator's decision on a manual blue-green deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// None yet.
    Pending,
    /// Promote the new version.
    Promote,
    /// Roll back to the old version.
    Abort,
}

/// A running or finished deploy.
#[derive(Debug)]
pub struct Deployment {
    status: Mutex<DeployStatus>,
    control: watch::Sender<Control>,
    started: Instant,
}

impl Deployment {
    /// Its status now.
    pub fn status(&self) -> DeployStatus {
        lock(&self.status).clone()
    }

    pub(crate) fn step(&self, message: impl Into<String>) {
        let message = message.into();
        let mut status = lock(&self.status);
        tracing::info!(managed_service = %status.service, deploy = status.id, "{message}");
        status.steps.push(Step {
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            message,
        });
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut DeployStatus)) {
        f(&mut lock(&self.status));
    }

    pub(crate) fn control(&self) -> watch::Receiver<Control> {
        self.control.subscribe()
    }
}

/// Why a deploy cannot start, or an operator's command is refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// No such service.
    #[error(transparent)]
    UnknownService(#[from] UnknownService),
    /// Another deploy of the service is running.
    #[error(
        "a deploy of {service} is already running (#{id}); wait for it or run `mortar deploy abort {service}`"
    )]
    InProgress {
        /// The service.
        service: String,
        /// The running deploy.
        id: u64,
    },
    /// The service already runs that version.
    #[error("{service} already runs {version}; nothing to deploy")]
    AlreadyRunning {
        /// The service.
        service: String,
        /// Its version.
        version: String,
    },
    /// The service is stopped.
    #[error("{0} is stopped; start it with `mortar start {0}` before deploying")]
    Stopped(String),
    /// The release cannot be run.
    #[error(transparent)]
    Revision(#[from] RevisionError),
    /// The program of the revision is missing.
    #[error("cannot deploy {service}: program {program} does not exist")]
    MissingProgram {
        /// The service.
        service: String,
        /// The program.
        program: String,
    },
    /// `promote`/`abort` without a deploy waiting for it.
    #[error(
        "{service} has no deploy awaiting promotion; `mortar deploy {service} --strategy blue-green --manual` starts one"
    )]
    NotAwaiting {
        /// The service.
        service: String,
    },
    /// `abort` of a deploy that is not running.
    #[error("{service} has no running deploy to abort")]
    NotRunning {
        /// The service.
        service: String,
    },
    /// Nothing earlier to roll back to.
    #[error(
        "{service} runs {version}, which no successful deploy put there; nothing to roll back to (see `mortar history {service}`)"
    )]
    NothingToRollBack {
        /// The service.
        service: String,
        /// What it runs.
        version: String,
    },
    /// The history file cannot be read.
    #[error(transparent)]
    History(#[from] HistoryError),
}

impl Supervisor {
    /// Starts a deploy of `service` and returns at once with its first
    /// status; follow it with [`Supervisor::deploy_status`].
    pub fn deploy(
        self: &Arc<Self>,
        service: &str,
        request: DeployRequest,
        traffic: Arc<dyn Traffic>,
    ) -> Result<DeployStatus, DeployError> {
        let index = self
            .index_of(service)
            .ok_or_else(|| self.unknown_service(service))?;
        let runtime = self.runtime(index);
        let revision = match &request.target {
            Target::Boot => runtime.boot.clone(),
            Target::Release(release) => Arc::new(Revision::from_release(
                &Ledger::open(&self.data_dir),
                release,
                &runtime.spec,
                &runtime.base_env,
            )?),
        };
        if revision.program.as_os_str().to_string_lossy().contains('/')
            && !revision.program.is_file()
        {
            return Err(DeployError::MissingProgram {
                service: service.to_owned(),
                program: revision.program.display().to_string(),
            });
        }
        if self.is_stopped(index) {
            return Err(DeployError::Stopped(service.to_owned()));
        }
        let current = lock(&runtime.current).clone();
        if current.version == revision.version {
            return Err(DeployError::AlreadyRunning {
                service: service.to_owned(),
                version: current.version.clone(),
            });
        }
        let spec = &runtime.spec.deploy;
        let strategy = request.strategy.unwrap_or(spec.strategy);
        let manual = request.manual.unwrap_or(spec.manual);
        let deployment = {
            let mut deploys = lock(&self.deploys);
            if let Some(running) = deploys.get(service)
                && !running.status().state.is_finished()
            {
                return Err(DeployError::InProgress {
                    service: service.to_owned(),
                    id: running.status().id,
                });
            }
            let last_in_history = read_history(&self.data_dir, None)?
                .last()
                .map_or(0, |d| d.id);
            let last_here = deploys.values().map(|d| d.status().id).max().unwrap_or(0);
            let deployment = Arc::new(Deployment {
                status: Mutex::new(DeployStatus {
                    id: last_in_history.max(last_here) + 1,
                    service: service.to_owned(),
                    strategy: strategy.to_string(),
                    from: current.version.clone(),
                    to: revision.version.clone(),
                    state: DeployState::Running,
                    reason: None,
                    started_at: mortar_sdk::logging::now_rfc3339(),
                    finished_at: None,
                    desired: runtime.desired.load(std::sync::atomic::Ordering::SeqCst),
                    new_ready: 0,
                    old_running: 0,
                    analysis: None,
                    steps: Vec::new(),
                }),
                control: watch::channel(Control::Pending).0,
                started: Instant::now(),
            });
            deploys.insert(service.to_owned(), deployment.clone());
            deployment
        };
        deployment.step(format!(
            "deploying {service} {} -> {} ({strategy}{})",
            current.version,
            revision.version,
            if manual && strategy == Strategy::BlueGreen {
                ", manual promotion"
            } else {
                ""
            }
        ));
        self.events()
            .deploy(service, &strategy.to_string(), DeployEvent::Started);
        let supervisor = self.clone();
        let first = deployment.status();
        tokio::spawn(async move {
            supervisor
                .run_deploy(index, deployment, revision, strategy, manual, traffic)
                .await;
        });
        Ok(first)
    }

    async fn run_deploy(
        &self,
        index: usize,
        deployment: Arc<Deployment>,
        revision: Arc<Revision>,
        strategy: Strategy,
        manual: bool,
        traffic: Arc<dyn Traffic>,
    ) {
        let runtime = self.runtime(index);
        let _lifecycle = runtime.lifecycle.lock().await;
        let old = lock(&runtime.current).clone();
        let run = Run {
            supervisor: self,
            index,
            deployment: &deployment,
            old: &old,
            new: &revision,
            traffic: traffic.as_ref(),
        };
        let outcome = if self.is_stopped(index) {
            Err(format!(
                "{} was stopped before the deploy could start",
                runtime.spec.name
            ))
        } else {
            match strategy {
                Strategy::Rolling => rolling::run(&run).await,
                Strategy::Recreate => recreate::run(&run).await,
                Strategy::BlueGreen => blue_green::run(&run, manual).await,
            }
        };
        match &outcome {
            Ok(()) => {
                *lock(&runtime.current) = revision.clone();
                deployment.step(format!(
                    "{} now runs {}",
                    runtime.spec.name, revision.version
                ));
            }
            Err(reason) => deployment.step(format!("rolled back to {}: {reason}", old.version)),
        }
        // Counted before the state says finished, so whoever sees the
        // deploy end also sees it counted.
        let event = if outcome.is_ok() {
            DeployEvent::Succeeded
        } else {
            DeployEvent::RolledBack
        };
        self.events()
            .deploy(&runtime.spec.name, &strategy.to_string(), event);
        deployment.update(|s| {
            s.state = match outcome {
                Ok(()) => DeployState::Succeeded,
                Err(ref reason) => {
                    s.reason = Some(reason.clone());
                    DeployState::RolledBack
                }
            };
            s.finished_at = Some(mortar_sdk::logging::now_rfc3339());
        });
        run.refresh_counts();
        if let Err(e) = history::append(&self.data_dir, &deployment.status()) {
            tracing::error!(error = %e, "could not record the deploy in the history");
        }
    }

    /// The latest deploy of `service`, running or finished, since the node
    /// started.
    pub fn deploy_status(&self, service: &str) -> Result<Option<DeployStatus>, UnknownService> {
        self.index_of(service)
            .ok_or_else(|| self.unknown_service(service))?;
        Ok(lock(&self.deploys).get(service).map(|d| d.status()))
    }

    /// Promotes (`promote = true`) or aborts a blue-green deploy awaiting
    /// promotion; `abort` also stops any running deploy of the service.
    pub fn decide(&self, service: &str, promote: bool) -> Result<DeployStatus, DeployError> {
        self.index_of(service)
            .ok_or_else(|| self.unknown_service(service))?;
        let deploys = lock(&self.deploys);
        let deployment = deploys
            .get(service)
            .filter(|d| !d.status().state.is_finished());
        let Some(deployment) = deployment else {
            return Err(if promote {
                DeployError::NotAwaiting {
                    service: service.to_owned(),
                }
            } else {
                DeployError::NotRunning {
                    service: service.to_owned(),
                }
            });
        };
        if promote && deployment.status().state != DeployState::AwaitingPromotion {
            return Err(DeployError::NotAwaiting {
                service: service.to_owned(),
            });
        }
        deployment.step(if promote {
            "promotion requested by an operator"
        } else {
            "abort requested by an operator"
        });
        deployment.control.send_replace(if promote {
            Control::Promote
        } else {
            Control::Abort
        });
        Ok(deployment.status())
    }

    /// What `mortar rollback` deploys: the version the current one replaced
    /// in the latest successful deploy that put it there.
    pub fn rollback_target(&self, service: &str) -> Result<String, DeployError> {
        let index = self
            .index_of(service)
            .ok_or_else(|| self.unknown_service(service))?;
        let current = lock(&self.runtime(index).current).version.clone();
        let history = read_history(&self.data_dir, Some(service))?;
        history
            .iter()
            .rev()
            .find(|d| d.state == DeployState::Succeeded && d.to == current)
            .map(|d| d.from.clone())
            .ok_or(DeployError::NothingToRollBack {
                service: service.to_owned(),
                version: current,
            })
    }

    /// Every finished deploy of `service`, oldest first.
    pub fn history(&self, service: &str) -> Result<Vec<DeployStatus>, DeployError> {
        self.index_of(service)
            .ok_or_else(|| self.unknown_service(service))?;
        Ok(read_history(&self.data_dir, Some(service))?)
    }

    /// The version each service runs now (manifest order).
    pub fn versions(&self) -> Vec<(String, String)> {
        self.manifest()
            .services
            .iter()
            .filter_map(|s| {
                let index = self.index_of(&s.name)?;
                Some((
                    s.name.clone(),
                    lock(&self.runtime(index).current).version.clone(),
                ))
            })
            .collect()
    }
}

/// What a strategy works with.
pub(crate) struct Run<'a> {
    pub(crate) supervisor: &'a Supervisor,
    pub(crate) index: usize,
    pub(crate) deployment: &'a Deployment,
    pub(crate) old: &'a Arc<Revision>,
    pub(crate) new: &'a Arc<Revision>,
    pub(crate) traffic: &'a dyn Traffic,
}

impl Run<'_> {
    pub(crate) fn service(&self) -> &str {
        &self.new.spec.name
    }

    pub(crate) fn spec(&self) -> &mortar_manifest::DeploySpec {
        &self.new.spec.deploy
    }

    pub(crate) fn desired(&self) -> u32 {
        self.supervisor
            .runtime(self.index)
            .desired
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The instances of the new and of the old revision (those not being
    /// stopped), and refreshes the counts in the status.
    pub(crate) fn instances(&self) -> (Vec<crate::InstanceStatus>, Vec<crate::InstanceStatus>) {
        let mut new = Vec::new();
        let mut old = Vec::new();
        for (revision, status) in self.supervisor.instances(self.index) {
            if revision.version == self.new.version {
                new.push(status);
            } else if status.state != crate::InstanceState::Stopping {
                old.push(status);
            }
        }
        let new_ready = new
            .iter()
            .filter(|s| s.state == crate::InstanceState::Ready)
            .count() as u32;
        let old_running = old.len() as u32;
        let desired = self.desired();
        self.deployment.update(|s| {
            s.new_ready = new_ready;
            s.old_running = old_running;
            s.desired = desired;
        });
        (new, old)
    }

    pub(crate) fn refresh_counts(&self) {
        let _ = self.instances();
    }

    /// Starts one instance of the new revision.
    pub(crate) fn start_new(&self) -> Result<String, String> {
        self.start(self.new)
    }

    /// Starts one instance of the old revision (undoing).
    pub(crate) fn start_old(&self) -> Result<String, String> {
        self.start(self.old)
    }

    fn start(&self, revision: &Arc<Revision>) -> Result<String, String> {
        let id = self
            .supervisor
            .start_instance(self.index, revision)
            .ok_or_else(|| format!("no free instance slot for {}", self.service()))?;
        self.deployment
            .step(format!("started {id} ({})", revision.version));
        Ok(id)
    }

    /// Drains and stops instance `id`.
    pub(crate) async fn stop(&self, id: &str) {
        self.deployment.step(format!("draining {id}"));
        self.supervisor
            .stop_instance(self.index, id, self.spec().drain_delay)
            .await;
        self.deployment.step(format!("stopped {id}"));
    }

    /// Drains and stops every instance in `ids` at once.
    pub(crate) async fn stop_all(&self, ids: &[String]) {
        futures::future::join_all(ids.iter().map(|id| self.stop(id))).await;
    }

    /// The ids of the running instances of the new (`true`) or old revision.
    pub(crate) fn ids(&self, new: bool) -> Vec<String> {
        let (n, o) = self.instances();
        (if new { n } else { o })
            .into_iter()
            .map(|s| s.id)
            .collect()
    }

    /// Undo: stop every new instance, bring the old revision back to the
    /// desired count and wait for it to be ready.
    pub(crate) async fn restore_old(&self) {
        let new = self.ids(true);
        self.stop_all(&new).await;
        let missing = (self.desired() as usize).saturating_sub(self.ids(false).len());
        let mut started = Vec::new();
        for _ in 0..missing {
            match self.start_old() {
                Ok(id) => started.push(id),
                Err(e) => self.deployment.step(e),
            }
        }
        if !started.is_empty() {
            let deadline = Instant::now() + self.old.spec.startup_timeout;
            if let Err(e) = wait::ready(self, &started, Duration::ZERO, deadline).await {
                self.deployment
                    .step(format!("the old version did not come back fully: {e}"));
            }
        }
    }
}

/// The release a finished deploy left `boot`'s service running, if any: a
/// node restart keeps running what was deployed, not what is on disk. A
/// release that cannot be run any more (its stored files changed) is
/// logged and the boot revision runs instead.
pub(crate) fn deployed_revision(
    data_dir: &std::path::Path,
    boot: &Arc<Revision>,
    base_env: &std::collections::BTreeMap<String, String>,
) -> Option<Arc<Revision>> {
    let service = &boot.spec.name;
    let history = match read_history(data_dir, Some(service)) {
        Ok(history) => history,
        Err(e) => {
            tracing::error!(managed_service = %service, error = %e, "cannot read the deploy history; starting from the manifest");
            return None;
        }
    };
    let last = history
        .iter()
        .rev()
        .find(|d| d.state == DeployState::Succeeded)?;
    if last.to == BOOT_VERSION {
        return None;
    }
    let ledger = Ledger::open(data_dir);
    let revision = ledger
        .get(&last.to)
        .map_err(RevisionError::from)
        .and_then(|release| Revision::from_release(&ledger, &release, &boot.spec, base_env));
    match revision {
        Ok(revision) => {
            tracing::info!(
                managed_service = %service,
                version = %revision.version,
                deploy = last.id,
                "runs the release its last deploy put there; `mortar deploy {service}` deploys what is on disk"
            );
            Some(Arc::new(revision))
        }
        Err(e) => {
            tracing::error!(managed_service = %service, release = %last.to, error = %e, "cannot run the deployed release; starting from the manifest");
            None
        }
    }
}

/// The version label of `target`, as instances register it.
pub fn target_version(target: &Target) -> &str {
    match target {
        Target::Boot => BOOT_VERSION,
        Target::Release(r) => &r.id,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
