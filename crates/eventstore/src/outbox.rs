//! The transactional outbox: messages written in the same transaction as
//! the events they announce, published later by [`crate::OutboxRelay`].

/// The header that carries an event's id (`<stream>@<version>`) on the bus,
/// so a consumer's inbox can drop duplicates.
pub const EVENT_ID_HEADER: &str = "mortar-event-id";

/// A message to publish once the append commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// The bus topic.
    pub topic: String,
    /// Routing/ordering key (the stream id for event messages).
    pub key: Option<String>,
    /// Headers, e.g. `content-type` and [`EVENT_ID_HEADER`].
    pub headers: Vec<(String, String)>,
    /// The payload.
    pub payload: Vec<u8>,
}

/// A message waiting in the outbox, with its row id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMessage {
    /// The outbox row id; increases in commit order.
    pub id: i64,
    /// The message.
    pub message: OutboxMessage,
}

/// The message announcing a recorded event: the event as JSON, keyed by its
/// stream, with its id and trace context in headers.
pub(crate) fn event_message(
    topic: &str,
    event: &crate::RecordedEvent,
) -> Result<OutboxMessage, serde_json::Error> {
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        (EVENT_ID_HEADER.to_owned(), event.event_id()),
        ("mortar-event-type".to_owned(), event.event_type.clone()),
    ];
    if let Some(tp) = &event.metadata.traceparent {
        headers.push(("traceparent".to_owned(), tp.clone()));
    }
    Ok(OutboxMessage {
        topic: topic.to_owned(),
        key: Some(event.stream_id.clone()),
        headers,
        payload: serde_json::to_vec(event)?,
    })
}
