//! Discovery by name: services never know each other's addresses.
//!
//! The node keeps a [`Registry`] of instances (service, version, address,
//! labels, readiness) under leases kept alive by heartbeat; the supervisor
//! registers what it runs, other processes register over HTTP
//! ([`http::router`]). Clients watch a service instead of polling, and any
//! program can resolve names with an ordinary DNS resolver through
//! [`dns::DnsServer`] (SRV and A/AAAA for `<service>.<app>.mortar.`).
//!
//! The in-process [`Registry`] implements the resilient client's `Resolve`
//! (the node's gateway uses it); services reach the same registry over HTTP
//! through the SDK.

#[cfg(feature = "server")]
pub mod dns;
#[cfg(feature = "server")]
pub mod http;
mod registry;
mod resolve;
mod wire;

pub use registry::{Instance, Registry, RegistryError};
pub use wire::ServiceInstances;
