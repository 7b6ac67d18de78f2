//! Calling other services by name: the resilient client (balancing, retries
//! under a budget, timeouts and deadlines, outlier ejection, circuit
//! breakers), resolving names through the node's registry. See
//! [`crate::Context::client`].

pub use mortar_resilience::{CallError, Client, ClientConfig, Fallback, buffer_request};
