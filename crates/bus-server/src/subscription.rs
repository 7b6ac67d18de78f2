//! One subscription of a connection: a task that pulls from the broker as
//! long as the client has credits, and forwards acks and nacks.

use std::sync::Arc;
use std::time::Duration;

use mortar_bus::Broker;
use mortar_bus_proto::{Frame, Message};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::convert::{error_code, to_wire};

/// How long one broker fetch waits for messages before the task re-checks.
const LONG_POLL: Duration = Duration::from_secs(5);

/// Messages asked of the broker per fetch at most.
const MAX_FETCH: usize = 256;

/// Bytes reserved per message for everything besides the payload's variable
/// fields when packing `Deliver` frames.
const PER_MESSAGE_OVERHEAD: usize = 64;

/// A running subscription.
pub(crate) struct Subscription {
    broker: Broker,
    topic: String,
    group: String,
    consumer: String,
    sub_id: u64,
    credits: Arc<Semaphore>,
    tx: mpsc::Sender<Frame>,
    stop: CancellationToken,
    /// Cancelled by `Drain`: the puller takes nothing more.
    drain: CancellationToken,
    /// The puller, until it has been waited for (by a drain or the stop).
    task: Option<JoinHandle<()>>,
}

impl Subscription {
    /// Starts pulling for a subscription the broker has accepted.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        broker: Broker,
        sub_id: u64,
        topic: String,
        group: String,
        consumer: String,
        credits: u32,
        max_frame: usize,
        tx: mpsc::Sender<Frame>,
    ) -> Self {
        let credits = Arc::new(Semaphore::new(credits as usize));
        let stop = CancellationToken::new();
        let drain = CancellationToken::new();
        let puller = Puller {
            drain: drain.clone(),
            broker: broker.clone(),
            sub_id,
            topic: topic.clone(),
            group: group.clone(),
            consumer: consumer.clone(),
            credits: credits.clone(),
            tx: tx.clone(),
            stop: stop.clone(),
            frame_budget: max_frame.saturating_sub(mortar_bus_proto::FRAME_OVERHEAD_BYTES / 2),
        };
        let task = tokio::spawn(puller.run());
        Subscription {
            broker,
            topic,
            group,
            consumer,
            sub_id,
            credits,
            tx,
            stop,
            drain,
            task: Some(task),
        }
    }

    /// Stops taking messages for this subscription and answers `Drained`
    /// once every `Deliver` for it has been queued (the puller sends on the
    /// same queue, so `Drained` follows the last of them). What was
    /// delivered stays in flight for the client to ack; credits are ignored
    /// from now on.
    pub(crate) async fn drain(&mut self) {
        self.drain.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let _ = self
            .tx
            .send(Frame::Drained {
                sub_id: self.sub_id,
            })
            .await;
    }

    /// Lets the server send `n` more messages.
    pub(crate) fn add_credits(&self, n: u32) {
        let room = Semaphore::MAX_PERMITS.saturating_sub(self.credits.available_permits());
        self.credits.add_permits((n as usize).min(room));
    }

    /// Acks (an in-memory update, so it runs inline); a failure is reported
    /// to the client.
    pub(crate) async fn ack(&self, ids: Vec<u64>) {
        if let Err(e) = self.broker.ack(&self.topic, &self.group, &ids).await {
            let _ = self
                .tx
                .send(Frame::error(self.sub_id, error_code(&e), e.to_string()))
                .await;
        }
    }

    /// Nacks in the background; a failure is reported to the client.
    pub(crate) fn nack(&self, ids: Vec<u64>, delay: Option<Duration>, reason: String) {
        let (broker, topic, group, tx, sub_id) = self.parts();
        tokio::spawn(async move {
            if let Err(e) = broker.nack(&topic, &group, &ids, delay, &reason).await {
                let _ = tx
                    .send(Frame::error(sub_id, error_code(&e), e.to_string()))
                    .await;
            }
        });
    }

    fn parts(&self) -> (Broker, String, String, mpsc::Sender<Frame>, u64) {
        (
            self.broker.clone(),
            self.topic.clone(),
            self.group.clone(),
            self.tx.clone(),
            self.sub_id,
        )
    }

    /// Stops pulling and gives this consumer's un-acked messages back to the
    /// group, so another member gets them at once.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        if let Some(task) = self.task {
            let _ = task.await;
        }
        self.broker
            .release(&self.topic, &self.group, &self.consumer)
            .await;
    }
}

/// The pulling task's state.
struct Puller {
    broker: Broker,
    sub_id: u64,
    topic: String,
    group: String,
    consumer: String,
    credits: Arc<Semaphore>,
    tx: mpsc::Sender<Frame>,
    stop: CancellationToken,
    drain: CancellationToken,
    frame_budget: usize,
}

impl Puller {
    async fn run(self) {
        loop {
            let first = tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = self.drain.cancelled() => return,
                permit = self.credits.acquire() => match permit {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            first.forget();
            let extra = self.credits.available_permits().min(MAX_FETCH - 1);
            let extra = match u32::try_from(extra)
                .ok()
                .and_then(|n| self.credits.try_acquire_many(n).ok())
            {
                Some(p) => {
                    p.forget();
                    extra
                }
                None => 0,
            };
            let want = 1 + extra;
            // Not raced against `drain`: dropping a fetch could lose
            // messages it already reserved; `fetch_unless` returns empty
            // instead, and only while it holds none.
            let fetched = tokio::select! {
                _ = self.stop.cancelled() => return,
                r = self.broker.fetch_unless(
                    &self.topic, &self.group, &self.consumer, want, LONG_POLL,
                    self.drain.cancelled(),
                ) => r,
            };
            match fetched {
                Ok(messages) => {
                    if messages.len() < want {
                        self.credits.add_permits(want - messages.len());
                    }
                    if !self.deliver(messages).await || self.drain.is_cancelled() {
                        return;
                    }
                }
                Err(e) => {
                    self.credits.add_permits(want);
                    tracing::warn!(topic = %self.topic, group = %self.group, error = %e, "bus: fetch failed");
                    let frame = Frame::error(self.sub_id, error_code(&e), e.to_string());
                    if self.tx.send(frame).await.is_err() {
                        return;
                    }
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = self.drain.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    /// Sends messages in `Deliver` frames that fit the frame limit; false
    /// once the connection is gone.
    async fn deliver(&self, messages: Vec<mortar_bus::Message>) -> bool {
        let mut batch: Vec<Message> = Vec::new();
        let mut bytes = 0usize;
        for m in messages.into_iter().map(to_wire) {
            let size = message_size(&m);
            if !batch.is_empty() && bytes + size > self.frame_budget {
                if !self.send(std::mem::take(&mut batch)).await {
                    return false;
                }
                bytes = 0;
            }
            bytes += size;
            batch.push(m);
        }
        batch.is_empty() || self.send(batch).await
    }

    async fn send(&self, messages: Vec<Message>) -> bool {
        let frame = Frame::Deliver {
            sub_id: self.sub_id,
            messages,
        };
        self.tx.send(frame).await.is_ok()
    }
}

fn message_size(m: &Message) -> usize {
    PER_MESSAGE_OVERHEAD
        + m.topic.len()
        + m.key.as_ref().map_or(0, String::len)
        + m.headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum::<usize>()
        + m.payload.len()
}
