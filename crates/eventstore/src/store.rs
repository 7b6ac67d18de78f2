//! The one trait every backend implements, and the shape of an append.

use async_trait::async_trait;
use tokio::sync::watch;

use crate::{NewEvent, OutboxMessage, PendingMessage, RecordedEvent, Snapshot, StoreError};

/// What the caller believes the stream's version is (optimistic concurrency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the version is (no concurrency check).
    Any,
    /// The stream must be at exactly this version; 0 means "does not exist".
    Exact(i64),
}

/// One atomic append: events to one stream, plus outgoing messages, all in
/// one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendRequest {
    /// The stream to append to.
    pub stream_id: String,
    /// The version the caller decided on.
    pub expected: ExpectedVersion,
    /// The events, in order; at least one.
    pub events: Vec<NewEvent>,
    /// When set, each event is also written to the outbox as a message on
    /// this topic (the recorded event as JSON, with its id and position).
    pub publish_to: Option<String>,
    /// Further messages to write to the outbox in the same transaction.
    pub outbox: Vec<OutboxMessage>,
}

impl AppendRequest {
    /// An append of `events` to `stream_id` expecting `expected`.
    pub fn new(
        stream_id: impl Into<String>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Self {
        AppendRequest {
            stream_id: stream_id.into(),
            expected,
            events,
            publish_to: None,
            outbox: Vec::new(),
        }
    }

    /// Also publishes every event to `topic` through the outbox.
    pub fn publish_to(mut self, topic: impl Into<String>) -> Self {
        self.publish_to = Some(topic.into());
        self
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The stream's version after the append (the last event's version).
    pub version: i64,
    /// The global position of the last event.
    pub position: i64,
}

/// Anything projections can read events from, in commit order: the event
/// store itself, or another service's event feed.
#[async_trait]
pub trait EventSource: Send + Sync + 'static {
    /// Up to `limit` events with a position greater than `after`, in order.
    async fn read_all(&self, after: i64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError>;
    /// The position of the newest committed event (0 when empty).
    async fn head(&self) -> Result<i64, StoreError>;
}

/// An event store. Appends are atomic per request and durable on return;
/// `(stream, version)` is unique, so two concurrent writers expecting the
/// same version can never both win.
#[async_trait]
pub trait EventStore: EventSource {
    /// Appends atomically; [`StoreError::Conflict`] if the stream is not at
    /// the expected version.
    async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError>;

    /// The stream's events with a version greater than `after`, in order.
    async fn read_stream(
        &self,
        stream_id: &str,
        after: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Stores (or replaces) a stream's snapshot.
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError>;

    /// The stream's latest snapshot, if any.
    async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError>;

    /// Up to `limit` unsent outbox messages, oldest first.
    async fn outbox_pending(&self, limit: usize) -> Result<Vec<PendingMessage>, StoreError>;

    /// Marks outbox messages as sent.
    async fn outbox_mark_sent(&self, ids: &[i64]) -> Result<(), StoreError>;

    /// The newest position committed through this handle, updated on every
    /// commit: lets in-process projections and relays wake at once instead
    /// of polling.
    fn watch_head(&self) -> watch::Receiver<i64>;

    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
}
