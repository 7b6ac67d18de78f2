//! The supervisor: runs every service of a manifest as its own processes.
//!
//! It starts services in dependency order and waits for readiness, restarts
//! crashed instances with exponential backoff (and gives up on a service that
//! keeps crashing), merges every instance's output into one JSON-lines stream,
//! and stops services in reverse dependency order, each with SIGTERM and then
//! SIGKILL after its grace period.

pub mod autoscale;
pub mod build;
pub mod deploy;
pub mod events;
mod instance;
pub mod logs;
mod probe;
mod revision;
mod slot;
pub mod status;
mod supervisor;

pub use logs::LogHub;
pub use revision::{BOOT_VERSION, Revision, RevisionError};
pub use status::{InstanceState, InstanceStatus, ServiceState, ServiceStatus};
pub use supervisor::{
    Endpoint, EndpointError, LaunchError, NodeTls, Supervisor, SupervisorOptions, UnknownService,
};
