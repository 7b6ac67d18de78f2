//! Dead letters: a message that used up its deliveries is copied to `<topic>.dlq` with
//! headers saying why, and can be replayed from there.

use crate::record::Record;
use crate::{Message, NewMessage};

pub use mortar_bus_proto::dead_letter::{
    DLQ_HEADERS, HEADER_ATTEMPTS, HEADER_ORIGINAL_ID, HEADER_ORIGINAL_TOPIC, HEADER_REASON,
    dlq_topic,
};

/// The dead-letter copy of `record`: original key, payload and headers (minus any
/// dead-letter headers from an earlier round) plus the four dead-letter headers.
pub(crate) fn dead_letter(record: &Record, topic: &str, attempts: u32, reason: &str) -> NewMessage {
    let mut headers = without_dlq_headers(&record.headers);
    headers.push((HEADER_REASON.into(), reason.into()));
    headers.push((HEADER_ATTEMPTS.into(), attempts.to_string()));
    headers.push((HEADER_ORIGINAL_TOPIC.into(), topic.into()));
    headers.push((HEADER_ORIGINAL_ID.into(), record.offset.to_string()));
    NewMessage {
        key: record.key.clone(),
        headers,
        payload: record.payload.clone(),
    }
}

/// The message to publish again when replaying a dead letter.
pub(crate) fn replayed(message: &Message) -> NewMessage {
    NewMessage {
        key: message.key.clone(),
        headers: without_dlq_headers(&message.headers),
        payload: message.payload.clone(),
    }
}

fn without_dlq_headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| !DLQ_HEADERS.contains(&name.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn dead_letter_headers_are_added_once_and_removed_on_replay() {
        let record = Record {
            offset: 12,
            publish_time_ms: 1,
            key: Some("k".into()),
            headers: vec![
                ("traceparent".into(), "t".into()),
                (HEADER_ATTEMPTS.into(), "9".into()),
            ],
            payload: Bytes::from_static(b"p"),
        };
        let dead = dead_letter(&record, "orders", 5, "boom");
        assert_eq!(
            dead.headers,
            vec![
                ("traceparent".into(), "t".into()),
                (HEADER_REASON.into(), "boom".into()),
                (HEADER_ATTEMPTS.into(), "5".into()),
                (HEADER_ORIGINAL_TOPIC.into(), "orders".into()),
                (HEADER_ORIGINAL_ID.into(), "12".into()),
            ]
        );
        let message = Message {
            id: 0,
            topic: dlq_topic("orders"),
            key: dead.key.clone(),
            headers: dead.headers.clone(),
            payload: dead.payload.clone(),
            publish_time_ms: 2,
            attempt: 1,
        };
        assert_eq!(
            replayed(&message).headers,
            vec![("traceparent".to_string(), "t".to_string())]
        );
    }
}
