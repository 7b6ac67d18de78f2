//! Orchestrates all slots: start in dependency order, stop in reverse.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mortar_discovery::Registry;
use mortar_manifest::{Manifest, ServiceSpec};
use mortar_secrets::Secrets;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use utoipa::ToSchema;

use crate::autoscale::Decision;
use crate::logs::LogHub;
use crate::probe::Prober;
use crate::revision::Revision;
use crate::slot::Slot;
use crate::status::{InstanceState, InstanceStatus, ServiceState, ServiceStatus};

/// Settings of the node that the supervisor passes on to instances.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// The admin API's URL, where instances report their port.
    pub node_url: String,
    /// The node's data directory; each service gets a store under it.
    pub data_dir: PathBuf,
    /// The log filter passed to instances, when the node has one.
    pub log_level: Option<String>,
    /// Where ready instances are registered for discovery, if anywhere.
    pub registry: Option<Registry>,
    /// Extra variables every instance gets (the node's DNS address, …).
    pub extra_env: BTreeMap<String, String>,
    /// Each service's secrets, by service name: exactly those its manifest
    /// entry names, given to its instances as environment variables and
    /// to nothing else (not logged, not in status).
    pub secrets: BTreeMap<String, Secrets>,
    /// The node's CA and certificate lifetime: each instance then gets its
    /// own short-lived certificate at launch, renewed while it runs, and
    /// probes speak mTLS. `None`: plain HTTP (tests of the supervisor alone).
    pub tls: Option<NodeTls>,
    /// The node's API credentials: each launch of an instance gets a fresh
    /// token (`MORTAR_NODE_TOKEN`, also `MORTAR_BUS_TOKEN`), revoking the
    /// previous one. `None`: the node's APIs are open (tests).
    pub credentials: Option<Arc<mortar_tls::Credentials>>,
    /// A PostgreSQL database (`postgres://…`, without `schema`) in which
    /// every service gets its own schema, named after it (`-` → `_`), as
    /// `MORTAR_STORE_URL`. `None`: a SQLite file in the service's data
    /// directory.
    pub store_url: Option<String>,
}

/// `MORTAR_STORE_URL` of `service`: its own schema of the shared
/// PostgreSQL database, or its SQLite file in `store_dir`.
fn store_url(postgres: Option<&str>, service: &str, store_dir: &Path) -> String {
    match postgres {
        Some(base) => {
            let separator = if base.contains('?') { '&' } else { '?' };
            format!("{base}{separator}schema={}", service.replace('-', "_"))
        }
        None => format!("sqlite://{}", store_dir.join("store.db").display()),
    }
}

/// What the supervisor needs to give instances certificates.
#[derive(Debug, Clone)]
pub struct NodeTls {
    /// The node's CA.
    pub ca: Arc<mortar_tls::Ca>,
    /// How long an instance certificate lives; renewed at two thirds.
    pub lifetime: Duration,
    /// Where instances' certificate directories go (`<dir>/<instance>/`).
    pub dir: PathBuf,
    /// The node's own client identity, for health probes.
    pub caller: mortar_tls::Caller,
}

/// The address an instance reports after binding its port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Endpoint {
    /// The bound IP address.
    pub address: String,
    /// The bound port.
    pub port: u16,
    /// The reporting process's id, to tell a restarted instance from a stale report.
    pub pid: u32,
    /// The service name the instance believes it has (checked against the slot).
    #[serde(default)]
    pub service: Option<String>,
}

impl Endpoint {
    /// The base URL to reach the instance on.
    pub fn base_url(&self) -> String {
        let mut status = InstanceStatus::new("", "");
        status.address = Some(self.address.clone());
        status.port = Some(self.port);
        status.url().unwrap_or_default()
    }
}

/// Why an endpoint report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// No slot has that id.
    #[error("unknown instance {0:?}; see `mortar status` for the instances of this node")]
    UnknownInstance(String),
    /// The report came from a process the slot is not running (a stale report).
    #[error("instance {instance} is running pid {expected:?}, not pid {got}")]
    WrongProcess {
        /// The slot id.
        instance: String,
        /// The pid the slot runs.
        expected: Option<u32>,
        /// The pid in the report.
        got: u32,
    },
    /// The reporting process claims another service.
    #[error("instance {instance} belongs to service {expected}, not {got}")]
    WrongService {
        /// The slot id.
        instance: String,
        /// The slot's service.
        expected: String,
        /// The service in the report.
        got: String,
    },
}

/// A service name the manifest does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown service {name:?}; this node runs: {}", known.join(", "))]
pub struct UnknownService {
    /// The name asked for.
    pub name: String,
    /// The services the node runs.
    pub known: Vec<String>,
}

/// Why the services cannot be launched at all.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Programs named by `command` do not exist; nothing was started.
    #[error("{}", .0.join("\n"))]
    MissingPrograms(Vec<String>),
    /// The data directory cannot be prepared.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

struct SlotHandle {
    id: String,
    /// The revision the slot runs (or last ran).
    revision: Mutex<Option<Arc<Revision>>>,
    status: Arc<Mutex<InstanceStatus>>,
    endpoint: watch::Sender<Option<Endpoint>>,
    /// The slot's task while it runs, and the token that stops only this
    /// slot (a child of the service's), so scaling in stops one instance.
    task: Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
}

pub(crate) struct ServiceRuntime {
    pub(crate) spec: Arc<ServiceSpec>,
    /// What the node sets for the service; every revision's `env` goes
    /// over it.
    pub(crate) base_env: BTreeMap<String, String>,
    /// The revision new instances run; restarts keep their slot's own.
    pub(crate) current: Mutex<Arc<Revision>>,
    /// The revision the node started with, which a rollback can return to.
    pub(crate) boot: Arc<Revision>,
    secrets: Arc<Secrets>,
    outbox_dir: PathBuf,
    /// Every slot the service can have: twice its largest size (`instances`,
    /// or `autoscale.max`) plus the deploy's surge, so a blue-green deploy
    /// can run both versions at full size. A free slot is taken lowest
    /// first, so instance names and outbox files stay few.
    slots: Vec<SlotHandle>,
    /// How many instances run outside a deploy (changed by the autoscaler).
    pub(crate) desired: AtomicU32,
    /// Cancelled to stop the service's slots; replaced when it is started again.
    stop: Mutex<CancellationToken>,
    /// Serializes start, stop, scaling and deploys of the service.
    pub(crate) lifecycle: tokio::sync::Mutex<()>,
    /// The autoscaler's latest decision, for status and metrics.
    decision: Mutex<Option<Decision>>,
}

/// Runs every service of a manifest.
pub struct Supervisor {
    manifest: Arc<Manifest>,
    /// The node's data directory: releases and the deploy history live here.
    pub(crate) data_dir: PathBuf,
    /// The latest deploy of each service, running or finished.
    pub(crate) deploys: Mutex<HashMap<String, Arc<crate::deploy::Deployment>>>,
    hub: LogHub,
    prober: Prober,
    services: Vec<ServiceRuntime>,
    by_instance: HashMap<String, (usize, usize)>,
    registry: Option<Registry>,
    tls: Option<NodeTls>,
    credentials: Option<Arc<mortar_tls::Credentials>>,
    /// Deploy and scaling events since the node started.
    events: crate::events::EventCounts,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("app", &self.manifest.app.name)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// Prepares the slots. Fails, starting nothing, when a program is missing.
    pub fn new(
        manifest: Manifest,
        hub: LogHub,
        options: SupervisorOptions,
    ) -> Result<Self, LaunchError> {
        let missing: Vec<String> = manifest
            .services
            .iter()
            .filter_map(|s| {
                let program = manifest.resolve_program(s);
                let is_path = s.command.first().is_some_and(|c| c.contains('/'));
                (is_path && !program.is_file()).then(|| {
                    let hint = if s.build.is_some() {
                        "; run `mortar build` first"
                    } else {
                        ""
                    };
                    format!(
                        "{}: services.{}.command: program {} does not exist{hint}",
                        manifest.path.display(),
                        s.name,
                        program.display()
                    )
                })
            })
            .collect();
        if !missing.is_empty() {
            return Err(LaunchError::MissingPrograms(missing));
        }
        let mut base_env = inherited_env();
        // A secret reaches only the services that name it, even when the
        // node's own environment happens to hold a variable of that name.
        for secrets in options.secrets.values() {
            for name in secrets.names() {
                base_env.remove(name);
            }
        }
        let mut services = Vec::new();
        let mut by_instance = HashMap::new();
        for (si, spec) in manifest.services.iter().enumerate() {
            let store_dir = options.data_dir.join("services").join(&spec.name);
            std::fs::create_dir_all(&store_dir).map_err(|source| LaunchError::DataDir {
                path: store_dir.clone(),
                source,
            })?;
            let mut env = base_env.clone();
            env.insert("MORTAR_APP".into(), manifest.app.name.clone());
            env.insert("MORTAR_SERVICE".into(), spec.name.clone());
            env.insert("PORT".into(), "0".into());
            env.insert("MORTAR_EXIT_WITH_NODE".into(), "stdin".into());
            env.insert("MORTAR_NODE_URL".into(), options.node_url.clone());
            env.insert(
                "MORTAR_STORE_URL".into(),
                store_url(options.store_url.as_deref(), &spec.name, &store_dir),
            );
            env.insert(
                "MORTAR_SHUTDOWN_GRACE".into(),
                humantime::format_duration(spec.grace_period).to_string(),
            );
            env.extend(
                options
                    .extra_env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
            if let Some(level) = &options.log_level {
                env.insert("MORTAR_LOG_LEVEL".into(), level.clone());
            }
            let secrets = options.secrets.get(&spec.name).cloned().unwrap_or_default();
            if !secrets.is_empty() {
                // Names only, so the SDK can redact these variables' values
                // in its configuration errors.
                let names: Vec<&str> = secrets.names().collect();
                env.insert("MORTAR_SECRET_NAMES".into(), names.join(","));
            }
            if options.tls.is_some()
                && let Some(callers) = &spec.callers
            {
                env.insert(mortar_tls::CALLERS_ENV.into(), callers.join(","));
            }
            let largest = spec
                .autoscale
                .as_ref()
                .map_or(spec.instances, |a| a.max.max(spec.instances));
            let capacity = 2 * largest + spec.deploy.max_surge;
            let slots = (1..=capacity)
                .enumerate()
                .map(|(ii, n)| {
                    let id = format!("{}-{n}", spec.name);
                    by_instance.insert(id.clone(), (si, ii));
                    SlotHandle {
                        revision: Mutex::new(None),
                        status: Arc::new(Mutex::new(InstanceStatus::new(&spec.name, &id))),
                        endpoint: watch::channel(None).0,
                        task: Mutex::new(None),
                        id,
                    }
                })
                .collect();
            let outbox_dir = store_dir.join("outbox");
            std::fs::create_dir_all(&outbox_dir).map_err(|source| LaunchError::DataDir {
                path: outbox_dir.clone(),
                source,
            })?;
            let boot = Arc::new(Revision::boot(&manifest, spec, &env));
            let deployed = crate::deploy::deployed_revision(&options.data_dir, &boot, &env);
            services.push(ServiceRuntime {
                outbox_dir,
                spec: boot.spec.clone(),
                current: Mutex::new(deployed.unwrap_or_else(|| boot.clone())),
                boot,
                base_env: env,
                secrets: Arc::new(secrets),
                slots,
                desired: AtomicU32::new(spec.instances),
                stop: Mutex::new(CancellationToken::new()),
                lifecycle: tokio::sync::Mutex::new(()),
                decision: Mutex::new(None),
            });
        }
        let events = crate::events::EventCounts::preset(manifest.services.iter().map(|s| {
            (
                s.name.as_str(),
                s.deploy.strategy.to_string(),
                s.autoscale.is_some(),
            )
        }));
        Ok(Supervisor {
            data_dir: options.data_dir.clone(),
            deploys: Mutex::new(HashMap::new()),
            manifest: Arc::new(manifest),
            hub,
            prober: Prober::new(options.tls.as_ref().map(|t| t.caller.clone())),
            tls: options.tls,
            credentials: options.credentials,
            services,
            by_instance,
            registry: options.registry,
            events,
        })
    }

    /// The manifest being run.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Starts every service in dependency order. A service with dependents is
    /// waited for (up to its startup timeout) before they start. Returns once
    /// every service is ready, failed, or out of startup time.
    pub async fn start(&self) {
        let started = Instant::now();
        for spec in self.manifest.start_order() {
            let Some(index) = self.index_of(&spec.name) else {
                continue;
            };
            self.launch(index);
            let has_dependents = self
                .manifest
                .services
                .iter()
                .any(|s| s.depends_on.contains(&spec.name));
            if has_dependents {
                self.wait_settled(index).await;
            }
        }
        for index in 0..self.services.len() {
            self.wait_settled(index).await;
        }
        let summary: Vec<String> = self
            .status()
            .iter()
            .map(|s| format!("{} {}/{}", s.name, s.ready, s.desired))
            .collect();
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            ready = %summary.join(", "),
            "services started"
        );
    }

    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.services.iter().position(|s| s.spec.name == name)
    }

    /// Starts instances of the current revision until `desired` run.
    fn launch(&self, index: usize) {
        let service = &self.services[index];
        let desired = service.desired.load(Ordering::SeqCst) as usize;
        let running = service
            .slots
            .iter()
            .filter(|slot| lock(&slot.task).is_some())
            .count();
        let revision = lock(&service.current).clone();
        for _ in running..desired {
            if self.start_instance(index, &revision).is_none() {
                break;
            }
        }
    }

    /// Starts one instance of `revision` in the lowest free slot; its id, or
    /// `None` when every slot is taken.
    pub(crate) fn start_instance(&self, index: usize, revision: &Arc<Revision>) -> Option<String> {
        let service = &self.services[index];
        let stop = lock(&service.stop).clone();
        let handle = service
            .slots
            .iter()
            .find(|slot| lock(&slot.task).is_none())?;
        let mut task = lock(&handle.task);
        // A slot launched again starts with a fresh status, keeping its
        // restart count.
        {
            let mut status = lock(&handle.status);
            *status = InstanceStatus {
                restarts: status.restarts,
                last_exit: status.last_exit.take(),
                version: Some(revision.version.clone()),
                ..InstanceStatus::new(&service.spec.name, &handle.id)
            };
        }
        *lock(&handle.revision) = Some(revision.clone());
        let slot_stop = stop.child_token();
        let slot = Slot {
            revision: revision.clone(),
            id: handle.id.clone(),
            cwd: self.manifest.dir.clone(),
            env: {
                let mut env = revision.env.clone();
                env.insert("MORTAR_INSTANCE".into(), handle.id.clone());
                // One outbox per slot: a restarted instance finds and
                // relays what its predecessor buffered.
                let outbox = service.outbox_dir.join(format!("{}.outbox", handle.id));
                env.insert("MORTAR_BUS_OUTBOX".into(), outbox.display().to_string());
                env
            },
            secrets: service.secrets.clone(),
            hub: self.hub.clone(),
            status: handle.status.clone(),
            endpoint: handle.endpoint.subscribe(),
            stop: slot_stop.clone(),
            prober: self.prober.clone(),
            registry: self.registry.clone(),
            tls: self.tls.clone(),
            credentials: self.credentials.clone(),
            renewal: None,
        };
        // The node's log lines name the instance they are about in
        // these span fields; `service`/`instance` name the node itself.
        let span = tracing::info_span!(
            "slot",
            managed_service = %service.spec.name,
            managed_instance = %handle.id,
            version = %revision.version
        );
        *task = Some((slot_stop, tokio::spawn(slot.run().instrument(span))));
        Some(handle.id.clone())
    }

    /// Stops one instance the way a deploy does: out of discovery first,
    /// then `drain_delay` for callers' balancers to drop it, then SIGTERM
    /// (in-flight work finishes) and SIGKILL after the grace period. Waits
    /// until it has exited.
    pub(crate) async fn stop_instance(&self, index: usize, id: &str, drain_delay: Duration) {
        let service = &self.services[index];
        let Some(slot) = service.slots.iter().find(|s| s.id == id) else {
            return;
        };
        let Some(stop) = lock(&slot.task).as_ref().map(|(stop, _)| stop.clone()) else {
            return;
        };
        if let Some(registry) = &self.registry {
            registry.deregister(id);
        }
        lock(&slot.status).state = InstanceState::Stopping;
        tracing::info!(managed_service = %service.spec.name, managed_instance = %id, "draining instance");
        tokio::time::sleep(drain_delay).await;
        stop.cancel();
        let task = lock(&slot.task).take().map(|(_, task)| task);
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// The instances that run (or are stopping, or failed and not yet
    /// removed) with their revision and status.
    pub(crate) fn instances(&self, index: usize) -> Vec<(Arc<Revision>, InstanceStatus)> {
        self.services[index]
            .slots
            .iter()
            .filter(|slot| lock(&slot.task).is_some())
            .filter_map(|slot| {
                let revision = lock(&slot.revision).clone()?;
                Some((revision, lock(&slot.status).clone()))
            })
            .collect()
    }

    /// The runtime of service `index`.
    pub(crate) fn runtime(&self, index: usize) -> &ServiceRuntime {
        &self.services[index]
    }

    /// Waits until a service is running, failed, or past its startup timeout.
    async fn wait_settled(&self, index: usize) {
        let service = &self.services[index];
        let deadline = Instant::now() + service.spec.startup_timeout + Duration::from_millis(200);
        while Instant::now() < deadline {
            let status = self.service_status(service);
            if matches!(
                status.state,
                ServiceState::Running | ServiceState::Failed | ServiceState::Stopped
            ) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops every service in reverse dependency order; each instance gets
    /// SIGTERM, then SIGKILL after the service's grace period.
    pub async fn stop(&self) {
        let order: Vec<String> = self
            .manifest
            .start_order()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        for name in order.iter().rev() {
            if let Some(index) = self.index_of(name) {
                self.stop_index(index).await;
            }
        }
        tracing::info!("all services stopped");
    }

    async fn stop_index(&self, index: usize) {
        let service = &self.services[index];
        let _lifecycle = service.lifecycle.lock().await;
        tracing::info!(managed_service = %service.spec.name, "stopping service");
        lock(&service.stop).cancel();
        let tasks: Vec<JoinHandle<()>> = service
            .slots
            .iter()
            .filter_map(|slot| lock(&slot.task).take().map(|(_, task)| task))
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    /// How many instances `name` runs now, or `None` when it is stopped
    /// (by an operator) or unknown: the autoscaler leaves those alone.
    pub fn scale_target(&self, name: &str) -> Option<u32> {
        let service = &self.services[self.index_of(name)?];
        if lock(&service.stop).is_cancelled() {
            return None;
        }
        Some(service.desired.load(Ordering::SeqCst))
    }

    /// Runs `count` instances of `name` (clamped to its slots, at least 1):
    /// new instances are launched at once; surplus ones — the newest first —
    /// are stopped like any stop (out of discovery, SIGTERM, drained, SIGKILL
    /// after the grace period), and this waits until they have exited.
    /// Does nothing to a stopped service.
    pub async fn scale(&self, name: &str, count: u32) {
        let Some(index) = self.index_of(name) else {
            return;
        };
        let service = &self.services[index];
        let _lifecycle = service.lifecycle.lock().await;
        if lock(&service.stop).is_cancelled() {
            return;
        }
        let count = count.clamp(1, service.slots.len() as u32);
        let before = service.desired.swap(count, Ordering::SeqCst);
        if count > before {
            self.launch(index);
            return;
        }
        let running: Vec<&SlotHandle> = service
            .slots
            .iter()
            .filter(|slot| lock(&slot.task).is_some())
            .collect();
        let surplus: Vec<JoinHandle<()>> = running
            .into_iter()
            .skip(count as usize)
            .rev()
            .filter_map(|slot| {
                let (stop, task) = lock(&slot.task).take()?;
                tracing::info!(managed_service = %name, managed_instance = %slot.id, "scaling in: stopping instance");
                stop.cancel();
                Some(task)
            })
            .collect();
        for task in surplus {
            let _ = task.await;
        }
    }

    /// Records the autoscaler's latest decision for `name`.
    pub(crate) fn record_decision(&self, name: &str, decision: &Decision) {
        if let Some(index) = self.index_of(name) {
            *lock(&self.services[index].decision) = Some(decision.clone());
        }
    }

    /// The autoscaler's latest decision per autoscaled service (manifest
    /// order), for metrics: what runs and what the backlog asks for.
    pub fn autoscale_decisions(&self) -> Vec<(String, Decision)> {
        self.services
            .iter()
            .filter_map(|s| {
                let decision = lock(&s.decision).clone()?;
                Some((s.spec.name.clone(), decision))
            })
            .collect()
    }

    /// Deploys and scaling actions counted since the node started.
    pub fn events(&self) -> &crate::events::EventCounts {
        &self.events
    }

    /// Stops one service (all its instances, drained), leaving the others
    /// running; an operator's `mortar stop <service>`.
    pub async fn stop_service(&self, name: &str) -> Result<ServiceStatus, UnknownService> {
        let index = self
            .index_of(name)
            .ok_or_else(|| self.unknown_service(name))?;
        self.stop_index(index).await;
        Ok(self.service_status(&self.services[index]))
    }

    /// Starts a stopped service again and waits until it settles; a running
    /// service is left as it is.
    pub async fn start_service(&self, name: &str) -> Result<ServiceStatus, UnknownService> {
        let index = self
            .index_of(name)
            .ok_or_else(|| self.unknown_service(name))?;
        let service = &self.services[index];
        let lifecycle = service.lifecycle.lock().await;
        let running = service.slots.iter().any(|slot| lock(&slot.task).is_some());
        if !running {
            tracing::info!(managed_service = %name, "starting service");
            *lock(&service.stop) = CancellationToken::new();
            self.launch(index);
            drop(lifecycle);
            self.wait_settled(index).await;
        }
        Ok(self.service_status(service))
    }

    /// Whether an operator stopped service `index`.
    pub(crate) fn is_stopped(&self, index: usize) -> bool {
        lock(&self.services[index].stop).is_cancelled()
    }

    pub(crate) fn unknown_service(&self, name: &str) -> UnknownService {
        UnknownService {
            name: name.to_owned(),
            known: self.services.iter().map(|s| s.spec.name.clone()).collect(),
        }
    }

    /// Records the port an instance bound; readiness polling starts from it.
    pub fn report_endpoint(&self, instance: &str, endpoint: Endpoint) -> Result<(), EndpointError> {
        let &(si, ii) = self
            .by_instance
            .get(instance)
            .ok_or_else(|| EndpointError::UnknownInstance(instance.to_owned()))?;
        let service = &self.services[si];
        if let Some(claimed) = &endpoint.service
            && claimed != &service.spec.name
        {
            return Err(EndpointError::WrongService {
                instance: instance.to_owned(),
                expected: service.spec.name.clone(),
                got: claimed.clone(),
            });
        }
        let slot = &service.slots[ii];
        let mut status = match slot.status.lock() {
            Ok(status) => status,
            Err(poisoned) => poisoned.into_inner(),
        };
        if status.pid != Some(endpoint.pid) {
            return Err(EndpointError::WrongProcess {
                instance: instance.to_owned(),
                expected: status.pid,
                got: endpoint.pid,
            });
        }
        status.address = Some(endpoint.address.clone());
        status.port = Some(endpoint.port);
        drop(status);
        slot.endpoint.send_replace(Some(endpoint));
        Ok(())
    }

    fn service_status(&self, service: &ServiceRuntime) -> ServiceStatus {
        let desired = service.desired.load(Ordering::SeqCst);
        // The instances that run; for a stopped service, the first
        // `desired` slots, showing how they stopped.
        let any_running = service.slots.iter().any(|slot| lock(&slot.task).is_some());
        let instances = service
            .slots
            .iter()
            .enumerate()
            .filter(|(i, slot)| {
                lock(&slot.task).is_some() || (!any_running && *i < desired as usize)
            })
            .map(|(_, slot)| lock(&slot.status).clone())
            .collect();
        ServiceStatus::from_instances(&service.spec.name, desired, instances)
    }

    /// A snapshot of every service, in manifest order.
    pub fn status(&self) -> Vec<ServiceStatus> {
        self.services
            .iter()
            .map(|s| self.service_status(s))
            .collect()
    }

    /// One service's status, if the manifest has it.
    pub fn service(&self, name: &str) -> Option<ServiceStatus> {
        self.index_of(name)
            .map(|i| self.service_status(&self.services[i]))
    }

    /// Whether any instance is ready; used by the node's own readiness.
    pub fn all_ready(&self) -> bool {
        self.status()
            .iter()
            .all(|s| s.instances.iter().all(|i| i.state == InstanceState::Ready))
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it:
/// every critical section here leaves the data consistent.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The node's environment minus mortar's own variables, which each instance
/// gets set explicitly, so nothing of the node's leaks into an instance.
fn inherited_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| !k.starts_with("MORTAR_") && k != "PORT")
        .collect()
}

#[cfg(test)]
mod store_url_tests {
    use super::*;

    #[test]
    fn every_service_gets_its_own_schema_of_the_postgres_database() {
        let dir = Path::new("/data/services/order-history");
        assert_eq!(
            store_url(Some("postgres://u@db:5432/shop"), "order-history", dir),
            "postgres://u@db:5432/shop?schema=order_history"
        );
        assert_eq!(
            store_url(Some("postgres://u@db/shop?sslmode=disable"), "catalog", dir),
            "postgres://u@db/shop?sslmode=disable&schema=catalog"
        );
        assert_eq!(
            store_url(None, "order-history", dir),
            "sqlite:///data/services/order-history/store.db"
        );
    }
}
