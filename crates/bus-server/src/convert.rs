//! Translations between the broker's types and the wire protocol's.

use mortar_bus::BusError;
use mortar_bus_proto::{ErrorCode, Message, NewMessage};

/// A message from the wire as the broker takes it.
pub(crate) fn to_bus(m: NewMessage) -> mortar_bus::NewMessage {
    mortar_bus::NewMessage {
        key: m.key,
        headers: m.headers,
        payload: m.payload,
    }
}

/// A stored message as the wire carries it.
pub(crate) fn to_wire(m: mortar_bus::Message) -> Message {
    Message {
        id: m.id,
        topic: m.topic,
        key: m.key,
        headers: m.headers,
        payload: m.payload,
        publish_time_ms: m.publish_time_ms,
        attempt: m.attempt,
    }
}

/// A message for the broker as the wire (and the bus client) carries it.
pub(crate) fn to_client(m: mortar_bus::NewMessage) -> NewMessage {
    NewMessage {
        key: m.key,
        headers: m.headers,
        payload: m.payload,
    }
}

/// A message delivered by another bus (JetStream) as the broker's type.
pub(crate) fn from_wire(m: Message) -> mortar_bus::Message {
    mortar_bus::Message {
        id: m.id,
        topic: m.topic,
        key: m.key,
        headers: m.headers,
        payload: m.payload,
        publish_time_ms: m.publish_time_ms,
        attempt: m.attempt,
    }
}

/// The wire error code for a broker error.
pub(crate) fn error_code(e: &BusError) -> ErrorCode {
    match e {
        BusError::UnknownTopic { .. } => ErrorCode::UnknownTopic,
        BusError::TooLarge { .. } => ErrorCode::MessageTooLarge,
        BusError::InvalidName { .. } => ErrorCode::InvalidName,
        BusError::UnknownGroup { .. } | BusError::UnknownMessage { .. } => {
            ErrorCode::InvalidRequest
        }
        BusError::Closed => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    }
}
