//! What can go wrong in a call, each naming the service so a log line or a
//! problem+json answer says where to look.

use std::time::Duration;

/// Why [`Client::call`](crate::Client::call) gave no response.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The registry lists no ready instance.
    #[error("service `{service}` has no ready instance; start one or check its readiness")]
    NoInstances {
        /// The service called.
        service: String,
    },
    /// The breaker is open after repeated failures; the call was shed.
    #[error("service `{service}` is failing; its circuit breaker is open, try again shortly")]
    BreakerOpen {
        /// The service called.
        service: String,
    },
    /// The last attempt took longer than the per-try timeout.
    #[error("service `{service}` did not answer within the per-try timeout of {timeout:?}")]
    Timeout {
        /// The service called.
        service: String,
        /// The per-try timeout.
        timeout: Duration,
    },
    /// The whole call, retries included, ran out of time.
    #[error("service `{service}` did not answer within the call deadline of {deadline:?}")]
    Deadline {
        /// The service called.
        service: String,
        /// The deadline the call had.
        deadline: Duration,
    },
    /// Connecting to or talking with the instance failed.
    #[error("service `{service}` failed: {source}")]
    Upstream {
        /// The service called.
        service: String,
        /// What failed.
        #[source]
        source: crate::BoxError,
    },
    /// The request body is larger than the client buffers for replay.
    #[error("request body for service `{service}` exceeds {limit} bytes")]
    BodyTooLarge {
        /// The service called.
        service: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// The request body could not be read.
    #[error("request body for service `{service}` could not be read: {source}")]
    Body {
        /// The service called.
        service: String,
        /// What failed.
        #[source]
        source: crate::BoxError,
    },
}

impl CallError {
    /// The service the failed call was for.
    pub fn service(&self) -> &str {
        match self {
            Self::NoInstances { service }
            | Self::BreakerOpen { service }
            | Self::Timeout { service, .. }
            | Self::Deadline { service, .. }
            | Self::Upstream { service, .. }
            | Self::BodyTooLarge { service, .. }
            | Self::Body { service, .. } => service,
        }
    }
}

/// A failure of one attempt against one instance.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// No connection could be made, so the request was never sent and is
    /// safe to retry whatever its method.
    #[error("cannot connect to instance `{instance}` at {address}: {source}")]
    Connect {
        /// Instance id.
        instance: String,
        /// Its address.
        address: std::net::SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The exchange failed after the request may have been sent.
    #[error("request to instance `{instance}` at {address} failed: {source}")]
    Exchange {
        /// Instance id.
        instance: String,
        /// Its address.
        address: std::net::SocketAddr,
        /// What went wrong on the connection.
        #[source]
        source: crate::ExchangeError,
    },
}
