//! The node's edge: the application's one public port.
//!
//! A request is rate-limited per client IP, size-limited, given a W3C trace
//! context, routed by longest path prefix to a service, optionally sent to a
//! version by a weighted split (whose per-version error rate and latency
//! are counted for blue-green analysis), held in a bounded queue while a
//! recreate deploy swaps the service's instances, answered from the response cache for public
//! GETs, checked for a valid access token on authenticated routes (the
//! verified caller is passed on as `x-mortar-subject`/`x-mortar-scopes`),
//! delayed or answered 503 when a fault is injected into the service
//! (`mortar chaos latency|errors`), and otherwise forwarded with the resilient
//! [`Client`](mortar_resilience::Client). Every gateway error is
//! problem+json. `POST /v1/batch` runs many sub-requests in one round trip.

mod answer;
mod auth;
mod batch;
mod cache;
mod config;
mod connection;
mod faults;
mod gateway;
mod hold;
mod hop_by_hop;
mod problems;
mod proxy;
mod rate_limit;
mod routes;
mod split;
mod spread;
mod trace;
mod versions;
mod wheel_anchor;

pub use config::{Access, AuthConfig, CacheConfig, GatewayConfig, RateLimitConfig, Route};
pub use faults::{INJECTED_HEADER, INJECTED_PROBLEM, UpstreamFault};
pub use gateway::Gateway;
pub use trace::TRACEPARENT;
