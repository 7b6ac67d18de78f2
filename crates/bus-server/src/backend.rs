//! What the HTTP API needs from a bus, so `/v1/bus` serves the embedded
//! broker and NATS JetStream alike: services in other languages never
//! notice which bus is behind the node.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mortar_bus::{Broker, BusError, GroupStats, Message, NewMessage, TopicStats};
use mortar_bus_client::{ClientError, ErrorCode, JetStream};

use crate::convert::{from_wire, to_client};

/// A bus the HTTP API can serve.
#[async_trait::async_trait]
pub trait BusBackend: Send + Sync + 'static {
    /// Creates a topic and its dead-letter topic; idempotent.
    async fn create_topic(&self, topic: &str) -> Result<(), BusError>;
    /// Publishes a batch; returns the ids once stored.
    async fn publish(&self, topic: &str, batch: Vec<NewMessage>) -> Result<Vec<u64>, BusError>;
    /// Joins `group` if needed and waits up to `wait` for up to `max` messages.
    async fn pull(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message>, BusError>;
    /// Acknowledges delivered messages.
    async fn ack(&self, topic: &str, group: &str, ids: &[u64]) -> Result<(), BusError>;
    /// Gives delivered messages back for redelivery (or dead-lettering).
    async fn nack(
        &self,
        topic: &str,
        group: &str,
        ids: &[u64],
        delay: Option<Duration>,
        reason: &str,
    ) -> Result<(), BusError>;
    /// Moves up to `max` dead letters back to `topic`.
    async fn replay_dead_letters(&self, topic: &str, max: usize) -> Result<usize, BusError>;
    /// Topics and groups with backlog and lag, fetched now.
    async fn stats(&self) -> Result<Vec<TopicStats>, BusError>;
    /// The latest stats without waiting (for a metrics scrape, which is synchronous).
    fn last_stats(&self) -> Vec<TopicStats>;
}

#[async_trait::async_trait]
impl BusBackend for Broker {
    async fn create_topic(&self, topic: &str) -> Result<(), BusError> {
        Broker::create_topic(self, topic).await
    }

    async fn publish(&self, topic: &str, batch: Vec<NewMessage>) -> Result<Vec<u64>, BusError> {
        Broker::publish(self, topic, batch).await
    }

    async fn pull(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message>, BusError> {
        self.subscribe(topic, group).await?;
        self.fetch(topic, group, consumer, max, wait).await
    }

    async fn ack(&self, topic: &str, group: &str, ids: &[u64]) -> Result<(), BusError> {
        Broker::ack(self, topic, group, ids).await
    }

    async fn nack(
        &self,
        topic: &str,
        group: &str,
        ids: &[u64],
        delay: Option<Duration>,
        reason: &str,
    ) -> Result<(), BusError> {
        Broker::nack(self, topic, group, ids, delay, reason).await
    }

    async fn replay_dead_letters(&self, topic: &str, max: usize) -> Result<usize, BusError> {
        Broker::replay_dead_letters(self, topic, max).await
    }

    async fn stats(&self) -> Result<Vec<TopicStats>, BusError> {
        Ok(Broker::stats(self))
    }

    fn last_stats(&self) -> Vec<TopicStats> {
        Broker::stats(self)
    }
}

/// NATS JetStream behind the node's HTTP API.
#[derive(Debug)]
pub struct JetStreamBackend {
    js: JetStream,
    last: Mutex<Vec<TopicStats>>,
}

impl JetStreamBackend {
    /// Serves `js`; [`JetStreamBackend::refresh_stats`] keeps metrics current.
    pub fn new(js: JetStream) -> Arc<Self> {
        Arc::new(JetStreamBackend {
            js,
            last: Mutex::default(),
        })
    }

    /// Reads JetStream's stream and consumer info every `every` until
    /// `stop`, so a metrics scrape never waits on the network.
    pub async fn refresh_stats(
        self: Arc<Self>,
        every: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            if let Err(error) = self.stats().await {
                tracing::warn!(%error, "bus: cannot read JetStream stats");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    fn error(&self, e: ClientError, topic: &str, sizes: &[usize]) -> BusError {
        match e {
            ClientError::Broker {
                code: ErrorCode::UnknownTopic,
                ..
            } => BusError::UnknownTopic {
                topic: topic.to_owned(),
            },
            ClientError::Broker {
                code: ErrorCode::InvalidName,
                ..
            } => BusError::InvalidName {
                what: "topic or group",
                name: topic.to_owned(),
            },
            ClientError::Broker {
                code: ErrorCode::MessageTooLarge,
                ..
            } => BusError::TooLarge {
                size: sizes.iter().copied().max().unwrap_or(0),
                limit: self.js.max_message_bytes(),
            },
            other => BusError::Unavailable {
                url: self.js.url().to_owned(),
                detail: other.to_string(),
            },
        }
    }
}

#[async_trait::async_trait]
impl BusBackend for Arc<JetStreamBackend> {
    async fn create_topic(&self, topic: &str) -> Result<(), BusError> {
        self.js
            .create_topic(topic)
            .await
            .map_err(|e| self.error(e, topic, &[]))
    }

    async fn publish(&self, topic: &str, batch: Vec<NewMessage>) -> Result<Vec<u64>, BusError> {
        let sizes: Vec<usize> = batch.iter().map(NewMessage::size).collect();
        let limit = self.js.max_message_bytes();
        if let Some(size) = sizes.iter().copied().find(|s| *s > limit) {
            return Err(BusError::TooLarge { size, limit });
        }
        self.js
            .publish(topic, batch.into_iter().map(to_client).collect())
            .await
            .map_err(|e| self.error(e, topic, &sizes))
    }

    async fn pull(
        &self,
        topic: &str,
        group: &str,
        _consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message>, BusError> {
        let messages = self
            .js
            .pull(topic, group, max, wait)
            .await
            .map_err(|e| self.error(e, topic, &[]))?;
        Ok(messages.into_iter().map(from_wire).collect())
    }

    async fn ack(&self, topic: &str, group: &str, ids: &[u64]) -> Result<(), BusError> {
        self.js.ack(topic, group, ids).await;
        Ok(())
    }

    async fn nack(
        &self,
        topic: &str,
        group: &str,
        ids: &[u64],
        delay: Option<Duration>,
        reason: &str,
    ) -> Result<(), BusError> {
        self.js.nack(topic, group, ids, delay, reason).await;
        Ok(())
    }

    async fn replay_dead_letters(&self, topic: &str, max: usize) -> Result<usize, BusError> {
        self.js
            .replay_dead_letters(topic, max)
            .await
            .map_err(|e| self.error(e, topic, &[]))
    }

    async fn stats(&self) -> Result<Vec<TopicStats>, BusError> {
        let topics = self
            .js
            .backlog()
            .await
            .map_err(|e| self.error(e, "", &[]))?;
        let stats: Vec<TopicStats> = topics
            .into_iter()
            .map(|t| TopicStats {
                topic: t.topic,
                first_offset: t.first_id,
                next_offset: t.next_id,
                bytes: t.bytes,
                groups: t
                    .groups
                    .into_iter()
                    .map(|g| GroupStats {
                        group: g.group,
                        backlog: g.pending + g.in_flight,
                        lag: g.pending,
                        in_flight: g.in_flight,
                        dead_lettered: 0,
                        redelivered: g.redelivered,
                        delivered: g.delivered,
                    })
                    .collect(),
                // JetStream's commits are its own business.
                commits: mortar_bus::CommitHistogram::default(),
            })
            .collect();
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = stats.clone();
        Ok(stats)
    }

    fn last_stats(&self) -> Vec<TopicStats> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
