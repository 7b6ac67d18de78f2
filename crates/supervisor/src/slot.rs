//! One instance slot: launches its process, waits for readiness, watches
//! health, restarts after a crash with exponential backoff, and stops it
//! with SIGTERM then SIGKILL.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mortar_discovery::{Instance, Registry};
use mortar_secrets::Secrets;
use nix::sys::signal::Signal;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::instance::{LaunchSpec, Process, describe_exit};
use crate::logs::LogHub;
use crate::probe::Prober;
use crate::revision::Revision;
use crate::status::{InstanceState, InstanceStatus};
use crate::supervisor::Endpoint;

/// How often a running instance's health is checked.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// Consecutive failed liveness probes after which an instance is restarted.
const LIVENESS_FAILURES: u32 = 3;
/// Extra time after the grace period before SIGKILL, so an instance that
/// honours its grace period exits on its own.
const KILL_MARGIN: Duration = Duration::from_millis(500);
/// The exit code of a configuration error: restarting will not fix it.
const EXIT_CONFIG: i32 = 78;

/// Everything one slot needs; owned by its task.
pub(crate) struct Slot {
    /// What it runs: program, arguments, settings and version.
    pub(crate) revision: Arc<Revision>,
    pub(crate) id: String,
    pub(crate) cwd: PathBuf,
    pub(crate) env: BTreeMap<String, String>,
    /// The service's secrets: environment variables kept apart from `env`
    /// so that only the spawn sees their values (they print redacted).
    pub(crate) secrets: Arc<Secrets>,
    pub(crate) hub: LogHub,
    pub(crate) status: Arc<Mutex<InstanceStatus>>,
    pub(crate) endpoint: watch::Receiver<Option<Endpoint>>,
    pub(crate) stop: CancellationToken,
    pub(crate) prober: Prober,
    pub(crate) registry: Option<Registry>,
    /// The node's CA, when instances get certificates.
    pub(crate) tls: Option<crate::NodeTls>,
    /// Issues this instance's token for the node's APIs at each launch.
    pub(crate) credentials: Option<Arc<mortar_tls::Credentials>>,
    /// Renews the running process's certificate; stops with it.
    pub(crate) renewal: Option<tokio::task::AbortHandle>,
}

/// Why a running process stopped being watched.
enum Outcome {
    /// The supervisor asked it to stop.
    Stop,
    /// The process exited (or could not be waited for).
    Exited(String, Option<i32>),
    /// It never became ready in time, or stopped answering liveness probes.
    Unhealthy(String),
}

impl Slot {
    fn spec(&self) -> &mortar_manifest::ServiceSpec {
        &self.revision.spec
    }

    fn set(&self, f: impl FnOnce(&mut InstanceStatus)) {
        if let Ok(mut status) = self.status.lock() {
            f(&mut status);
        }
    }

    fn state(&self) -> Option<InstanceState> {
        self.status.lock().ok().map(|s| s.state)
    }

    /// Runs the slot until it is stopped or gives up.
    pub(crate) async fn run(mut self) {
        let policy = self.spec().restart.clone();
        let mut rapid_crashes: u32 = 0;
        loop {
            if self.stop.is_cancelled() {
                self.set(|s| s.state = InstanceState::Stopped);
                return;
            }
            let started = Instant::now();
            let outcome = match self.launch() {
                Ok(process) => {
                    let outcome = self.supervise(process, started).await;
                    self.deregister();
                    if let Some(renewal) = self.renewal.take() {
                        renewal.abort();
                    }
                    outcome
                }
                Err(e) => Outcome::Exited(format!("could not start: {e}"), None),
            };
            let (reason, code) = match outcome {
                Outcome::Stop => {
                    self.set(|s| {
                        s.state = InstanceState::Stopped;
                        s.pid = None;
                    });
                    return;
                }
                Outcome::Exited(reason, code) => (reason, code),
                Outcome::Unhealthy(reason) => (reason, None),
            };
            let ran = started.elapsed();
            self.set(|s| {
                s.pid = None;
                s.port = None;
                s.last_exit = Some(reason.clone());
            });
            if code == Some(EXIT_CONFIG) {
                self.set(|s| s.state = InstanceState::Failed);
                tracing::error!(
                    exit = %reason,
                    "instance exited with a configuration error; not restarting it: fix the configuration (its log names the variable) and run `mortar up` again"
                );
                return;
            }
            rapid_crashes = if ran < policy.rapid_crash_window {
                rapid_crashes + 1
            } else {
                1
            };
            if ran < policy.rapid_crash_window && rapid_crashes >= policy.max_rapid_crashes {
                self.set(|s| s.state = InstanceState::Failed);
                tracing::error!(
                    exit = %reason,
                    crashes = rapid_crashes,
                    window = %humantime::format_duration(policy.rapid_crash_window),
                    "instance keeps crashing right after start; giving up and marking the service failed"
                );
                return;
            }
            let delay = policy.backoff(rapid_crashes);
            self.set(|s| {
                s.state = InstanceState::Backoff;
                s.restarts += 1;
            });
            tracing::warn!(
                exit = %reason,
                ran_ms = ran.as_millis() as u64, restart_in_ms = delay.as_millis() as u64,
                consecutive_crashes = rapid_crashes,
                "instance exited unexpectedly; restarting after backoff"
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.cancelled() => {
                    self.set(|s| s.state = InstanceState::Stopped);
                    return;
                }
            }
        }
    }

    fn launch(&mut self) -> std::io::Result<Process> {
        self.endpoint.mark_unchanged();
        let mut env = std::borrow::Cow::Borrowed(&self.env);
        if let Some(credentials) = &self.credentials {
            let token = credentials
                .issue(&self.id)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let env = env.to_mut();
            env.insert(mortar_tls::NODE_TOKEN_ENV.into(), token.clone());
            env.insert("MORTAR_BUS_TOKEN".into(), token);
        }
        if let Some(tls) = &self.tls {
            // A fresh certificate at every launch, in a directory only this
            // instance (and the node) can read, renewed while it runs.
            let dir = tls.dir.join(&self.id);
            let files = tls
                .ca
                .write_instance(&self.spec().name, &dir, tls.lifetime)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            env.to_mut().extend(files.env());
            let renewal = tokio::spawn(mortar_tls::renew_forever(
                tls.ca.clone(),
                self.spec().name.clone(),
                dir,
                tls.lifetime,
            ));
            if let Some(old) = self.renewal.replace(renewal.abort_handle()) {
                old.abort();
            }
        }
        let spec = LaunchSpec {
            program: &self.revision.program,
            args: &self.revision.args,
            cwd: &self.cwd,
            env: &env,
            secrets: &self.secrets,
            service: &self.revision.spec.name,
            instance: &self.id,
        };
        let process = Process::spawn(&spec, &self.hub)?;
        let pid = process.pid;
        let tls = self.tls.is_some();
        self.set(|s| {
            s.state = InstanceState::Starting;
            s.tls = tls;
            s.pid = Some(pid);
            s.port = None;
            s.address = None;
            s.started_at = Some(mortar_sdk::logging::now_rfc3339());
        });
        tracing::info!(pid, "instance launched");
        Ok(process)
    }

    /// Watches one process from launch to exit or stop.
    async fn supervise(&mut self, mut process: Process, started: Instant) -> Outcome {
        let spec = self.revision.spec.clone();
        let deadline = tokio::time::sleep(spec.startup_timeout);
        tokio::pin!(deadline);
        let pid = process.pid;
        let ready = tokio::select! {
            exit = process.wait() => return exited(exit),
            _ = self.stop.cancelled() => return self.terminate(process).await,
            _ = &mut deadline => false,
            ready = wait_ready(&mut self.endpoint, &self.prober, &spec.name, &spec.health.ready, pid) => ready,
        };
        if !ready {
            let why = format!(
                "not ready within the startup timeout of {}",
                humantime::format_duration(spec.startup_timeout)
            );
            tracing::error!("{why}; killing it");
            process.signal(Signal::SIGKILL);
            let _ = process.wait().await;
            return Outcome::Unhealthy(why);
        }
        let base = self.base_url();
        self.set(|s| s.state = InstanceState::Ready);
        tracing::info!(
            pid = process.pid,
            url = base.as_deref().unwrap_or(""),
            startup_ms = started.elapsed().as_secs_f64() * 1000.0,
            "instance ready"
        );
        let Some(base) = base else {
            return self.terminate(process).await;
        };
        self.register();
        let mut live_failures = 0;
        loop {
            tokio::select! {
                exit = process.wait() => return exited(exit),
                _ = self.stop.cancelled() => return self.terminate(process).await,
                _ = tokio::time::sleep(HEALTH_INTERVAL) => {}
            }
            if self.prober.ok(&spec.name, &base, &spec.health.live).await {
                live_failures = 0;
            } else {
                live_failures += 1;
                if live_failures >= LIVENESS_FAILURES {
                    let why = format!("{live_failures} liveness probes failed in a row");
                    tracing::error!("{why}; killing it");
                    process.signal(Signal::SIGKILL);
                    let _ = process.wait().await;
                    return Outcome::Unhealthy(why);
                }
            }
            let is_ready = self.prober.ok(&spec.name, &base, &spec.health.ready).await;
            let was = self.state();
            let now = if is_ready {
                InstanceState::Ready
            } else {
                InstanceState::NotReady
            };
            if was != Some(now) && was != Some(InstanceState::Stopping) {
                self.set(|s| s.state = now);
                if let Some(registry) = &self.registry {
                    let _ = registry.set_ready(&self.id, is_ready);
                }
                tracing::warn!(state = ?now, "instance readiness changed");
            }
        }
    }

    /// Registers the ready instance for discovery (no lease: the supervisor
    /// deregisters it itself when it stops or dies).
    fn register(&self) {
        let Some(registry) = &self.registry else {
            return;
        };
        let Some((address, port)) = self
            .status
            .lock()
            .ok()
            .and_then(|s| Some((s.address.clone()?, s.port?)))
        else {
            return;
        };
        let ip = match address.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
            Ok(ip) => ip,
            Err(_) => return,
        };
        let instance = Instance {
            id: self.id.clone(),
            service: self.spec().name.clone(),
            version: self.revision.version.clone(),
            address: std::net::SocketAddr::new(ip, port),
            labels: Default::default(),
            ready: true,
        };
        if let Err(e) = registry.register(instance, None) {
            tracing::error!(error = %e, "could not register the instance for discovery");
        }
    }

    fn deregister(&self) {
        if let Some(registry) = &self.registry {
            registry.deregister(&self.id);
        }
    }

    fn base_url(&self) -> Option<String> {
        self.status.lock().ok().and_then(|s| s.url())
    }

    /// SIGTERM, then SIGKILL if the grace period runs out.
    async fn terminate(&self, mut process: Process) -> Outcome {
        // Out of discovery first, so no new traffic is sent its way while
        // it drains.
        self.deregister();
        self.set(|s| s.state = InstanceState::Stopping);
        let grace = self.spec().grace_period;
        process.signal(Signal::SIGTERM);
        match tokio::time::timeout(grace + KILL_MARGIN, process.wait()).await {
            Ok(exit) => {
                let how = exit
                    .map(|s| describe_exit(&s))
                    .unwrap_or_else(|e| e.to_string());
                tracing::info!(exit = %how, "instance stopped");
                self.set(|s| s.last_exit = Some(how));
            }
            Err(_) => {
                tracing::warn!(

                    grace = %humantime::format_duration(grace),
                    "instance did not exit within its grace period; sending SIGKILL"
                );
                process.signal(Signal::SIGKILL);
                let _ = process.wait().await;
                self.set(|s| s.last_exit = Some("killed after grace period".into()));
            }
        }
        Outcome::Stop
    }
}

fn exited(exit: std::io::Result<std::process::ExitStatus>) -> Outcome {
    match exit {
        Ok(status) => Outcome::Exited(describe_exit(&status), status.code()),
        Err(e) => Outcome::Exited(format!("could not wait for the process: {e}"), None),
    }
}

/// Waits for the instance to report its endpoint, then polls readiness,
/// quickly at first so a fast service is seen ready within milliseconds.
async fn wait_ready(
    endpoint: &mut watch::Receiver<Option<Endpoint>>,
    prober: &Prober,
    service: &str,
    ready_path: &str,
    pid: u32,
) -> bool {
    let base = loop {
        let current = endpoint.borrow_and_update().clone();
        if let Some(ep) = current.filter(|ep| ep.pid == pid) {
            break ep.base_url();
        }
        if endpoint.changed().await.is_err() {
            return false;
        }
    };
    let mut delay = Duration::from_millis(2);
    loop {
        if prober.ok(service, &base, ready_path).await {
            return true;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}
