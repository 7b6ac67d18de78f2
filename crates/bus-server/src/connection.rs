//! One client connection: the handshake, a reader that dispatches frames and
//! a writer task that owns the socket's write half.
//!
//! Publishes are pipelined: each runs as its own task and is answered when
//! the broker's group commit returns, so concurrent publishes share an fsync.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use mortar_bus::Broker;
use mortar_bus_proto::{
    BusCodec, CodecError, ErrorCode, Frame, Hello, MAGIC, PROTOCOL_VERSION, max_frame_bytes,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use crate::convert::{error_code, to_bus};
use crate::serve::ServerOptions;
use crate::subscription::Subscription;

/// Frames queued for the writer before senders wait.
const WRITE_QUEUE: usize = 1024;

/// A connection before it runs.
pub(crate) struct Connection {
    pub(crate) id: u64,
    pub(crate) peer: SocketAddr,
    pub(crate) broker: Broker,
    pub(crate) options: ServerOptions,
    pub(crate) shutdown: CancellationToken,
}

impl Connection {
    /// Runs the connection to its end; errors are logged, never propagated,
    /// so one bad client cannot affect another.
    pub(crate) async fn run(self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let max_frame = max_frame_bytes(self.options.max_message_bytes);
        let (read, write) = stream.into_split();
        let mut reader = FramedRead::new(read, BusCodec::new(max_frame));
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let writer = tokio::spawn(write_frames(
            FramedWrite::new(write, BusCodec::new(max_frame)),
            rx,
        ));

        let (client, token) = match self.handshake(&mut reader, &tx).await {
            Some(hello) => hello,
            None => {
                drop(tx);
                let _ = writer.await;
                linger(reader.into_inner()).await;
                return;
            }
        };
        tracing::debug!(conn = self.id, peer = %self.peer, client, "bus: client connected");

        let closing = self.read_loop(&mut reader, &tx, &client, &token).await;
        drop(tx);
        let _ = writer.await;
        if closing {
            linger(reader.into_inner()).await;
        }
        tracing::debug!(conn = self.id, client, "bus: client disconnected");
    }

    /// Reads `Hello` and answers it; the client's name and token, or `None`
    /// when the connection must close.
    async fn handshake(
        &self,
        reader: &mut FramedRead<OwnedReadHalf, BusCodec>,
        tx: &mpsc::Sender<Frame>,
    ) -> Option<(String, String)> {
        let first = tokio::select! {
            _ = self.shutdown.cancelled() => return None,
            f = tokio::time::timeout(self.options.handshake_timeout, reader.next()) => f,
        };
        let refuse = |code, message: String| {
            tracing::info!(conn = self.id, peer = %self.peer, %code, message, "bus: handshake refused");
            Frame::error(0, code, message)
        };
        let answer = match first {
            Err(_) => refuse(
                ErrorCode::BadHandshake,
                format!(
                    "no Hello frame within {:?}; send Hello first",
                    self.options.handshake_timeout
                ),
            ),
            Ok(None) | Ok(Some(Err(CodecError::Io(_)))) => return None,
            Ok(Some(Err(e))) => refuse(decode_error_code(&e), e.to_string()),
            Ok(Some(Ok(Frame::Hello(Hello {
                magic,
                version,
                client_name,
                token,
            })))) => {
                let allowed = self
                    .options
                    .authenticate
                    .as_ref()
                    .is_none_or(|check| (check.0)(&token));
                if magic != MAGIC {
                    refuse(
                        ErrorCode::BadHandshake,
                        format!("bad magic {magic:?}; a mortar bus Hello starts with \"MRTR\""),
                    )
                } else if version != PROTOCOL_VERSION {
                    refuse(
                        ErrorCode::UnsupportedVersion,
                        format!(
                            "protocol version {version} is not supported; this server speaks version {PROTOCOL_VERSION}"
                        ),
                    )
                } else if !allowed {
                    refuse(
                        ErrorCode::Unauthorized,
                        if token.is_empty() {
                            "no credentials: send the token the node issued (MORTAR_BUS_TOKEN) in Hello".to_owned()
                        } else {
                            "the token in Hello is not one this node issued (or it was revoked)"
                                .to_owned()
                        },
                    )
                } else if let Some(refused) =
                    self.options.gate.as_ref().and_then(|g| g.refusal(&token))
                {
                    refuse(ErrorCode::Unavailable, refused.reason)
                } else {
                    let ok = Frame::HelloOk {
                        version: PROTOCOL_VERSION,
                        max_message_bytes: u32::try_from(self.options.max_message_bytes)
                            .unwrap_or(u32::MAX),
                    };
                    return tx.send(ok).await.ok().map(|()| (client_name, token));
                }
            }
            Ok(Some(Ok(other))) => refuse(
                ErrorCode::BadHandshake,
                format!(
                    "the first frame must be Hello, got {:?}",
                    other.frame_type()
                ),
            ),
        };
        let _ = tx.send(answer).await;
        None
    }

    /// Dispatches frames until the peer leaves, a frame is bad, or shutdown.
    /// Returns whether the server is closing on the peer (after an error).
    async fn read_loop(
        &self,
        reader: &mut FramedRead<OwnedReadHalf, BusCodec>,
        tx: &mpsc::Sender<Frame>,
        client: &str,
        token: &str,
    ) -> bool {
        // A gate that never closes when there is none.
        let mut gate = self.options.gate.as_ref().map(|g| (g.clone(), g.watch()));
        let in_flight = Arc::new(Semaphore::new(self.options.max_in_flight_publishes));
        let mut subs: HashMap<u64, Subscription> = HashMap::new();
        let consumer_prefix = consumer_prefix(client, self.id);
        let max_frame = max_frame_bytes(self.options.max_message_bytes);
        let shutdown = self.shutdown.cancelled();
        tokio::pin!(shutdown);
        let closing = loop {
            let next = tokio::select! {
                _ = &mut shutdown => break false,
                refused = gate_closes(&mut gate, token) => {
                    tracing::info!(conn = self.id, client, reason = %refused.reason, "bus: dropping the connection");
                    let _ = tx.send(Frame::error(0, ErrorCode::Unavailable, refused.reason)).await;
                    break true;
                }
                next = reader.next() => next,
            };
            let frame = match next {
                None | Some(Err(CodecError::Io(_))) => break false,
                Some(Err(e)) => {
                    tracing::info!(conn = self.id, peer = %self.peer, error = %e, "bus: bad frame, closing the connection");
                    let _ = tx
                        .send(Frame::error(0, decode_error_code(&e), e.to_string()))
                        .await;
                    break true;
                }
                Some(Ok(frame)) => frame,
            };
            match frame {
                Frame::Publish {
                    request_id,
                    topic,
                    messages,
                } => {
                    let Ok(permit) = in_flight.clone().acquire_owned().await else {
                        break false;
                    };
                    let broker = self.broker.clone();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let batch = messages.into_iter().map(to_bus).collect();
                        let answer = match broker.publish(&topic, batch).await {
                            Ok(ids) => Frame::PublishOk { request_id, ids },
                            Err(e) => Frame::error(request_id, error_code(&e), e.to_string()),
                        };
                        let _ = tx.send(answer).await;
                        drop(permit);
                    });
                }
                Frame::CreateTopic { request_id, topic } => {
                    let broker = self.broker.clone();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let answer = match broker.create_topic(&topic).await {
                            Ok(()) => Frame::CreateTopicOk { request_id },
                            Err(e) => Frame::error(request_id, error_code(&e), e.to_string()),
                        };
                        let _ = tx.send(answer).await;
                    });
                }
                Frame::Subscribe {
                    sub_id,
                    topic,
                    group,
                    credits,
                } => {
                    let Entry::Vacant(slot) = subs.entry(sub_id) else {
                        let _ = tx
                            .send(Frame::error(
                                sub_id,
                                ErrorCode::InvalidRequest,
                                format!("sub_id {sub_id} is already in use on this connection; pick another"),
                            ))
                            .await;
                        continue;
                    };
                    if let Err(e) = self.broker.subscribe(&topic, &group).await {
                        let _ = tx
                            .send(Frame::error(sub_id, error_code(&e), e.to_string()))
                            .await;
                        continue;
                    }
                    if tx.send(Frame::SubscribeOk { sub_id }).await.is_err() {
                        break false;
                    }
                    slot.insert(Subscription::start(
                        self.broker.clone(),
                        sub_id,
                        topic,
                        group,
                        format!("{consumer_prefix}-s{sub_id}"),
                        credits,
                        max_frame,
                        tx.clone(),
                    ));
                }
                Frame::Credit { sub_id, n } => match subs.get(&sub_id) {
                    Some(sub) => sub.add_credits(n),
                    None => unknown_sub(tx, sub_id).await,
                },
                Frame::Ack { sub_id, ids } => match subs.get(&sub_id) {
                    Some(sub) => sub.ack(ids).await,
                    None => unknown_sub(tx, sub_id).await,
                },
                Frame::Nack {
                    sub_id,
                    ids,
                    delay_ms,
                    reason,
                } => match subs.get(&sub_id) {
                    Some(sub) => {
                        let delay = (delay_ms > 0).then(|| Duration::from_millis(delay_ms));
                        sub.nack(ids, delay, reason);
                    }
                    None => unknown_sub(tx, sub_id).await,
                },
                Frame::Drain { sub_id } => match subs.get_mut(&sub_id) {
                    Some(sub) => sub.drain().await,
                    None => unknown_sub(tx, sub_id).await,
                },
                Frame::Unsubscribe { sub_id } => match subs.remove(&sub_id) {
                    Some(sub) => sub.stop().await,
                    None => unknown_sub(tx, sub_id).await,
                },
                Frame::Ping { nonce } => {
                    if tx.send(Frame::Pong { nonce }).await.is_err() {
                        break false;
                    }
                }
                Frame::Pong { .. } => {}
                other => {
                    let _ = tx
                        .send(Frame::error(
                            0,
                            ErrorCode::InvalidRequest,
                            format!("a client may not send {:?} frames", other.frame_type()),
                        ))
                        .await;
                }
            }
        };
        for (_, sub) in subs {
            sub.stop().await;
        }
        closing
    }
}

/// Resolves once `gate` refuses the client with `token` (never without a
/// gate, or once the gate is gone).
async fn gate_closes(
    gate: &mut Option<(crate::Gate, tokio::sync::watch::Receiver<crate::Closed>)>,
    token: &str,
) -> crate::Refusal {
    let Some((gate, changes)) = gate else {
        return std::future::pending().await;
    };
    loop {
        if let Some(refused) = gate.refusal(token) {
            return refused;
        }
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

async fn unknown_sub(tx: &mpsc::Sender<Frame>, sub_id: u64) {
    let _ = tx
        .send(Frame::error(
            sub_id,
            ErrorCode::UnknownSubscription,
            format!("no subscription {sub_id} on this connection; send Subscribe first"),
        ))
        .await;
}

fn decode_error_code(e: &CodecError) -> ErrorCode {
    match e {
        CodecError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
        _ => ErrorCode::MalformedFrame,
    }
}

/// A consumer-name prefix unique to this connection, made only of characters
/// any name rule accepts.
fn consumer_prefix(client: &str, conn: u64) -> String {
    let clean: String = client
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .map(|c| c.to_ascii_lowercase())
        .take(64)
        .collect();
    let clean = if clean.is_empty() {
        "client".to_owned()
    } else {
        clean
    };
    format!("{clean}-c{conn}")
}

/// Writes queued frames, flushing whenever the queue runs dry, until every
/// sender is gone; then closes the write half.
async fn write_frames(
    mut sink: FramedWrite<OwnedWriteHalf, BusCodec>,
    mut rx: mpsc::Receiver<Frame>,
) {
    while let Some(frame) = rx.recv().await {
        if let Err(error) = sink.feed(frame).await {
            tracing::debug!(%error, "bus: write failed");
            return;
        }
        if rx.is_empty() && SinkExt::<Frame>::flush(&mut sink).await.is_err() {
            return;
        }
    }
    let _ = SinkExt::<Frame>::flush(&mut sink).await;
    let _ = sink.get_mut().shutdown().await;
}

/// After refusing a peer, reads and discards what it still sends for a
/// moment, so the error frame is not lost to a TCP reset.
async fn linger(mut read: OwnedReadHalf) {
    let mut scratch = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut budget: usize = 64 * 1024 * 1024;
        while budget > 0 {
            match read.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => budget = budget.saturating_sub(n),
            }
        }
    })
    .await;
}
