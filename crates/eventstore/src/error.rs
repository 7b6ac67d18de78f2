//! What can go wrong in the event store.

/// An event store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Optimistic concurrency: the stream moved since the caller read it.
    /// The caller should reload and decide again.
    #[error("stream {stream_id:?} is at version {actual}, not the expected {expected}")]
    Conflict {
        /// The stream appended to.
        stream_id: String,
        /// The version the caller expected.
        expected: i64,
        /// The version the stream is at.
        actual: i64,
    },
    /// The store URL cannot be used.
    #[error("invalid store URL {url:?}: {problem}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The request itself is invalid (e.g. an append without events).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// SQLite failed.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("PostgreSQL: {}", crate::pg::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// A stored event or snapshot could not be decoded.
    #[error("cannot decode stored data: {0}")]
    Codec(#[from] serde_json::Error),
    /// A file system operation failed (creating the store's directory).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The store's writer has stopped (the store was closed or crashed).
    #[error("the event store's writer has stopped")]
    Closed,
    /// The database server cannot be reached right now; nothing was
    /// written. The session is retried with backoff, so trying again later
    /// is the right response.
    #[error(
        "PostgreSQL is unreachable ({problem}); the next connection attempt is in {retry_in_ms} ms"
    )]
    Unavailable {
        /// Why the last connection attempt failed.
        problem: String,
        /// How long until the next attempt.
        retry_in_ms: u64,
    },
    /// The connection dropped before the write committed: it is known not
    /// to have taken effect, so retrying it is safe.
    #[error(
        "the connection to the database dropped before the write committed; nothing was written ({0})"
    )]
    NotCommitted(String),
    /// The connection dropped while the write was committing and whether it
    /// committed could not be found out. Reload before deciding again: the
    /// write may be there.
    #[error(
        "the connection to the database dropped during the commit and its outcome is unknown ({0})"
    )]
    OutcomeUnknown(String),
}

impl StoreError {
    /// True for an optimistic-concurrency conflict (worth a retry).
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }

    /// True when the write is known not to have happened because the
    /// database was unreachable or the connection dropped: retrying is safe.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::NotCommitted(_)
        )
    }
}
