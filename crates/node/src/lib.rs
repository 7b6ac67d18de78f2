//! The mortar node: what `mortar up` runs.
//!
//! It owns the data directory, serves the admin API on loopback (status,
//! logs, instance endpoint reports, deploys, injected faults; OpenAPI at
//! `/v1/openapi.json`), the web dashboard (`/dashboard`) and runs
//! the supervisor. One-off admin commands (`mortar status`, `mortar logs`)
//! reach it through [`client::AdminClient`].

pub mod admin;
pub mod client;
pub mod dashboard;
pub mod datadir;
pub mod deploys;
mod edge;
pub mod faults;
mod guard;
pub mod metrics;
mod node;
mod secrets;

pub use node::{DEFAULT_CERT_LIFETIME, Node, NodeError, NodeOptions};
