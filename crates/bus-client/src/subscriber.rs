//! Consuming with a handler: `Ok` acks, `Err` nacks with exponential
//! backoff, and credits keep at most `concurrency` messages in the service.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use mortar_bus_proto::{ErrorCode, Frame, Message};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, Inner, SubSpec, lock, nack_delay};
use crate::error::ClientError;
use crate::session::{Delivery, Reply, RequestError};

/// How long [`Subscription::stop`] waits for the broker's `Drained` before
/// it stops listening for deliveries anyway (a broker that lost the
/// subscription never answers); handlers already running still finish.
const DRAINED_WAIT: Duration = Duration::from_secs(30);

/// How long [`Subscription::stop`] waits for the broker to confirm it has
/// applied the acks before returning.
const BARRIER_WAIT: Duration = Duration::from_secs(10);

/// A running subscription; [`Subscription::stop`] drains it.
pub struct Subscription {
    /// The embedded broker's subscription id; `None` on NATS, where the
    /// task itself hands back what it did not start.
    sub_id: Option<u64>,
    inner: Arc<Inner>,
    stop: CancellationToken,
    /// Set by `stop`: handlers settle without topping credits up.
    draining: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("sub_id", &self.sub_id)
            .finish()
    }
}

impl Subscription {
    /// A draining stop, for scale-in and shutdown: asks the broker to send
    /// nothing more (`Drain`), stops granting credits, handles and acks
    /// every message already delivered — including those still on the
    /// wire, up to the broker's `Drained` — then unsubscribes. Nothing is
    /// left to go back to the group, so stopping causes no redelivery
    /// (unless the connection is lost meanwhile: then the broker gives the
    /// unacked messages to another member, as at-least-once delivery says).
    ///
    /// On NATS JetStream it stops pulling, waits for the handlers running
    /// now, and hands back what it had not started.
    pub async fn stop(mut self) {
        let Some(sub_id) = self.sub_id else {
            self.stop.cancel();
            let _ = self.task.await;
            return;
        };
        // Not re-subscribed by a reconnect from now on.
        lock(&self.inner.subs).remove(&sub_id);
        self.draining.store(true, Ordering::SeqCst);
        let session = self.inner.current();
        let asked = match &session {
            Some(session) => session.send(Frame::Drain { sub_id }).await,
            None => false,
        };
        if !asked {
            lock(&self.inner.deliveries).remove(&sub_id);
        }
        let lost = async {
            match &session {
                Some(session) => session.closed().cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut self.task => {}
            () = lost => {
                // Its deliveries are void; the broker redelivers them.
                lock(&self.inner.deliveries).remove(&sub_id);
                let _ = (&mut self.task).await;
            }
            () = tokio::time::sleep(DRAINED_WAIT) => {
                tracing::warn!(sub_id, "bus client: no Drained from the broker; finishing what was delivered");
                lock(&self.inner.deliveries).remove(&sub_id);
                let _ = (&mut self.task).await;
            }
        }
        if let Some(session) = self.inner.current() {
            session.send(Frame::Unsubscribe { sub_id }).await;
            // The acks are only queued for the socket: a process that exits
            // now could lose them, and the broker would give the messages
            // to another member. Once the broker answers a barrier it has
            // applied every ack and the unsubscribe.
            let barrier = session.barrier(self.inner.next_id());
            if tokio::time::timeout(BARRIER_WAIT, barrier).await.is_err() {
                tracing::warn!(
                    sub_id,
                    "bus client: the broker did not confirm the drained subscription's acks in time"
                );
            }
        }
    }
}

impl Client {
    /// Consumes `topic` as a member of `group`, running `handler` on up to
    /// `concurrency` messages at once. Survives reconnects. Fails at once if
    /// the broker refuses (e.g. unknown topic) while connected.
    pub async fn subscribe<F, Fut, E>(
        &self,
        topic: &str,
        group: &str,
        concurrency: usize,
        handler: F,
    ) -> Result<Subscription, ClientError>
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let inner = self.inner.clone();
        if let Some(nats) = &inner.nats {
            let (stop, task) =
                crate::nats::subscribe(nats.clone(), topic, group, concurrency, handler).await?;
            return Ok(Subscription {
                sub_id: None,
                inner,
                stop,
                draining: Arc::default(),
                task,
            });
        }
        let concurrency = concurrency.clamp(1, 10_000);
        let sub_id = inner.next_id();
        let spec = SubSpec {
            topic: topic.to_owned(),
            group: group.to_owned(),
            credits: concurrency as u32,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&inner.deliveries).insert(sub_id, tx);
        lock(&inner.subs).insert(sub_id, spec.clone());
        if let Some(session) = inner.current() {
            let frame = Frame::Subscribe {
                sub_id,
                topic: spec.topic,
                group: spec.group,
                credits: spec.credits,
            };
            match session.request(sub_id, frame).await {
                // The reconnect logic subscribed it first: fine.
                Ok(Reply::Refused(ErrorCode::InvalidRequest, _)) => {}
                Ok(Reply::Refused(code, message)) => {
                    lock(&inner.subs).remove(&sub_id);
                    lock(&inner.deliveries).remove(&sub_id);
                    return Err(ClientError::Broker { code, message });
                }
                Ok(_) | Err(RequestError::Disconnected) => {}
                Err(RequestError::Refused(e)) => {
                    lock(&inner.subs).remove(&sub_id);
                    lock(&inner.deliveries).remove(&sub_id);
                    return Err(e);
                }
            }
        }
        let stop = CancellationToken::new();
        let draining = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run_handlers(
            inner.clone(),
            sub_id,
            concurrency,
            rx,
            Arc::new(handler),
            draining.clone(),
        ));
        Ok(Subscription {
            sub_id: Some(sub_id),
            inner,
            stop,
            draining,
            task,
        })
    }
}

/// Most handler outcomes settled in one go (one `Ack` frame, one `Credit`).
const SETTLE_BATCH: usize = 1024;

/// One handler's outcome, for the subscription's settling loop.
struct Settled {
    id: u64,
    /// Why the handler failed, and the delivery attempt: nack. `None`: ack.
    failure: Option<(String, u32)>,
    /// The connection the message came on (see [`Delivery`]).
    delivered_on: Arc<CancellationToken>,
}

/// Runs the handlers of one subscription: each message in a task of its
/// own (handlers run in parallel, up to `concurrency`), their outcomes
/// settled together by this loop — every outcome ready at one moment goes
/// out as one `Ack` (or a `Nack` each) and one `Credit`, so a busy
/// consumer costs the writer and the broker a frame per batch, not two per
/// message.
async fn run_handlers<F, Fut, E>(
    inner: Arc<Inner>,
    sub_id: u64,
    concurrency: usize,
    mut rx: mpsc::UnboundedReceiver<Delivery>,
    handler: Arc<F>,
    draining: Arc<AtomicBool>,
) where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    // Runs until the delivery channel closes: at `Drained` (everything
    // delivered is queued by then), or when `stop` gives up on it.
    let slots = Arc::new(Semaphore::new(concurrency));
    let (settled_tx, mut settled_rx) = mpsc::unbounded_channel::<Settled>();
    let mut settled = Vec::with_capacity(SETTLE_BATCH);
    let shut_down = inner.shutdown.cancelled();
    tokio::pin!(shut_down);
    'receiving: loop {
        let (messages, delivered_on) = tokio::select! {
            biased;
            _ = &mut shut_down => break,
            _ = settled_rx.recv_many(&mut settled, SETTLE_BATCH) => {
                settle(&inner, sub_id, &draining, &mut settled).await;
                continue;
            }
            m = rx.recv() => match m { Some(m) => m, None => break },
        };
        let delivered_on = Arc::new(delivered_on);
        for message in messages {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break 'receiving;
            };
            let handler = handler.clone();
            let settled_tx = settled_tx.clone();
            let delivered_on = delivered_on.clone();
            let trace = crate::trace::context_of(&message);
            let topic = message.topic.clone();
            let (id, attempt) = (message.id, message.attempt);
            let traced = async move {
                // A panicking handler counts as a failure, not a lost message.
                let outcome = AssertUnwindSafe(handler(message)).catch_unwind().await;
                let failure = match outcome {
                    Ok(Ok(())) => None,
                    failed => {
                        let reason = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "the handler panicked".to_owned(),
                        };
                        tracing::warn!(
                            id,
                            attempt,
                            reason,
                            "bus client: handler failed; the message will be redelivered"
                        );
                        Some((reason, attempt))
                    }
                };
                let _ = settled_tx.send(Settled {
                    id,
                    failure,
                    delivered_on,
                });
                drop(slot);
            };
            tokio::spawn(async move {
                crate::trace::delivered(trace, &topic, id, attempt, traced).await;
            });
        }
    }
    // Wait for the handlers running now, then settle what they left.
    let _ = slots.acquire_many(concurrency as u32).await;
    drop(settled_tx);
    while settled_rx.recv_many(&mut settled, SETTLE_BATCH).await > 0 {
        settle(&inner, sub_id, &draining, &mut settled).await;
    }
}

/// Sends the outcomes in `settled` (emptied): the acks in one frame, a nack
/// each, and one credit per message whose connection is still the current
/// one — none while draining.
async fn settle(inner: &Inner, sub_id: u64, draining: &AtomicBool, settled: &mut Vec<Settled>) {
    let draining = draining.load(Ordering::SeqCst);
    let mut acks = Vec::with_capacity(settled.len());
    let mut frames = Vec::new();
    let mut credits = 0u32;
    for s in settled.drain(..) {
        if !draining && !s.delivered_on.is_cancelled() {
            credits += 1;
        }
        match s.failure {
            None => acks.push(s.id),
            Some((reason, attempt)) => frames.push(Frame::Nack {
                sub_id,
                ids: vec![s.id],
                delay_ms: nack_delay(attempt).as_millis() as u64,
                reason,
            }),
        }
    }
    if !acks.is_empty() {
        frames.insert(0, Frame::Ack { sub_id, ids: acks });
    }
    if credits > 0 {
        frames.push(Frame::Credit { sub_id, n: credits });
    }
    if let Some(session) = inner.current() {
        session.send_all(frames).await;
    }
}
