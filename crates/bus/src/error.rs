//! Everything that can go wrong in the broker, phrased for the person who has to fix it.

use std::path::PathBuf;

/// An error from the broker. Every variant names what was wrong and how to fix it;
/// an error from a call that takes input means that call changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The topic was never created.
    #[error("unknown topic `{topic}`: create it first (create_topic) or check the name")]
    UnknownTopic {
        /// The name that was asked for.
        topic: String,
    },
    /// The group never subscribed to the topic.
    #[error("unknown consumer group `{group}` on topic `{topic}`: subscribe the group first")]
    UnknownGroup {
        /// The topic.
        topic: String,
        /// The group that was asked for.
        group: String,
    },
    /// A topic or group name outside `[a-z0-9._-]{1,128}`.
    #[error(
        "invalid {what} name `{name}`: use 1 to 128 characters from a-z, 0-9, '.', '_' and '-', not starting with '.'"
    )]
    InvalidName {
        /// "topic" or "group".
        what: &'static str,
        /// The rejected name.
        name: String,
    },
    /// A message larger than `max_message_bytes`; nothing of its batch was published.
    #[error(
        "message of {size} bytes (payload + key + headers) exceeds the limit of {limit} bytes: split it or raise max_message_bytes"
    )]
    TooLarge {
        /// Size of the offending message.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A remote bus behind the same API (NATS JetStream) could not serve the request.
    #[error(
        "the bus at {url} could not serve the request: {detail}; check that it is running and reachable"
    )]
    Unavailable {
        /// Where the bus is (credentials removed).
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// An id that was never published on the topic.
    #[error(
        "unknown message id {id} on topic `{topic}`: ids come from fetch and are below the topic's next offset"
    )]
    UnknownMessage {
        /// The topic.
        topic: String,
        /// The id that was given.
        id: u64,
    },
    /// The file system refused an operation.
    #[error("I/O error on {}: {source}; check the disk and the permissions of the data directory", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// Stored data that cannot be repaired automatically.
    #[error("corrupt data in {}: {detail}; restore the data directory from a backup or remove the damaged file", path.display())]
    Corrupt {
        /// The damaged file or directory.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// An fsync of a topic's log failed after its records were written (and, with
    /// [`Delivery::Written`](crate::Delivery), shown to consumers). What the disk
    /// holds is unknown until the log is recovered, so the topic takes no more
    /// publishes until then.
    #[error("fsync of {} failed ({detail}); the topic takes no more publishes until the broker restarts and recovers its log: check the disk", path.display())]
    SyncFailed {
        /// The segment file whose fsync failed.
        path: PathBuf,
        /// What the operating system said.
        detail: String,
    },
    /// The broker was closed.
    #[error("the broker is closed: open it again")]
    Closed,
}

impl BusError {
    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
