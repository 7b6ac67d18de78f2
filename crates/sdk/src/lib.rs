//! The mortar SDK: what every Rust service links so it gets the twelve-factor
//! basics without writing them.
//!
//! A service's `main` is one call to [`run`]: it reads typed configuration from
//! the environment (exit code 78 on a bad variable), logs JSON lines on stdout,
//! binds the port named by `PORT` (0 = ephemeral) and reports it to the node,
//! serves `/health/live` and `/health/ready`, and drains gracefully on SIGTERM
//! or SIGINT. From the [`Context`] it gets the bus (with an offline outbox)
//! and a resilient client that calls other services by name, and checks the
//! access tokens of its callers ([`auth`]).
//!
//! ```no_run
//! use axum::{Router, routing::get};
//!
//! fn main() -> std::process::ExitCode {
//!     mortar_sdk::run("hello", |_ctx| async move {
//!         Ok(Router::new().route("/", get(|| async { "hello" })))
//!     })
//! }
//! ```

pub mod auth;
pub mod bus;
pub mod call;
pub mod config;
pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod problem;
mod registry;
pub mod replay_check;
mod report;
mod request;
mod service;
pub mod shutdown;
mod tls;

pub use config::{ConfigError, Env, FromEnv, ServiceConfig};
pub use health::Readiness;
pub use metrics::ServiceMetrics;
/// TLS material from the node (re-exported for services that need it).
pub use mortar_tls::InstanceTls;
/// W3C trace context (re-exported: services read the current trace).
pub use mortar_trace as trace;
pub use problem::Problem;
pub use registry::RemoteRegistry;
pub use service::{BoxError, Context, DISCOVERY_ENV, EXIT_CONFIG, run, run_with_projections};
pub use tls::Peer;
