//! Consuming from JetStream with a handler, with the embedded broker's
//! semantics: `Ok` acks, `Err` nacks with an exponential delay, and a message
//! that used up its deliveries goes to `<topic>.dlq` instead of looping.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use futures::{FutureExt, StreamExt};
use mortar_bus_proto::dead_letter::{
    DLQ_HEADERS, HEADER_ATTEMPTS, HEADER_ORIGINAL_ID, HEADER_ORIGINAL_TOPIC, HEADER_REASON,
    dlq_topic,
};
use mortar_bus_proto::{ErrorCode, Message, NewMessage};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{NatsLink, names, to_message};
use crate::client::nack_delay;
use crate::error::ClientError;

/// Unacked messages one group may have at once, across all its members;
/// each member is bounded by its own `concurrency` on top.
const GROUP_MAX_ACK_PENDING: i64 = 100_000;

/// Starts consuming `topic` as a member of `group`. Returns the token that
/// stops it and the task to await; the task nacks (for immediate
/// redelivery) whatever it received but did not start.
pub(crate) async fn subscribe<F, Fut, E>(
    link: Arc<NatsLink>,
    topic: &str,
    group: &str,
    concurrency: usize,
    handler: F,
) -> Result<(CancellationToken, JoinHandle<()>), ClientError>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let consumer = durable_consumer(&link, topic, group).await?;
    let stop = CancellationToken::new();
    let member = Member {
        link,
        topic: topic.to_owned(),
        consumer,
        concurrency: concurrency.clamp(1, 10_000),
        handler: Arc::new(handler),
        stop: stop.clone(),
    };
    Ok((stop, tokio::spawn(member.run())))
}

/// The durable pull consumer of `group` on `topic`, created if missing.
pub(crate) async fn durable_consumer(
    link: &NatsLink,
    topic: &str,
    group: &str,
) -> Result<consumer::PullConsumer, ClientError> {
    super::check_name("group", group)?;
    let stream = link
        .js
        .get_stream(names::stream(topic))
        .await
        .map_err(|e| ClientError::Broker {
            code: ErrorCode::UnknownTopic,
            message: format!(
                "topic {topic:?} does not exist on {} ({e}); create it first",
                link.url
            ),
        })?;
    let durable = names::durable(group);
    stream
        .get_or_create_consumer(
            &durable,
            consumer::pull::Config {
                durable_name: Some(durable.clone()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: link.ack_deadline,
                // Unlimited here: the client dead-letters after max_deliveries,
                // which JetStream's own limit would not do.
                max_deliver: -1,
                max_ack_pending: GROUP_MAX_ACK_PENDING,
                filter_subject: names::subject(topic),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| ClientError::Broker {
            code: ErrorCode::Unavailable,
            message: format!(
                "cannot create consumer {group:?} of topic {topic:?} on {}: {e}",
                link.url
            ),
        })
}

struct Member<F> {
    link: Arc<NatsLink>,
    topic: String,
    consumer: consumer::PullConsumer,
    concurrency: usize,
    handler: Arc<F>,
    stop: CancellationToken,
}

impl<F, Fut, E> Member<F>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    async fn run(self) {
        let slots = Arc::new(Semaphore::new(self.concurrency));
        'pulling: while !self.stop.is_cancelled() {
            let pulled = self
                .consumer
                .stream()
                .max_messages_per_batch(self.concurrency)
                .messages()
                .await;
            let mut messages = match pulled {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(topic = %self.topic, %error, "bus client: cannot pull from JetStream; retrying");
                    self.pause(Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    _ = self.stop.cancelled() => break 'pulling,
                    next = messages.next() => next,
                };
                let message = match next {
                    Some(Ok(message)) => message,
                    Some(Err(error)) => {
                        tracing::debug!(topic = %self.topic, %error, "bus client: JetStream pull interrupted");
                        continue;
                    }
                    None => continue 'pulling,
                };
                let slot = tokio::select! {
                    _ = self.stop.cancelled() => {
                        // Received but never started: straight back to the group.
                        let _ = message.ack_with(AckKind::Nak(None)).await;
                        break 'pulling;
                    }
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break 'pulling,
                    },
                };
                let (link, topic, handler) =
                    (self.link.clone(), self.topic.clone(), self.handler.clone());
                tokio::spawn(async move {
                    settle(&link, &topic, message, handler.as_ref()).await;
                    drop(slot);
                });
            }
        }
        // Wait for the handlers running now.
        let _ = slots.acquire_many(self.concurrency as u32).await;
    }

    async fn pause(&self, d: Duration) {
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = tokio::time::sleep(d) => {}
        }
    }
}

/// Runs the handler on one message and acks, nacks or dead-letters it.
async fn settle<F, Fut, E>(link: &NatsLink, topic: &str, message: jetstream::Message, handler: &F)
where
    F: Fn(Message) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let Some(delivered) = to_message(topic, &message) else {
        tracing::warn!(
            topic,
            "bus client: a JetStream delivery without metadata; leaving it to redelivery"
        );
        return;
    };
    let attempt = delivered.attempt;
    if attempt > link.max_deliveries {
        // Earlier deliveries ran past their ack deadline every time.
        let delivered = Message {
            attempt: attempt - 1,
            ..delivered
        };
        dead_letter(link, topic, &message, delivered, "ack deadline exceeded").await;
        return;
    }
    let id = delivered.id;
    let trace = crate::trace::context_of(&delivered);
    let outcome = crate::trace::delivered(
        trace,
        topic,
        id,
        attempt,
        AssertUnwindSafe(handler(delivered.clone())).catch_unwind(),
    )
    .await;
    let reason = match outcome {
        Ok(Ok(())) => {
            if let Err(error) = message.ack().await {
                tracing::warn!(topic, id, %error, "bus client: ack failed; the message will be redelivered");
            }
            return;
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => "the handler panicked".to_owned(),
    };
    if attempt >= link.max_deliveries {
        dead_letter(link, topic, &message, delivered, &reason).await;
        return;
    }
    tracing::warn!(
        topic,
        id,
        attempt,
        reason,
        "bus client: handler failed; the message will be redelivered"
    );
    let _ = message
        .ack_with(AckKind::Nak(Some(nack_delay(attempt))))
        .await;
}

/// Copies the message to the dead-letter topic with the reason, then acks
/// the original (only once the copy is stored: at-least-once).
pub(super) async fn dead_letter(
    link: &NatsLink,
    topic: &str,
    original: &jetstream::Message,
    delivered: Message,
    reason: &str,
) {
    let mut headers: Vec<(String, String)> = delivered
        .headers
        .into_iter()
        .filter(|(n, _)| !DLQ_HEADERS.iter().any(|d| n.eq_ignore_ascii_case(d)))
        .collect();
    headers.push((HEADER_REASON.into(), reason.into()));
    headers.push((HEADER_ATTEMPTS.into(), delivered.attempt.to_string()));
    headers.push((HEADER_ORIGINAL_TOPIC.into(), topic.into()));
    headers.push((HEADER_ORIGINAL_ID.into(), delivered.id.to_string()));
    let copy = NewMessage {
        key: delivered.key,
        headers,
        payload: delivered.payload,
    };
    match link.publish_one(&dlq_topic(topic), copy).await {
        Ok(_) => {
            tracing::warn!(
                topic,
                id = delivered.id,
                reason,
                "bus client: message dead-lettered"
            );
            let _ = original.ack_with(AckKind::Term).await;
        }
        Err(_) => {
            tracing::error!(
                topic,
                id = delivered.id,
                "bus client: cannot dead-letter; it will be redelivered"
            );
            let _ = original
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
        }
    }
}
