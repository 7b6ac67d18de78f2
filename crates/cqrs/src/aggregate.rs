//! The write model: an aggregate decides which events a command causes and
//! folds events into its state.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use mortar_eventstore::{Metadata, NewEvent, RecordedEvent};

/// A domain event type: a serde enum, adjacently tagged
/// (`#[serde(tag = "type", content = "data")]`), so the variant name is
/// stored as the event type and only the data as the payload — which is
/// what upcasters migrate.
pub trait DomainEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The schema version new events of `event_type` are written in.
    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}

/// An event-sourced aggregate: one stream per instance (`<TYPE>-<id>`).
///
/// `decide` enforces the rules and never mutates; `apply` never fails (an
/// event is a fact that already happened). The state is serializable so it
/// can be snapshotted.
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stream prefix, e.g. `order`.
    const TYPE: &'static str;
    /// What callers ask for.
    type Command: Send + Sync;
    /// What happened.
    type Event: DomainEvent;
    /// Why a command was refused.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The events `command` causes in the current state, or why not.
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds one event into the state.
    fn apply(&mut self, event: &Self::Event);

    /// The stream holding instance `id`.
    fn stream_id(id: &str) -> String {
        format!("{}-{id}", Self::TYPE)
    }
}

/// A domain event could not be encoded or a stored one decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// serde failed.
    #[error("event codec: {0}")]
    Json(#[from] serde_json::Error),
    /// The event did not serialize as `{"type": …, "data": …}`.
    #[error("an event must serialize as {{\"type\": …, \"data\": …}} (serde tag/content); got {0}")]
    Shape(String),
}

/// Encodes a domain event as a [`NewEvent`] (type, schema version, payload).
pub fn encode_event<E: DomainEvent>(
    event: &E,
    metadata: &Metadata,
) -> Result<NewEvent, CodecError> {
    let value = serde_json::to_value(event)?;
    let Value::Object(mut map) = value else {
        return Err(CodecError::Shape(value.to_string()));
    };
    let event_type = match map.remove("type") {
        Some(Value::String(t)) => t,
        other => return Err(CodecError::Shape(format!("{other:?}"))),
    };
    let payload = map.remove("data").unwrap_or(Value::Null);
    Ok(NewEvent {
        schema_version: E::schema_version(&event_type),
        event_type,
        payload,
        metadata: metadata.clone(),
    })
}

/// Decodes a recorded (and upcast) event into the domain type.
pub fn decode_event<E: DomainEvent>(event: &RecordedEvent) -> Result<E, CodecError> {
    let value = if event.payload.is_null() {
        json!({ "type": event.event_type })
    } else {
        json!({ "type": event.event_type, "data": event.payload })
    };
    Ok(serde_json::from_value(value)?)
}
