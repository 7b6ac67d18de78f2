//! Serving one client connection: HTTP/1.1 read and written with
//! `mortar-h1`, each request handed to the gateway whole.
//!
//! Why not hyper's server: the gateway reads every body into memory anyway
//! (retries replay it), so all it needs is to read a head and a body,
//! answer, and read the next head. Doing that directly in the connection's
//! task, with one buffer for reading and one for writing, costs less CPU
//! per request than hyper's general connection state machine (3–6% more
//! throughput in one bench run, docs/benchmarks.md). Pipelined requests are answered in order;
//! `Expect: 100-continue` is honoured; chunked request bodies are decoded;
//! answers of unknown length are sent chunked (or until close to HTTP/1.0
//! clients).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, StatusCode, Version};
use http_body_util::BodyExt;
use mortar_h1::{
    BodyLength, ChunkedDecoder, Decoded, H1Error, LAST_CHUNK, RequestHead, ResponseFraming,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::answer::Answer;
use crate::gateway::{handle_buffered, refusal};
use crate::hop_by_hop::passed_fields;
use crate::problems;
use crate::proxy::{Peer, Shared};
use crate::trace::TRACEPARENT;

/// Room kept free in the read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;
/// Answers up to this size are copied behind their head and sent in one
/// write; larger ones are written as they come.
const COALESCE_MAX: u64 = 16 * 1024;
/// After refusing a request whose body was not read, how long the
/// connection reads and drops what the client still sends before closing,
/// so closing does not reset the connection under the refusal.
const LINGER: Duration = Duration::from_secs(1);

/// Serves requests on `stream` until the client closes, an exchange ends
/// the connection, or `stop` fires (then the request being served is
/// finished and the connection closed).
pub(crate) async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    remote: SocketAddr,
    stop: oneshot::Receiver<()>,
) {
    // Answers are written whole; Nagle would only hold back the last
    // segment of one waiting for the client's delayed ACK.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted socket");
    }
    let mut conn = Connection {
        io: stream,
        input: BytesMut::with_capacity(READ_CHUNK),
        output: BytesMut::with_capacity(READ_CHUNK),
        stop,
        stopping: false,
    };
    let peer = Peer::new(remote.ip());
    loop {
        let head = match conn.next_head(shared.config.head_timeout).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(Failure::Io(e)) => {
                tracing::trace!(error = %e, "gateway connection ended");
                return;
            }
            Err(Failure::Refused(e)) => {
                tracing::debug!(error = %e, "unreadable request");
                let _ = conn
                    .refuse(problems::unreadable(&e), &Method::GET, Version::HTTP_11)
                    .await;
                return;
            }
            Err(Failure::TimedOut) => {
                tracing::debug!(client = %remote, "request head timed out");
                let resp = problems::head_timeout(shared.config.head_timeout);
                let _ = conn.refuse(resp, &Method::GET, Version::HTTP_11).await;
                return;
            }
        };
        match conn.exchange(&shared, head, &peer).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::trace!(error = %e, "gateway connection ended");
                return;
            }
        }
    }
}

enum Failure {
    /// The socket failed or closed.
    Io(std::io::Error),
    /// The client sent something that is not a readable request.
    Refused(H1Error),
    /// A started head did not complete in time.
    TimedOut,
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e)
    }
}

impl From<H1Error> for Failure {
    fn from(e: H1Error) -> Self {
        Failure::Refused(e)
    }
}

struct Connection {
    io: TcpStream,
    input: BytesMut,
    output: BytesMut,
    /// Fires (or is dropped) when the gateway shuts down.
    stop: oneshot::Receiver<()>,
    /// `stop` has fired: finish the current request, then close.
    stopping: bool,
}

impl Connection {
    /// The next request's head; `None` when the client closed between
    /// requests or the gateway is stopping while the connection is idle.
    /// Once part of a head has arrived, the rest must follow within
    /// `timeout` (the timer starts only then, so a head read whole costs
    /// none).
    async fn next_head(&mut self, timeout: Duration) -> Result<Option<RequestHead>, Failure> {
        let mut deadline = None;
        loop {
            if !self.input.is_empty()
                && let Some(head) = mortar_h1::parse_request(&mut self.input)?
            {
                return Ok(Some(head));
            }
            let idle = self.input.is_empty();
            if idle && self.stop_requested() {
                return Ok(None);
            }
            self.input.reserve(READ_CHUNK);
            let read = if idle {
                tokio::select! {
                    biased;
                    _ = &mut self.stop => {
                        self.stopping = true;
                        return Ok(None);
                    }
                    read = self.io.read_buf(&mut self.input) => read?,
                }
            } else {
                let until = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + timeout);
                tokio::time::timeout_at(until, self.io.read_buf(&mut self.input))
                    .await
                    .map_err(|_| Failure::TimedOut)??
            };
            if read == 0 {
                return Ok(None);
            }
        }
    }

    /// Whether the gateway is shutting down (checked without waiting).
    fn stop_requested(&mut self) -> bool {
        if !self.stopping {
            self.stopping = !matches!(
                self.stop.try_recv(),
                Err(oneshot::error::TryRecvError::Empty)
            );
        }
        self.stopping
    }

    /// Reads the body, has the gateway answer, writes the answer. `true`
    /// when the connection can carry another request.
    async fn exchange(
        &mut self,
        shared: &Arc<Shared>,
        head: RequestHead,
        peer: &Peer,
    ) -> std::io::Result<bool> {
        let RequestHead {
            parts,
            body: length,
            keep_alive,
            expect_continue,
        } = head;
        let version = parts.version;
        let declared = match length {
            BodyLength::Known(n) => Some(n),
            _ => None,
        };
        if let Some(refused) = refusal(shared, &parts, declared, peer) {
            if length == BodyLength::Empty {
                return self
                    .answer(refused.into(), None, &parts.method, version, keep_alive)
                    .await;
            }
            return self
                .refuse(refused, &parts.method, version)
                .await
                .map(|()| false);
        }
        let limit = shared.config.max_body_bytes;
        if expect_continue && self.input.is_empty() {
            self.io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let body = match self
            .read_body_within(length, limit, shared.config.body_timeout)
            .await?
        {
            Ok(body) => body,
            Err(Unread::TimedOut) => {
                let timeout = shared.config.body_timeout;
                let refused = problems::body_timeout(parts.uri.path(), timeout);
                return self
                    .refuse(refused, &parts.method, version)
                    .await
                    .map(|()| false);
            }
            Err(Unread::TooLarge) => {
                let refused = problems::too_large(parts.uri.path(), limit);
                return self
                    .refuse(refused, &parts.method, version)
                    .await
                    .map(|()| false);
            }
            Err(Unread::Malformed(e)) => {
                return self
                    .refuse(problems::unreadable(&e), &parts.method, version)
                    .await
                    .map(|()| false);
            }
        };
        let method = parts.method.clone();
        let (answer, traceparent) = handle_buffered(shared, parts, body, peer).await;
        self.answer(answer, Some(&traceparent), &method, version, keep_alive)
            .await
    }

    /// [`Connection::read_body`] within `timeout`. The timer is armed only
    /// when the body has not already arrived with the head, so the common
    /// request (no body, or a small one in the same read) costs none.
    async fn read_body_within(
        &mut self,
        length: BodyLength,
        limit: usize,
        timeout: Duration,
    ) -> std::io::Result<Result<Bytes, Unread>> {
        let arrived = match length {
            BodyLength::Empty | BodyLength::UntilClose => true,
            BodyLength::Known(n) => u64::try_from(self.input.len()).is_ok_and(|have| have >= n),
            BodyLength::Chunked => false,
        };
        if arrived {
            return self.read_body(length, limit).await;
        }
        tokio::time::timeout(timeout, self.read_body(length, limit))
            .await
            .unwrap_or(Ok(Err(Unread::TimedOut)))
    }

    /// The request's body, read whole (up to `limit` bytes); `Ok(Err)` when
    /// it is refused, `Err` when the connection failed.
    async fn read_body(
        &mut self,
        length: BodyLength,
        limit: usize,
    ) -> std::io::Result<Result<Bytes, Unread>> {
        match length {
            BodyLength::Empty | BodyLength::UntilClose => Ok(Ok(Bytes::new())),
            BodyLength::Known(n) => {
                // `refusal` caught declared lengths over the limit.
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if n > limit {
                    return Ok(Err(Unread::TooLarge));
                }
                while self.input.len() < n {
                    self.input.reserve(n - self.input.len());
                    if self.io.read_buf(&mut self.input).await? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Ok(Ok(self.input.split_to(n).freeze()))
            }
            BodyLength::Chunked => {
                let mut decoder = ChunkedDecoder::default();
                let mut body = BytesMut::new();
                loop {
                    match decoder.decode(&mut self.input) {
                        Ok(Decoded::Data(data)) => {
                            if body.len() + data.len() > limit {
                                return Ok(Err(Unread::TooLarge));
                            }
                            body.extend_from_slice(&data);
                        }
                        Ok(Decoded::Done) => return Ok(Ok(body.freeze())),
                        Ok(Decoded::NeedMore) => {
                            self.input.reserve(READ_CHUNK);
                            if self.io.read_buf(&mut self.input).await? == 0 {
                                return Err(std::io::ErrorKind::UnexpectedEof.into());
                            }
                        }
                        Err(e) => return Ok(Err(Unread::Malformed(e))),
                    }
                }
            }
        }
    }

    /// Writes `answer`, with `traceparent` in place of any the answer
    /// carries, for a `method` request from a `version` client; `true` when
    /// the connection stays open.
    async fn answer(
        &mut self,
        answer: Answer,
        traceparent: Option<&HeaderValue>,
        method: &Method,
        version: Version,
        keep_alive: bool,
    ) -> std::io::Result<bool> {
        let traced = traceparent.map(|v| (TRACEPARENT.as_bytes(), v.as_bytes()));
        let exchange = Exchange {
            method,
            version,
            keep_alive,
        };
        match answer {
            Answer::Made(resp) => {
                let (parts, body) = resp.into_parts();
                let fields = mortar_h1::map_fields(&parts.headers);
                self.write_answer(parts.status, fields, traced, body, exchange)
                    .await
            }
            Answer::Passed(raw) => {
                let fields = passed_fields(&raw.fields);
                self.write_answer(raw.status, fields, traced, raw.body, exchange)
                    .await
            }
        }
    }

    /// Writes a head of `status` and `fields` (with `traced` in place of
    /// any `traceparent` among them), then `body`.
    async fn write_answer<'a, B>(
        &mut self,
        status: StatusCode,
        fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
        traced: Option<(&'a [u8], &'a [u8])>,
        mut body: B,
        exchange: Exchange<'_>,
    ) -> std::io::Result<bool>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
    {
        let Exchange {
            method,
            version,
            keep_alive,
        } = exchange;
        let mut keep_alive = keep_alive && !self.stop_requested();
        let no_body = *method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let framing = if no_body {
            ResponseFraming::NoBody
        } else {
            match body.size_hint().exact() {
                Some(n) => ResponseFraming::Length(n),
                None if version == Version::HTTP_11 => ResponseFraming::Chunked,
                None => {
                    keep_alive = false;
                    ResponseFraming::UntilClose
                }
            }
        };
        let fields = fields
            .filter(|(name, _)| {
                traced.is_none() || !name.eq_ignore_ascii_case(TRACEPARENT.as_bytes())
            })
            .chain(traced);
        mortar_h1::encode_response_head(
            &mut self.output,
            status,
            fields,
            framing,
            keep_alive,
            version,
        );
        let complete = match framing {
            ResponseFraming::NoBody => true,
            ResponseFraming::Length(n) if n <= COALESCE_MAX => {
                self.write_small(&mut body, n).await?
            }
            _ => self.stream(&mut body, framing).await?,
        };
        self.flush_output().await?;
        Ok(keep_alive && complete)
    }

    /// Appends a body of `length` bytes behind the head for one write;
    /// `false` if it failed or did not match its length.
    async fn write_small<B>(&mut self, body: &mut B, length: u64) -> std::io::Result<bool>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
    {
        let mut sent = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return Ok(false) };
            if let Ok(data) = frame.into_data() {
                sent += data.len() as u64;
                if sent > length {
                    return Ok(false);
                }
                self.output.extend_from_slice(&data);
            }
        }
        Ok(sent == length)
    }

    /// Writes the head, then the body as it comes; `false` if the body
    /// failed or did not match its length (the client then sees the
    /// connection close early rather than a wrong message).
    async fn stream<B>(&mut self, body: &mut B, framing: ResponseFraming) -> std::io::Result<bool>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
    {
        let mut sent = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return Ok(false) };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            sent += data.len() as u64;
            if framing == ResponseFraming::Chunked {
                mortar_h1::encode_chunk(&mut self.output, &data);
                self.flush_output().await?;
                continue;
            }
            if let ResponseFraming::Length(n) = framing
                && sent > n
            {
                return Ok(false);
            }
            self.flush_output().await?;
            self.io.write_all(&data).await?;
        }
        match framing {
            ResponseFraming::Chunked => {
                self.output.extend_from_slice(LAST_CHUNK);
                Ok(true)
            }
            ResponseFraming::Length(n) => Ok(sent == n),
            _ => Ok(true),
        }
    }

    /// Writes what is buffered for the client (a head, a chunk).
    async fn flush_output(&mut self) -> std::io::Result<()> {
        if !self.output.is_empty() {
            self.io.write_all(&self.output).await?;
            self.output.clear();
        }
        Ok(())
    }

    /// Answers `resp` to a `method` request (a HEAD's answer has no body)
    /// and closes, reading and dropping for a moment what the client still
    /// sends (a body the gateway refused), so the close does not reset the
    /// connection before the client reads the answer.
    async fn refuse(
        &mut self,
        resp: Response,
        method: &Method,
        version: Version,
    ) -> std::io::Result<()> {
        self.answer(resp.into(), None, method, version, false)
            .await?;
        self.io.shutdown().await?;
        let mut sink = [0u8; 4096];
        let drain = async { while matches!(self.io.read(&mut sink).await, Ok(n) if n > 0) {} };
        let _ = tokio::time::timeout(LINGER, drain).await;
        Ok(())
    }
}

/// The request an answer is for, as far as writing it is concerned.
struct Exchange<'a> {
    method: &'a Method,
    /// The client's version.
    version: Version,
    /// Whether the client keeps the connection open afterwards.
    keep_alive: bool,
}

/// Why a body was not read.
enum Unread {
    TooLarge,
    Malformed(H1Error),
    /// It did not arrive within the body timeout.
    TimedOut,
}
