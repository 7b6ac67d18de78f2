//! The resilient client: how one service calls another by *name* and survives
//! dropped connections, dead instances and slow ones without writing retry
//! loops.
//!
//! The stack is built from tower layers, outermost first:
//! overall deadline → [retry](retry) (full-jitter backoff, retry budget) →
//! per-service [circuit breaker](breaker) → per-try timeout →
//! [deadline header](deadline) → shared power-of-two-choices balancer over
//! peak-EWMA load → [endpoint](endpoint) (kept-alive HTTP/1 connections,
//! each driven by the calling task, and passive outlier ejection). Endpoints come from a [`Resolve`] watch turned
//! into a `tower::discover` stream by [`discovery`].

pub mod backoff;
pub mod breaker;
mod client;
mod config;
pub mod deadline;
mod discovery;
mod endpoint;
mod error;
mod metrics;
mod pool;
mod resolve;
pub mod retry;
mod shared_balance;

pub use breaker::{BreakerLayer, BreakerOpen, BreakerState};
pub use client::{Client, Fallback, ResponseBody, buffer_request};
pub use config::{BreakerConfig, ClientConfig, OutlierConfig, RetryConfig};
pub use deadline::DEADLINE_HEADER;
pub use error::{CallError, EndpointError};
pub use metrics::{Metrics, MetricsSnapshot};
pub use resolve::{Endpoint, Resolve, StaticResolver};

/// The error type that flows between tower layers of the stack.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
