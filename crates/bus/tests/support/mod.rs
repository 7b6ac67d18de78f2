//! Helpers shared by the broker's integration tests.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use mortar_bus::{Broker, BrokerConfig, Message, NewMessage};

/// A configuration for tests: small segments, and the given directory.
pub fn config(dir: &Path) -> BrokerConfig {
    BrokerConfig {
        data_dir: dir.to_owned(),
        segment_bytes: 4096,
        ..BrokerConfig::default()
    }
}

/// Publishes `count` one-message batches with payloads "m0", "m1", ...
pub async fn publish_numbered(broker: &Broker, topic: &str, count: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for i in 0..count {
        let batch = vec![NewMessage::new(Bytes::from(format!("m{i}")))];
        ids.extend(broker.publish(topic, batch).await.unwrap());
    }
    ids
}

/// Fetches without waiting.
pub async fn fetch_now(
    broker: &Broker,
    topic: &str,
    group: &str,
    consumer: &str,
    max: usize,
) -> Vec<Message> {
    broker
        .fetch(topic, group, consumer, max, Duration::ZERO)
        .await
        .unwrap()
}

/// Fetches, waiting up to 10 s (a generous bound, not a timing assertion).
pub async fn fetch_patiently(
    broker: &Broker,
    topic: &str,
    group: &str,
    consumer: &str,
    max: usize,
) -> Vec<Message> {
    broker
        .fetch(topic, group, consumer, max, Duration::from_secs(10))
        .await
        .unwrap()
}

/// The ids of `messages`.
pub fn ids(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|m| m.id).collect()
}
