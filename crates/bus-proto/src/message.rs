//! The messages carried by `Publish` and `Deliver` frames.

use bytes::Bytes;

/// The bytes of a message that count against `max_message_bytes`: payload,
/// key and every header name and value. One rule for every backend.
pub fn counted_size(payload: usize, key: Option<&str>, headers: &[(String, String)]) -> usize {
    payload
        + key.map_or(0, str::len)
        + headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

/// A message as a producer hands it over: the broker assigns id and time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewMessage {
    /// Routing/ordering key, if the producer has one.
    pub key: Option<String>,
    /// Free-form headers, e.g. `content-type` or `traceparent`.
    pub headers: Vec<(String, String)>,
    /// The opaque payload.
    pub payload: Bytes,
}

impl NewMessage {
    /// A message with only a payload.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        NewMessage {
            key: None,
            headers: Vec::new(),
            payload: payload.into(),
        }
    }

    /// What counts against the broker's `max_message_bytes`: payload, key
    /// and every header name and value.
    pub fn size(&self) -> usize {
        counted_size(self.payload.len(), self.key.as_deref(), &self.headers)
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The value of the first header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// A stored message as delivered to a consumer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The broker-assigned id (the offset in the topic's log).
    pub id: u64,
    /// The topic it was published to.
    pub topic: String,
    /// Routing/ordering key.
    pub key: Option<String>,
    /// Headers as published.
    pub headers: Vec<(String, String)>,
    /// The opaque payload.
    pub payload: Bytes,
    /// When the broker accepted it, in milliseconds since the Unix epoch.
    pub publish_time_ms: u64,
    /// Which delivery this is: 1 for the first, more after nacks or timeouts.
    pub attempt: u32,
}

impl Message {
    /// The value of the first header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}
