//! The resilient client: how one service calls another by *name* and survives
//! dropped connections, dead instances and slow ones without writing retry
//! loops.
//!
//! The stack is built from tower layers, outermost first:
//! [retry](retry) (full-jitter backoff, retry budget, no retry that cannot
//! start before the call's deadline) → per-service
//! [circuit breaker](breaker) → attempt (per-try timeout capped by the
//! call's [deadline](deadline), which it also tells the callee) → shared
//! power-of-two-choices balancer over peak-EWMA load → endpoint
//! (kept-alive HTTP/1 connections, each driven by the calling task, and
//! passive outlier ejection). Endpoints come from a [`Resolve`] watch,
//! turned into the balancer's list of instances by the membership task.

pub mod backoff;
mod balance;
pub mod breaker;
mod client;
mod config;
mod conn;
mod connect;
pub mod deadline;
mod discovery;
mod dns;
mod endpoint;
mod error;
mod metrics;
mod pool;
mod raw;
mod resolve;
pub mod retry;
mod stats;

pub use breaker::{BreakerLayer, BreakerOpen, BreakerState};
pub use client::{Client, Fallback, ResponseBody, buffer_request};
pub use config::{BreakerConfig, ClientConfig, OutlierConfig, RetryConfig};
pub use conn::ExchangeError;
pub use connect::Connector;
pub use deadline::DEADLINE_HEADER;
pub use dns::DnsResolver;
pub use error::{CallError, EndpointError};
pub use metrics::{LATENCY_BUCKETS, Metrics, MetricsSnapshot, UpstreamMetrics, UpstreamSnapshot};
pub use raw::RawResponse;
pub use resolve::{Endpoint, Resolve, StaticResolver};
pub use stats::RequestStats;

/// The error type that flows between tower layers of the stack.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
