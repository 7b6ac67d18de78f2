//! Faults on one instance of a running node, by signal: the node sees what
//! it would see if the process crashed or hung.

use std::time::{Duration, Instant};

use mortar_node::client::{AdminClient, ClientError};
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
