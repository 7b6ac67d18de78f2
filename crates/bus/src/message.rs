//! The message as publishers hand it in and as consumers receive it.

use bytes::Bytes;

/// A message to publish: the broker assigns its id and publish time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewMessage {
    /// Optional routing or deduplication key, carried unchanged.
    pub key: Option<String>,
    /// Headers such as `traceparent`, carried unchanged and in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub payload: Bytes,
}

impl NewMessage {
    /// A message with only a payload.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            key: None,
            headers: Vec::new(),
            payload: payload.into(),
        }
    }

    /// What counts against `max_message_bytes`: payload, key and every header name and value.
    pub fn size(&self) -> usize {
        mortar_bus_proto::counted_size(self.payload.len(), self.key.as_deref(), &self.headers)
    }
}

/// A delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its offset in its topic: unique per topic, increasing in publish order.
    pub id: u64,
    /// The topic it was published to.
    pub topic: String,
    /// The key it was published with.
    pub key: Option<String>,
    /// The headers it was published with.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub payload: Bytes,
    /// When the broker accepted it, in milliseconds since the Unix epoch.
    pub publish_time_ms: u64,
    /// Which delivery this is to its group: 1 the first time, 2 after one redelivery, ...
    pub attempt: u32,
}
