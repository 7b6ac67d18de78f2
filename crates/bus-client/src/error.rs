//! What can go wrong for a bus client.

use std::path::PathBuf;

use mortar_bus_proto::ErrorCode;

/// An error of the bus client; each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The bus URL is not `mortar://HOST:PORT`.
    #[error("invalid bus URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An environment variable of the client is malformed.
    #[error("config error: {variable}={value:?} is invalid; {reason}")]
    InvalidConfig {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What is expected.
        reason: String,
    },
    /// The broker could not be reached and there is no outbox to buffer in.
    #[error(
        "the bus at {url} is unreachable: {reason}; check MORTAR_BUS_URL and that the bus runs, or configure an outbox"
    )]
    Unavailable {
        /// The bus URL.
        url: String,
        /// The last failure.
        reason: String,
    },
    /// The broker refused the handshake.
    #[error("the bus refused the connection ({code}): {message}")]
    Handshake {
        /// Why, as a code.
        code: ErrorCode,
        /// Why, for humans.
        message: String,
    },
    /// The broker refused a request; retrying the same request will not help
    /// unless `code.is_retryable()`.
    #[error("the bus refused the request ({code}): {message}")]
    Broker {
        /// Why, as a code.
        code: ErrorCode,
        /// Why, for humans.
        message: String,
    },
    /// A batch does not fit in one frame; split it.
    #[error(
        "the batch of {messages} messages cannot be sent: {reason}; publish fewer or smaller messages per batch"
    )]
    BatchTooLarge {
        /// Messages in the batch.
        messages: usize,
        /// What did not fit.
        reason: String,
    },
    /// The outbox has no room for this publish; nothing was written.
    #[error("the outbox {} is full: {used} bytes buffered, this publish needs {needed} more, the limit is {max} (outbox_max_bytes); wait for the bus to come back or raise the limit", path.display())]
    OutboxFull {
        /// The outbox file.
        path: PathBuf,
        /// Bytes waiting to be relayed.
        used: u64,
        /// Bytes this publish needs.
        needed: u64,
        /// The configured limit.
        max: u64,
    },
    /// Another client holds this outbox; each process needs its own file.
    #[error("the outbox {} is in use by another client; give each service instance its own outbox file (e.g. include the instance id in MORTAR_BUS_OUTBOX)", path.display())]
    OutboxInUse {
        /// The outbox file.
        path: PathBuf,
    },
    /// The outbox file could not be read or written.
    #[error("outbox I/O failed on {}: {source}; check the disk and the directory's permissions", path.display())]
    Outbox {
        /// The outbox file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A value could not be serialized to JSON for `publish_json`.
    #[error("cannot serialize the message as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The client was closed.
    #[error("the bus client is closed")]
    Closed,
}
