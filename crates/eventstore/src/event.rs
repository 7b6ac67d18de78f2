//! Event envelopes: what a caller appends and what a reader gets back.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where an event came from, carried with it so that a chain of commands,
/// events and messages can be followed across services.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The id shared by everything one outside request caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The id of the command or message that directly caused this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// W3C trace context of the request that caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// An event to append: its type, the schema version its payload is written
/// in (so upcasters can migrate it later), the payload and metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The event's type, e.g. `OrderPlaced`.
    pub event_type: String,
    /// The version of the payload's schema, starting at 1.
    pub schema_version: u32,
    /// The payload, as JSON.
    pub payload: Value,
    /// Correlation, causation and trace context.
    pub metadata: Metadata,
}

impl NewEvent {
    /// An event with schema version 1 and empty metadata.
    pub fn new(event_type: impl Into<String>, payload: Value) -> Self {
        NewEvent {
            event_type: event_type.into(),
            schema_version: 1,
            payload,
            metadata: Metadata::default(),
        }
    }
}

/// An event as stored: the envelope plus where it sits in its stream
/// (`version`, 1-based) and in the whole store (`position`, commit order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Global position: increases in commit order across all streams.
    pub position: i64,
    /// The stream (one aggregate instance), e.g. `order-42`.
    pub stream_id: String,
    /// The event's version in its stream: 1 for the first.
    pub version: i64,
    /// The event's type.
    pub event_type: String,
    /// The payload's schema version (after upcasting, the current one).
    pub schema_version: u32,
    /// The payload.
    pub payload: Value,
    /// Correlation, causation and trace context.
    pub metadata: Metadata,
    /// When it was committed, in milliseconds since the Unix epoch.
    pub recorded_at_ms: i64,
}

impl RecordedEvent {
    /// A stable, unique id: `<stream>@<version>`. Consumers dedupe on it
    /// (the outbox relay may publish an event more than once).
    pub fn event_id(&self) -> String {
        format!("{}@{}", self.stream_id, self.version)
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
