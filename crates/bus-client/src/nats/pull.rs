//! Pull, ack and nack by message id on JetStream: what the node's `/v1/bus`
//! HTTP API needs so that services in other languages see the same API
//! whichever bus is behind it.
//!
//! JetStream acks a delivery through the delivery itself, not by id, so the
//! deliveries handed out are held here until they are settled or their ack
//! deadline passes (after which JetStream redelivers them anyway).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt;
use mortar_bus_proto::dead_letter::{DLQ_HEADERS, dlq_topic};
use mortar_bus_proto::{ErrorCode, Message, NewMessage};

use super::consume::dead_letter;
use super::{NatsLink, names, to_message};
use crate::client::{lock, nack_delay};
use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::session::RequestError;

/// The group `replay_dead_letters` reads dead-letter topics with.
const REPLAY_GROUP: &str = "replay";

/// A delivery handed out and not yet settled.
struct Held {
    message: jetstream::Message,
    attempt: u32,
    until: Instant,
}

/// A group's standing on a topic, from JetStream's consumer info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupBacklog {
    /// The group.
    pub group: String,
    /// Not yet delivered.
    pub pending: u64,
    /// Delivered, not yet acked.
    pub in_flight: u64,
    /// Delivered more than once.
    pub redelivered: u64,
    /// Deliveries so far, redeliveries included (the consumer's sequence).
    pub delivered: u64,
}

/// A topic's standing, from JetStream's stream info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicBacklog {
    /// The topic.
    pub topic: String,
    /// Oldest sequence still stored.
    pub first_id: u64,
    /// The sequence the next publish gets.
    pub next_id: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Its groups.
    pub groups: Vec<GroupBacklog>,
}

/// A JetStream bus addressed by message id, for servers that relay the bus
/// to clients which cannot hold a JetStream delivery (HTTP).
pub struct JetStream {
    link: Arc<NatsLink>,
    held: Mutex<HashMap<(String, String, u64), Held>>,
    consumers: tokio::sync::Mutex<HashMap<(String, String), consumer::PullConsumer>>,
}

impl std::fmt::Debug for JetStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStream")
            .field("url", &self.link.url)
            .finish()
    }
}

fn refused(e: RequestError, url: &str) -> ClientError {
    match e {
        RequestError::Refused(e) => e,
        RequestError::Disconnected => ClientError::Unavailable {
            url: url.to_owned(),
            reason: "NATS did not acknowledge the publish".to_owned(),
        },
    }
}

impl JetStream {
    /// Connects (failing at once if NATS or JetStream is not there).
    pub async fn connect(config: &ClientConfig) -> Result<JetStream, ClientError> {
        Ok(JetStream {
            link: Arc::new(NatsLink::connect(config, false).await?),
            held: Mutex::default(),
            consumers: tokio::sync::Mutex::default(),
        })
    }

    /// The URL, credentials removed.
    pub fn url(&self) -> &str {
        &self.link.url
    }

    /// The largest message accepted, in bytes.
    pub fn max_message_bytes(&self) -> usize {
        self.link.max_message_bytes
    }

    /// Creates `topic` and its dead-letter topic; idempotent.
    pub async fn create_topic(&self, topic: &str) -> Result<(), ClientError> {
        self.link.create_topic(topic).await
    }

    /// Publishes in order; returns the ids once JetStream stored them.
    pub async fn publish(
        &self,
        topic: &str,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<u64>, ClientError> {
        self.link
            .publish(topic, messages)
            .await
            .map_err(|e| refused(e, &self.link.url))
    }

    async fn consumer(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<consumer::PullConsumer, ClientError> {
        let key = (topic.to_owned(), group.to_owned());
        let mut consumers = self.consumers.lock().await;
        if let Some(consumer) = consumers.get(&key) {
            return Ok(consumer.clone());
        }
        let consumer = super::consume::durable_consumer(&self.link, topic, group).await?;
        consumers.insert(key, consumer.clone());
        Ok(consumer)
    }

    /// Up to `max` messages for `group`, waiting up to `wait` for the first.
    /// They are in flight until acked, nacked or past the ack deadline.
    pub async fn pull(
        &self,
        topic: &str,
        group: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message>, ClientError> {
        self.forget_expired();
        let consumer = self.consumer(topic, group).await?;
        let unavailable = |e: String| ClientError::Unavailable {
            url: self.link.url.clone(),
            reason: format!("cannot pull from JetStream: {e}"),
        };
        let mut batch = consumer
            .fetch()
            .max_messages(max.max(1))
            .expires(wait.max(Duration::from_millis(10)))
            .messages()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let mut out = Vec::new();
        while let Some(next) = batch.next().await {
            let message = next.map_err(|e| unavailable(e.to_string()))?;
            let Some(delivered) = to_message(topic, &message) else {
                continue;
            };
            if delivered.attempt > self.link.max_deliveries {
                let delivered = Message {
                    attempt: delivered.attempt - 1,
                    ..delivered
                };
                dead_letter(
                    &self.link,
                    topic,
                    &message,
                    delivered,
                    "ack deadline exceeded",
                )
                .await;
                continue;
            }
            lock(&self.held).insert(
                (topic.to_owned(), group.to_owned(), delivered.id),
                Held {
                    message,
                    attempt: delivered.attempt,
                    until: Instant::now() + self.link.ack_deadline,
                },
            );
            out.push(delivered);
        }
        Ok(out)
    }

    fn take(&self, topic: &str, group: &str, ids: &[u64]) -> Vec<(u64, Held)> {
        let mut held = lock(&self.held);
        ids.iter()
            .filter_map(|id| {
                held.remove(&(topic.to_owned(), group.to_owned(), *id))
                    .map(|h| (*id, h))
            })
            .collect()
    }

    /// Acks; ids not in flight (already settled, or past their deadline)
    /// are ignored, as on the embedded broker.
    pub async fn ack(&self, topic: &str, group: &str, ids: &[u64]) {
        for (_, held) in self.take(topic, group, ids) {
            let _ = held.message.ack().await;
        }
    }

    /// Gives messages back: redelivered after `delay` (default: doubling per
    /// attempt), or dead-lettered with `reason` once out of deliveries.
    pub async fn nack(
        &self,
        topic: &str,
        group: &str,
        ids: &[u64],
        delay: Option<Duration>,
        reason: &str,
    ) {
        for (_, held) in self.take(topic, group, ids) {
            if held.attempt >= self.link.max_deliveries {
                if let Some(delivered) = to_message(topic, &held.message) {
                    let reason = if reason.is_empty() {
                        "rejected by the consumer"
                    } else {
                        reason
                    };
                    dead_letter(&self.link, topic, &held.message, delivered, reason).await;
                }
                continue;
            }
            let delay = delay.unwrap_or_else(|| nack_delay(held.attempt));
            let _ = held.message.ack_with(AckKind::Nak(Some(delay))).await;
        }
    }

    fn forget_expired(&self) {
        let now = Instant::now();
        lock(&self.held).retain(|_, h| h.until > now);
    }

    /// Publishes up to `max` dead letters of `topic` back to it (without
    /// their dead-letter headers); returns how many moved.
    pub async fn replay_dead_letters(&self, topic: &str, max: usize) -> Result<usize, ClientError> {
        let dlq = dlq_topic(topic);
        let letters = self
            .pull(&dlq, REPLAY_GROUP, max, Duration::from_millis(200))
            .await?;
        let mut moved = 0;
        for letter in letters {
            let again = NewMessage {
                key: letter.key,
                headers: letter
                    .headers
                    .into_iter()
                    .filter(|(n, _)| !DLQ_HEADERS.iter().any(|d| n.eq_ignore_ascii_case(d)))
                    .collect(),
                payload: letter.payload,
            };
            self.publish(topic, vec![again]).await?;
            self.ack(&dlq, REPLAY_GROUP, &[letter.id]).await;
            moved += 1;
        }
        Ok(moved)
    }

    /// Every mortar topic with its groups' backlog, from JetStream.
    pub async fn backlog(&self) -> Result<Vec<TopicBacklog>, ClientError> {
        let unavailable = |e: String| ClientError::Broker {
            code: ErrorCode::Unavailable,
            message: format!("cannot read stream info from {}: {e}", self.link.url),
        };
        let mut names_list = self.link.js.stream_names();
        let mut topics = Vec::new();
        while let Some(name) = names_list.next().await {
            let name = name.map_err(|e| unavailable(e.to_string()))?;
            let Some(topic) = names::topic_of_stream(&name) else {
                continue;
            };
            let mut stream = self
                .link
                .js
                .get_stream(&name)
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            let state = stream
                .info()
                .await
                .map_err(|e| unavailable(e.to_string()))?
                .state
                .clone();
            let mut groups = Vec::new();
            let mut consumers = stream.consumers();
            while let Some(info) = consumers.next().await {
                let info = info.map_err(|e| unavailable(e.to_string()))?;
                groups.push(GroupBacklog {
                    group: names::group_of_durable(&info.name),
                    pending: info.num_pending,
                    in_flight: info.num_ack_pending as u64,
                    redelivered: info.num_redelivered as u64,
                    delivered: info.delivered.consumer_sequence,
                });
            }
            topics.push(TopicBacklog {
                topic,
                first_id: state.first_sequence,
                next_id: state.last_sequence + 1,
                bytes: state.bytes,
                groups,
            });
        }
        topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        Ok(topics)
    }
}
