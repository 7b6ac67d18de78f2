//! What the supervisor reports about services and instances.
//!
//! These types are the admin API's `/v1/status` document, so they are part
//! of the stable contract: add fields, never rename them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The life-cycle state of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Launched, not ready yet.
    Starting,
    /// Answering its readiness check.
    Ready,
    /// Running but its readiness check fails (a dependency is down).
    NotReady,
    /// Crashed; waiting out the restart backoff.
    Backoff,
    /// Asked to stop; draining.
    Stopping,
    /// Stopped on request.
    Stopped,
    /// Crashed too often, or cannot run at all; not restarted.
    Failed,
}

/// One instance: a process the supervisor runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceStatus {
    /// Stable id of the instance slot, e.g. `catalog-1`; kept across restarts.
    pub id: String,
    /// The service it belongs to.
    pub service: String,
    /// Where it is in its life cycle.
    pub state: InstanceState,
    /// The current process id, while a process exists.
    pub pid: Option<u32>,
    /// The address it reported, once it has.
    pub address: Option<String>,
    /// The port it bound and reported, once it has.
    pub port: Option<u16>,
    /// How many times it was restarted after exiting unexpectedly.
    pub restarts: u32,
    /// When the current process was started (RFC 3339).
    pub started_at: Option<String>,
    /// How the previous process ended, e.g. `exit status: 1` or `signal: 9 (SIGKILL)`.
    pub last_exit: Option<String>,
    /// Whether it serves mTLS (it got a certificate from the node), so its
    /// URL is `https://` and callers need a certificate of their own.
    #[serde(default)]
    pub tls: bool,
    /// The version it runs: `boot` (the manifest as on disk at start) or
    /// the id of the release a deploy moved it to.
    #[serde(default)]
    pub version: Option<String>,
}

impl InstanceStatus {
    /// A fresh instance slot that has not been launched yet.
    pub fn new(service: &str, id: &str) -> Self {
        InstanceStatus {
            id: id.to_owned(),
            service: service.to_owned(),
            state: InstanceState::Starting,
            pid: None,
            address: None,
            port: None,
            restarts: 0,
            started_at: None,
            last_exit: None,
            tls: false,
            version: None,
        }
    }

    /// The instance's base URL, once it has reported its port.
    pub fn url(&self) -> Option<String> {
        let port = self.port?;
        let scheme = if self.tls { "https" } else { "http" };
        let address = self.address.as_deref().unwrap_or("127.0.0.1");
        let host = match address {
            "0.0.0.0" => "127.0.0.1",
            "::" => "[::1]",
            a if a.contains(':') => return Some(format!("{scheme}://[{a}]:{port}")),
            a => a,
        };
        Some(format!("{scheme}://{host}:{port}"))
    }
}

/// The state of a whole service, derived from its instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Some instances are still starting and none has failed.
    Starting,
    /// Every instance is ready.
    Running,
    /// Some instances are not ready (crashed, restarting, or a dependency is down).
    Degraded,
    /// An instance crashed too often and is not restarted.
    Failed,
    /// Every instance is stopped.
    Stopped,
}

/// One service of the manifest and its instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceStatus {
    /// The service's name.
    pub name: String,
    /// The overall state.
    pub state: ServiceState,
    /// How many instances should run: the manifest's `instances`, or the
    /// autoscaler's latest count for an autoscaled service.
    pub desired: u32,
    /// How many are ready now.
    pub ready: u32,
    /// Every instance.
    pub instances: Vec<InstanceStatus>,
}

impl ServiceStatus {
    /// Derives the service state from its instances.
    pub fn from_instances(name: &str, desired: u32, instances: Vec<InstanceStatus>) -> Self {
        let count = |s: InstanceState| instances.iter().filter(|i| i.state == s).count();
        let ready = count(InstanceState::Ready) as u32;
        let state = if count(InstanceState::Failed) > 0 {
            ServiceState::Failed
        } else if instances
            .iter()
            .all(|i| matches!(i.state, InstanceState::Stopped | InstanceState::Stopping))
        {
            ServiceState::Stopped
        } else if ready as usize == instances.len() {
            ServiceState::Running
        } else if instances
            .iter()
            .all(|i| matches!(i.state, InstanceState::Starting | InstanceState::Ready))
        {
            ServiceState::Starting
        } else {
            ServiceState::Degraded
        };
        ServiceStatus {
            name: name.to_owned(),
            state,
            desired,
            ready,
            instances,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(state: InstanceState) -> InstanceStatus {
        InstanceStatus {
            state,
            ..InstanceStatus::new("s", "s-1")
        }
    }

    #[test]
    fn service_state_is_derived_from_instances() {
        use InstanceState::*;
        let derive = |states: &[InstanceState]| {
            ServiceStatus::from_instances("s", 2, states.iter().map(|s| inst(*s)).collect()).state
        };
        assert_eq!(derive(&[Ready, Ready]), ServiceState::Running);
        assert_eq!(derive(&[Ready, Starting]), ServiceState::Starting);
        assert_eq!(derive(&[Ready, Backoff]), ServiceState::Degraded);
        assert_eq!(derive(&[Ready, Failed]), ServiceState::Failed);
        assert_eq!(derive(&[Stopped, Stopping]), ServiceState::Stopped);
    }

    #[test]
    fn url_uses_a_connectable_host() {
        let mut i = inst(InstanceState::Ready);
        assert_eq!(i.url(), None);
        i.port = Some(8080);
        i.address = Some("0.0.0.0".into());
        assert_eq!(i.url().unwrap(), "http://127.0.0.1:8080");
        i.address = Some("::1".into());
        assert_eq!(i.url().unwrap(), "http://[::1]:8080");
        i.tls = true;
        assert_eq!(i.url().unwrap(), "https://[::1]:8080");
    }
}
