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
    #[error("PostgreSQL: {0}")]
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
}

impl StoreError {
    /// True for an optimistic-concurrency conflict (worth a retry).
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
}
