//! The dead-letter contract every backend keeps: a message that used up its
//! deliveries is copied to `<topic>.dlq` with these headers saying why, so
//! tools and services read dead letters the same way whatever the bus.

/// Why the message was dead-lettered (the last nack reason, or the deadline).
pub const HEADER_REASON: &str = "x-mortar-dlq-reason";
/// How many deliveries were made before giving up.
pub const HEADER_ATTEMPTS: &str = "x-mortar-attempts";
/// The topic the message was published to.
pub const HEADER_ORIGINAL_TOPIC: &str = "x-mortar-original-topic";
/// The message's id in its original topic.
pub const HEADER_ORIGINAL_ID: &str = "x-mortar-original-id";

/// Every dead-letter header, to strip them when a dead letter goes round again.
pub const DLQ_HEADERS: [&str; 4] = [
    HEADER_REASON,
    HEADER_ATTEMPTS,
    HEADER_ORIGINAL_TOPIC,
    HEADER_ORIGINAL_ID,
];

/// The name of `topic`'s dead-letter topic.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}
