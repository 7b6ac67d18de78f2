//! One live connection to the broker: handshake, a reader task that routes
//! answers to their requests and deliveries to their subscriptions, and a
//! writer task that owns the socket's write half.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use mortar_bus_proto::{
    BusCodec, ErrorCode, Frame, Hello, Message, NewMessage, PROTOCOL_VERSION, max_frame_bytes,
};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Framed, FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use crate::coalesce::{MergedPublish, coalesce};
use crate::error::ClientError;

/// Frames queued for the writer before senders wait.
const WRITE_QUEUE: usize = 1024;

/// Most queued frames the writer takes at once to merge and write together.
const MAX_FRAMES_PER_WRITE: usize = 512;

/// Longest an ack or a credit waits for other frames to share its write.
/// An ack that waits only delays the end of the broker's deadline for that
/// message, and a credit only matters once a consumer's window is used up;
/// a millisecond (the timer's resolution) is far below both, and turns a
/// write per ack into a write per few hundred under load.
const SETTLE_LINGER: Duration = Duration::from_millis(1);

/// How often a session pings the broker.
const PING_EVERY: Duration = Duration::from_secs(5);

/// A broker silent this long (not even a `Pong`) is gone: the session is
/// dropped and the client reconnects, instead of waiting forever on a
/// half-open TCP connection (a pulled cable, a frozen host).
const SILENCE_LIMIT: Duration = Duration::from_secs(15);

/// Frame limit before the broker has told its own (handshake frames are small).
const HANDSHAKE_FRAME_BYTES: usize = 64 * 1024;

/// What a request got back.
#[derive(Debug)]
pub(crate) enum Reply {
    /// `PublishOk`.
    Published(Vec<u64>),
    /// `CreateTopicOk` or `SubscribeOk`.
    Done,
    /// `Error`.
    Refused(ErrorCode, String),
}

/// Why a request did not get a reply.
#[derive(Debug)]
pub(crate) enum RequestError {
    /// The connection went away; the request may or may not have taken effect.
    Disconnected,
    /// The broker answered with an error, or the frame could not be sent.
    Refused(ClientError),
}

/// The messages of one `Deliver` frame with the token of the connection
/// they came on: once that connection is gone their credits are void (the
/// re-subscription starts with fresh ones), so settling them must not top
/// credits up. One hand-off per frame, not per message.
pub(crate) type Delivery = (Vec<Message>, CancellationToken);

/// Where a subscription's deliveries go.
pub(crate) type Deliveries = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Delivery>>>>;

/// Requests waiting for an answer, and the publishes the writer merged
/// (whose answer is split among their parts).
#[derive(Debug, Default)]
struct Waiting {
    replies: HashMap<u64, oneshot::Sender<Reply>>,
    merged: HashMap<u64, MergedPublish>,
}

impl Waiting {
    /// Hands `reply` to the request `id` — or, for a merged publish, to each
    /// of its parts. False if nobody waits for `id`.
    fn answer(&mut self, id: u64, reply: Reply) -> bool {
        let Some(parts) = self.merged.remove(&id) else {
            return match self.replies.remove(&id) {
                Some(waiter) => {
                    let _ = waiter.send(reply);
                    true
                }
                None => false,
            };
        };
        let total: usize = parts.iter().map(|(_, n)| n).sum();
        let mut ids = match reply {
            Reply::Published(ids) if ids.len() == total => Some(ids.into_iter()),
            Reply::Published(ids) => {
                let message = format!(
                    "the broker acknowledged {} ids for a publish of {total} messages",
                    ids.len()
                );
                return self.fail_parts(&parts, ErrorCode::Internal, message);
            }
            Reply::Refused(code, message) => return self.fail_parts(&parts, code, message),
            Reply::Done => None,
        };
        for (part, count) in parts {
            if let Some(waiter) = self.replies.remove(&part) {
                let reply = match ids.as_mut() {
                    Some(ids) => Reply::Published(ids.by_ref().take(count).collect()),
                    None => Reply::Done,
                };
                let _ = waiter.send(reply);
            }
        }
        true
    }

    fn fail_parts(&mut self, parts: &[(u64, usize)], code: ErrorCode, message: String) -> bool {
        for (part, _) in parts {
            if let Some(waiter) = self.replies.remove(part) {
                let _ = waiter.send(Reply::Refused(code, message.clone()));
            }
        }
        true
    }
}

type Pending = Arc<Mutex<Waiting>>;

/// A connected, handshaken session.
#[derive(Debug)]
pub(crate) struct Session {
    tx: mpsc::Sender<Frame>,
    pending: Pending,
    closed: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Session {
    /// Connects and handshakes.
    pub(crate) async fn connect(
        authority: &str,
        name: &str,
        token: &str,
        deliveries: Deliveries,
    ) -> Result<Arc<Session>, ClientError> {
        let unavailable = |reason: String| ClientError::Unavailable {
            url: format!("mortar://{authority}"),
            reason,
        };
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let mut framed = Framed::new(stream, BusCodec::new(HANDSHAKE_FRAME_BYTES));
        framed
            .send(Frame::Hello(Hello::new(name, token)))
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let max_message_bytes = match framed.next().await {
            Some(Ok(Frame::HelloOk {
                version,
                max_message_bytes,
            })) if version == PROTOCOL_VERSION => max_message_bytes,
            Some(Ok(Frame::HelloOk { version, .. })) => {
                return Err(ClientError::Handshake {
                    code: ErrorCode::UnsupportedVersion,
                    message: format!(
                        "the broker answered version {version}; this client speaks {PROTOCOL_VERSION}"
                    ),
                });
            }
            Some(Ok(Frame::Error { code, message, .. })) => {
                return Err(ClientError::Handshake { code, message });
            }
            Some(Ok(other)) => {
                return Err(ClientError::Handshake {
                    code: ErrorCode::BadHandshake,
                    message: format!("expected HelloOk, got {:?}", other.frame_type()),
                });
            }
            Some(Err(e)) => return Err(unavailable(e.to_string())),
            None => return Err(unavailable("the broker closed the connection".to_owned())),
        };
        let codec = BusCodec::new(max_frame_bytes(max_message_bytes as usize));
        // Separate halves: a `FramedWrite` encodes at `feed`, so a frame that
        // cannot be encoded fails its own request, not the connection.
        let parts = framed.into_parts();
        let (read, write) = parts.io.into_split();
        let mut stream = FramedRead::new(read, codec.clone());
        stream.read_buffer_mut().extend_from_slice(&parts.read_buf);
        let sink = FramedWrite::new(write, codec);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let pending: Pending = Arc::default();
        let closed = CancellationToken::new();
        tokio::spawn(write_frames(
            sink,
            rx,
            pending.clone(),
            max_message_bytes as usize,
            closed.clone(),
        ));
        let heard = Arc::new(Heard::new());
        tokio::spawn(read_frames(
            stream,
            tx.clone(),
            pending.clone(),
            deliveries,
            heard.clone(),
            closed.clone(),
        ));
        tokio::spawn(keepalive(tx.clone(), heard, closed.clone()));
        Ok(Arc::new(Session {
            tx,
            pending,
            closed,
        }))
    }

    /// Cancelled when the connection is gone.
    pub(crate) fn closed(&self) -> &CancellationToken {
        &self.closed
    }

    /// Sends a frame that expects no answer; false when disconnected.
    pub(crate) async fn send(&self, frame: Frame) -> bool {
        !self.closed.is_cancelled() && self.tx.send(frame).await.is_ok()
    }

    /// Sends frames that expect no answer, queued together (one wait for
    /// room in the queue instead of one per frame); false when disconnected.
    pub(crate) async fn send_all(&self, frames: Vec<Frame>) -> bool {
        if self.closed.is_cancelled() {
            return false;
        }
        match self.tx.reserve_many(frames.len()).await {
            Ok(permits) => {
                for (permit, frame) in permits.zip(frames) {
                    permit.send(frame);
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Sends a request frame whose id is `id` and waits for its answer.
    pub(crate) async fn request(&self, id: u64, frame: Frame) -> Result<Reply, RequestError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        lock(&self.pending).replies.insert(id, reply_tx);
        if self.closed.is_cancelled() || self.tx.send(frame).await.is_err() {
            lock(&self.pending).replies.remove(&id);
            return Err(RequestError::Disconnected);
        }
        // When the connection goes, the reader drops every waiting sender
        // (it cancels `closed` first, and the insert above is checked against
        // `closed` after it), so this never waits for an answer that cannot come.
        reply_rx.await.map_err(|_| RequestError::Disconnected)
    }

    /// Waits until the broker has processed every frame sent before this
    /// call: it answers a `Ping` in order, after them. `id` must be unique
    /// among this session's requests; the nonce has its top bit set so a
    /// keepalive pong (small nonces) never answers it.
    pub(crate) async fn barrier(&self, id: u64) -> bool {
        let nonce = id | (1 << 63);
        matches!(
            self.request(nonce, Frame::Ping { nonce }).await,
            Ok(Reply::Done)
        )
    }

    /// Publishes a batch and waits until it is durable.
    pub(crate) async fn publish(
        &self,
        request_id: u64,
        topic: &str,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<u64>, RequestError> {
        let count = messages.len();
        let frame = Frame::Publish {
            request_id,
            topic: topic.to_owned(),
            messages,
        };
        match self.request(request_id, frame).await? {
            Reply::Published(ids) => Ok(ids),
            Reply::Refused(ErrorCode::FrameTooLarge, reason) => {
                Err(RequestError::Refused(ClientError::BatchTooLarge {
                    messages: count,
                    reason,
                }))
            }
            Reply::Refused(code, message) => {
                Err(RequestError::Refused(ClientError::Broker { code, message }))
            }
            Reply::Done => Err(RequestError::Refused(ClientError::Broker {
                code: ErrorCode::Internal,
                message: "the broker answered a publish with the wrong frame".to_owned(),
            })),
        }
    }
}

type Sink = FramedWrite<OwnedWriteHalf, BusCodec>;
type Stream = FramedRead<OwnedReadHalf, BusCodec>;

/// The id a request frame carries, to fail it if it cannot be encoded.
fn request_id(frame: &Frame) -> Option<u64> {
    match frame {
        Frame::Publish { request_id, .. } | Frame::CreateTopic { request_id, .. } => {
            Some(*request_id)
        }
        Frame::Subscribe { sub_id, .. } => Some(*sub_id),
        _ => None,
    }
}

/// Writes what is queued, merged (see [`coalesce`]), flushing whenever the
/// queue runs dry — except when all that waits is acks and credits: those
/// are flushed within [`SETTLE_LINGER`], so a busy consumer's acks share a
/// write instead of costing a system call (and a broker read) each. A
/// publish, a request, a nack or anything else flushes at once, together
/// with every ack queued before it.
async fn write_frames(
    mut sink: Sink,
    mut rx: mpsc::Receiver<Frame>,
    pending: Pending,
    max_message_bytes: usize,
    closed: CancellationToken,
) {
    let mut queued = Vec::with_capacity(MAX_FRAMES_PER_WRITE);
    // One cancellation future for the whole loop, not one per batch.
    let cancelled = closed.cancelled();
    tokio::pin!(cancelled);
    // When the acks and credits written but not yet flushed must go: one
    // timer for the whole loop, reset when a linger starts.
    let mut flush_by: Option<tokio::time::Instant> = None;
    let linger = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(linger);
    // Written and not flushed: something that must go when the queue runs dry.
    let mut urgent = false;
    'writing: loop {
        let received = tokio::select! {
            biased;
            _ = &mut cancelled => 0,
            n = rx.recv_many(&mut queued, MAX_FRAMES_PER_WRITE) => n,
            () = &mut linger, if flush_by.is_some() => {
                flush_by = None;
                urgent = false;
                if SinkExt::<Frame>::flush(&mut sink).await.is_err() {
                    break;
                }
                continue;
            }
        };
        if received == 0 {
            break;
        }
        urgent |= queued.iter().any(|f| !is_settlement(f));
        let batch = coalesce(std::mem::take(&mut queued), max_message_bytes);
        lock(&pending).merged.extend(batch.merged);
        for frame in batch.frames {
            let id = request_id(&frame);
            match sink.feed(frame).await {
                Ok(()) => {}
                Err(mortar_bus_proto::CodecError::Io(e)) => {
                    tracing::debug!(error = %e, "bus client: write failed");
                    break 'writing;
                }
                Err(e) => {
                    // This frame cannot be sent (too large): fail its request only.
                    if let Some(id) = id {
                        lock(&pending)
                            .answer(id, Reply::Refused(ErrorCode::FrameTooLarge, e.to_string()));
                    }
                }
            }
        }
        // A steady stream of acks keeps the queue busy: they still go by
        // their deadline.
        let due = flush_by.is_some_and(|by| tokio::time::Instant::now() >= by);
        if (urgent && rx.is_empty()) || due {
            flush_by = None;
            urgent = false;
            if SinkExt::<Frame>::flush(&mut sink).await.is_err() {
                break;
            }
        } else if !urgent && flush_by.is_none() {
            let by = tokio::time::Instant::now() + SETTLE_LINGER;
            linger.as_mut().reset(by);
            flush_by = Some(by);
        }
    }
    closed.cancel();
    let _ = SinkExt::<Frame>::close(&mut sink).await;
}

/// Acks and credits: they may wait [`SETTLE_LINGER`] for company.
fn is_settlement(frame: &Frame) -> bool {
    matches!(frame, Frame::Ack { .. } | Frame::Credit { .. })
}

/// When the broker was last heard from, as milliseconds since the session began.
struct Heard {
    start: Instant,
    last_ms: AtomicU64,
}

impl Heard {
    fn new() -> Self {
        Heard {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn now(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn silence(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Pings the broker every [`PING_EVERY`]; cancels the session once the
/// broker has been silent for [`SILENCE_LIMIT`].
async fn keepalive(tx: mpsc::Sender<Frame>, heard: Arc<Heard>, closed: CancellationToken) {
    let mut nonce = 0u64;
    loop {
        tokio::select! {
            _ = closed.cancelled() => return,
            _ = tokio::time::sleep(PING_EVERY) => {}
        }
        let silence = heard.silence();
        if silence >= SILENCE_LIMIT {
            tracing::warn!(
                ?silence,
                "bus client: the broker stopped answering; reconnecting"
            );
            closed.cancel();
            return;
        }
        nonce += 1;
        if tx.try_send(Frame::Ping { nonce }).is_err() && tx.is_closed() {
            return;
        }
    }
}

async fn read_frames(
    mut stream: Stream,
    tx: mpsc::Sender<Frame>,
    pending: Pending,
    deliveries: Deliveries,
    heard: Arc<Heard>,
    closed: CancellationToken,
) {
    let cancelled = closed.clone().cancelled_owned();
    tokio::pin!(cancelled);
    loop {
        let next = tokio::select! {
            _ = &mut cancelled => break,
            n = stream.next() => n,
        };
        let frame = match next {
            None => break,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "bus client: bad frame from the broker; reconnecting");
                break;
            }
            Some(Ok(f)) => f,
        };
        heard.now();
        let answer = |id: u64, reply: Reply| lock(&pending).answer(id, reply);
        match frame {
            Frame::PublishOk { request_id, ids } => {
                answer(request_id, Reply::Published(ids));
            }
            Frame::CreateTopicOk { request_id } => {
                answer(request_id, Reply::Done);
            }
            Frame::SubscribeOk { sub_id } => {
                answer(sub_id, Reply::Done);
            }
            Frame::Error {
                request_id,
                code,
                message,
            } => {
                if !answer(request_id, Reply::Refused(code, message.clone())) {
                    tracing::warn!(request_id, %code, message, "bus client: the broker reported an error");
                }
                if request_id == 0
                    && matches!(code, ErrorCode::MalformedFrame | ErrorCode::FrameTooLarge)
                {
                    break;
                }
            }
            Frame::Deliver { sub_id, messages } => {
                let target = lock(&deliveries).get(&sub_id).cloned();
                match target {
                    Some(target) => {
                        let _ = target.send((messages, closed.clone()));
                    }
                    None => {
                        tracing::debug!(sub_id, "bus client: delivery for a stopped subscription")
                    }
                }
            }
            Frame::Drained { sub_id } => {
                // Nothing more comes for it: closing its channel lets the
                // handlers finish what is queued and then end.
                lock(&deliveries).remove(&sub_id);
            }
            Frame::Ping { nonce } => {
                let _ = tx.send(Frame::Pong { nonce }).await;
            }
            Frame::Pong { nonce } => {
                // A barrier's answer (see `Session::barrier`); keepalive
                // pongs have nobody waiting.
                answer(nonce, Reply::Done);
            }
            _ => {}
        }
    }
    closed.cancel();
    // Fail every waiting request: their answers will never come.
    *lock(&pending) = Waiting::default();
}
