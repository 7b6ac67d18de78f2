//! Faults on a running node: on one instance, by signal (the node sees
//! what it would see if the process crashed or hung); faults the node
//! injects itself through its admin API (a bus outage, latency on a
//! service's responses); and a rolling deploy. Each returns how long until
//! things were whole again.

use std::path::Path;
use std::time::{Duration, Instant};

use mortar_node::client::{AdminClient, ClientError};
use mortar_node::faults::FaultRequest;
use mortar_supervisor::{InstanceState, ServiceStatus};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// What to do to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL: a crash; the node restarts it after its backoff.
    Kill,
    /// SIGSTOP for this long, then SIGCONT: a hang (GC pause, swapped out).
    Pause(Duration),
}

/// Why a fault could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// The node did not answer.
    #[error(transparent)]
    Node(#[from] ClientError),
    /// No such service or instance, or it has no process now.
    #[error("{0}")]
    NotFound(String),
    /// The signal could not be sent.
    #[error("cannot signal pid {pid} of {instance}: {source}")]
    Signal {
        /// The instance.
        instance: String,
        /// Its process.
        pid: u32,
        /// Why.
        source: nix::Error,
    },
    /// A deploy step's release could not be recorded.
    #[error("cannot prepare the deploy of {service}: {reason}")]
    Release {
        /// The service.
        service: String,
        /// Why.
        reason: String,
    },
    /// A deploy did not succeed.
    #[error("the deploy of {service} rolled back: {reason}")]
    Deploy {
        /// The service.
        service: String,
        /// Why, as the node reported it.
        reason: String,
    },
    /// The service did not come back.
    #[error("{service} was not fully ready again within {}s", .after.as_secs())]
    NoRecovery {
        /// The service.
        service: String,
        /// How long was waited.
        after: Duration,
    },
}

/// The instance `target` names: an instance id (`catalog-2`), or a service
/// name for its first running instance. Returns (service, instance, pid).
pub async fn find(admin: &AdminClient, target: &str) -> Result<(String, String, u32), FaultError> {
    let status = admin.status().await?;
    let mut known = Vec::new();
    for service in &status.services {
        for i in &service.instances {
            known.push(i.id.clone());
            if (i.id == target || service.name == target)
                && let Some(pid) = i.pid
            {
                return Ok((service.name.clone(), i.id.clone(), pid));
            }
        }
    }
    Err(FaultError::NotFound(format!(
        "no running instance {target:?}; running: {}",
        known.join(", ")
    )))
}

/// Injects `fault` into `instance` (process `pid`); a pause returns once
/// the process was continued.
pub async fn inject(instance: &str, pid: u32, fault: Fault) -> Result<(), FaultError> {
    let signal = |sig: Signal| {
        kill(Pid::from_raw(pid as i32), sig).map_err(|source| FaultError::Signal {
            instance: instance.to_owned(),
            pid,
            source,
        })
    };
    match fault {
        Fault::Kill => signal(Signal::SIGKILL),
        Fault::Pause(how_long) => {
            signal(Signal::SIGSTOP)?;
            tokio::time::sleep(how_long).await;
            signal(Signal::SIGCONT)
        }
    }
}

fn fully_ready(service: &ServiceStatus) -> bool {
    service.ready == service.desired
        && service
            .instances
            .iter()
            .all(|i| i.state == InstanceState::Ready)
}

/// Waits until `service` has every instance ready again and none of them
/// is still the killed process `dead`; the time from `since`.
pub async fn recovery(
    admin: &AdminClient,
    service: &str,
    dead: Option<u32>,
    since: Instant,
    timeout: Duration,
) -> Result<Duration, FaultError> {
    loop {
        if let Ok(status) = admin.status().await
            && status.services.iter().any(|s| {
                s.name == service
                    && fully_ready(s)
                    && s.instances.iter().all(|i| dead.is_none() || i.pid != dead)
            })
        {
            return Ok(since.elapsed());
        }
        if since.elapsed() > timeout {
            return Err(FaultError::NoRecovery {
                service: service.to_owned(),
                after: timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The release a deploy of `service` goes to: a release of what is on disk
/// (recorded in `data_dir` now), or `boot` when the service already runs
/// that release — so every run deploys a different version than the
/// running one.
pub fn deploy_target(
    status: &mortar_node::admin::StatusDoc,
    service: &str,
    data_dir: &Path,
) -> Result<String, FaultError> {
    let fail = |reason: String| FaultError::Release {
        service: service.to_owned(),
        reason,
    };
    let running = status
        .services
        .iter()
        .find(|s| s.name == service)
        .ok_or_else(|| FaultError::NotFound(format!("the node runs no service {service:?}")))?;
    let manifest = mortar_manifest::Manifest::load(Path::new(&status.node.manifest))
        .map_err(|e| fail(e.to_string()))?;
    let (release, _) = mortar_release::Ledger::open(data_dir)
        .record(&manifest)
        .map_err(|e| fail(e.to_string()))?;
    let current = running.instances.iter().find_map(|i| i.version.clone());
    Ok(if current.as_deref() == Some(release.id.as_str()) {
        mortar_supervisor::BOOT_VERSION.to_owned()
    } else {
        release.id
    })
}

/// A rolling deploy of `service` to `release`; the time until it
/// succeeded.
pub async fn deploy(
    admin: &AdminClient,
    service: &str,
    release: &str,
    timeout: Duration,
) -> Result<Duration, FaultError> {
    let since = Instant::now();
    let body = mortar_node::deploys::DeployBody {
        release: release.to_owned(),
        strategy: Some("rolling".to_owned()),
        manual: Some(false),
    };
    let mut status = admin.deploy(service, &body).await?;
    while !status.state.is_finished() {
        if since.elapsed() > timeout {
            return Err(FaultError::NoRecovery {
                service: service.to_owned(),
                after: timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = admin.deploy_status(service).await?;
    }
    if status.state != mortar_supervisor::deploy::DeployState::Succeeded {
        return Err(FaultError::Deploy {
            service: service.to_owned(),
            reason: status.reason.unwrap_or_default(),
        });
    }
    Ok(since.elapsed())
}

/// Stops the node's bus for `lasts`; the time until it answers again.
pub async fn bus_outage(
    admin: &AdminClient,
    lasts: Duration,
    timeout: Duration,
) -> Result<Duration, FaultError> {
    let since = Instant::now();
    admin
        .inject_fault(&FaultRequest {
            kind: "bus-outage".to_owned(),
            seconds: lasts.as_secs_f64(),
            ..FaultRequest::default()
        })
        .await?;
    tokio::time::sleep(lasts).await;
    loop {
        if admin.bus_stats().await.is_ok() {
            return Ok(since.elapsed());
        }
        if since.elapsed() > timeout {
            return Err(FaultError::NoRecovery {
                service: "the bus".to_owned(),
                after: timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Delays `percent` of `service`'s requests at the gateway by `ms` for
/// `lasts`; the time until the node ended the fault.
pub async fn latency(
    admin: &AdminClient,
    service: &str,
    ms: u64,
    percent: f64,
    lasts: Duration,
    timeout: Duration,
) -> Result<Duration, FaultError> {
    let since = Instant::now();
    let fault = admin
        .inject_fault(&FaultRequest {
            kind: "latency".to_owned(),
            service: Some(service.to_owned()),
            seconds: lasts.as_secs_f64(),
            ms: Some(ms),
            percent: Some(percent),
        })
        .await?;
    tokio::time::sleep(lasts).await;
    loop {
        if let Ok(active) = admin.faults().await
            && active.iter().all(|f| f.id != fault.id)
        {
            return Ok(since.elapsed());
        }
        if since.elapsed() > timeout {
            return Err(FaultError::NoRecovery {
                service: service.to_owned(),
                after: timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
