//! The outbox relay: publishes committed outbox messages to the bus and
//! marks them sent.
//!
//! Why it is at-least-once: a message is marked sent only after the bus
//! acknowledged it. A crash between the two publishes it again after the
//! restart — consumers dedupe on [`crate::EVENT_ID_HEADER`] (the SDK inbox).
//! A crash before the publish loses nothing: the row is still pending.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{EventStore, OutboxMessage, StoreError};

/// Where the relay publishes: the bus client, or anything else (tests).
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Publishes `messages` to `topic`, in order, durably; `Err` means
    /// "not published", and the relay will try again.
    async fn publish(&self, topic: &str, messages: Vec<OutboxMessage>) -> Result<(), String>;
}

#[async_trait]
impl Publisher for mortar_bus_client::Client {
    async fn publish(&self, topic: &str, messages: Vec<OutboxMessage>) -> Result<(), String> {
        let messages = messages
            .into_iter()
            .map(|m| mortar_bus_client::NewMessage {
                key: m.key,
                headers: m.headers,
                payload: m.payload.into(),
            })
            .collect();
        self.publish_batch(topic, messages)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// A relay round failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading or marking the outbox failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bus did not take a batch.
    #[error("publishing to {topic:?} failed: {problem}")]
    Publish {
        /// The topic.
        topic: String,
        /// What the publisher reported.
        problem: String,
    },
}

/// Publishes an event store's outbox; see the module docs.
pub struct OutboxRelay {
    store: Arc<dyn EventStore>,
    publisher: Arc<dyn Publisher>,
    batch: usize,
    poll: Duration,
}

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl OutboxRelay {
    /// A relay from `store` to `publisher`. It wakes on every commit made
    /// through this store handle, and polls (for commits by other processes).
    pub fn new(store: Arc<dyn EventStore>, publisher: Arc<dyn Publisher>) -> Self {
        OutboxRelay {
            store,
            publisher,
            batch: 512,
            poll: Duration::from_millis(200),
        }
    }

    /// How often to look for messages committed by other processes.
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Publishes what is pending now, oldest first, in runs of one topic;
    /// returns how many messages were published and marked sent.
    pub async fn run_once(&self) -> Result<usize, RelayError> {
        let pending = self.store.outbox_pending(self.batch).await?;
        let mut sent = 0;
        let mut rest = pending.as_slice();
        while let Some(first) = rest.first() {
            let run = rest
                .iter()
                .take_while(|p| p.message.topic == first.message.topic)
                .count();
            let (now, later) = rest.split_at(run);
            let topic = first.message.topic.clone();
            let messages = now.iter().map(|p| p.message.clone()).collect();
            self.publisher
                .publish(&topic, messages)
                .await
                .map_err(|problem| RelayError::Publish {
                    topic: topic.clone(),
                    problem,
                })?;
            let ids: Vec<i64> = now.iter().map(|p| p.id).collect();
            self.store.outbox_mark_sent(&ids).await?;
            sent += ids.len();
            rest = later;
        }
        Ok(sent)
    }

    /// Runs until `shutdown`: publishes, then sleeps until the next commit
    /// or the poll interval; backs off (up to 5 s) while publishing fails.
    pub fn spawn(self, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut head = self.store.watch_head();
            let mut backoff = Duration::from_millis(100);
            loop {
                match self.run_once().await {
                    Ok(n) if n >= self.batch => continue,
                    Ok(_) => backoff = Duration::from_millis(100),
                    Err(e) => {
                        tracing::warn!(error = %e, retry_ms = backoff.as_millis() as u64, "outbox relay round failed");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = head.changed() => {}
                    () = tokio::time::sleep(self.poll) => {}
                }
            }
        })
    }
}
