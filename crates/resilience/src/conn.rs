//! One kept-alive HTTP/1.1 connection to an instance, driven by the task
//! that uses it: the request is written and the answer read in the
//! caller's task, framed by `mortar-h1`.
//!
//! Why not hyper's client connection: it hands every request to the
//! connection through a channel and the answer back through another, even
//! when the caller itself drives the connection; those hand-offs (atomic
//! queue operations, an envelope copied in and out, a callback allocated
//! per request) were the hottest part of the client in a profile of the
//! gateway (docs/benchmarks.md).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method, Request};
use mortar_h1::{H1Error, ResponseHead};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::connect::Stream;

/// Room kept free in the read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;
/// Request bodies up to this size are sent in the same write as the head.
const COALESCE_MAX: usize = 16 * 1024;

/// How an exchange on an open connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Reading or writing the connection failed.
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    /// The instance closed the connection before its answer was complete.
    #[error("connection closed before the answer was complete")]
    Closed,
    /// The answer is not valid HTTP/1.
    #[error("invalid answer: {0}")]
    Invalid(#[from] H1Error),
    /// The instance answered 101 Switching Protocols, which a call cannot
    /// follow.
    #[error("the instance switched protocols (101), which calls do not support")]
    Upgrade,
}

/// Fields an attempt sets on the request it sends (`Host`, the deadline),
/// written in place of any the request carries by those names.
///
/// Why not insert them into the request: two insertions into its
/// `HeaderMap` per attempt hash the names and may grow the map, for
/// fields that are only written out.
pub(crate) type SetFields<'a> = [(&'a HeaderName, &'a HeaderValue); 2];

/// A failed request, and whether any of it reached the connection (if
/// not, it is safe to send again whatever its method).
pub(crate) struct Failed {
    pub(crate) written: bool,
    pub(crate) error: ExchangeError,
}

/// One connection: the stream and its buffers.
pub(crate) struct Conn {
    io: Stream,
    /// Bytes read and not yet consumed.
    pub(crate) input: BytesMut,
    output: BytesMut,
}

impl Conn {
    pub(crate) fn new(io: Stream) -> Conn {
        Conn {
            io,
            input: BytesMut::with_capacity(READ_CHUNK),
            output: BytesMut::with_capacity(1024),
        }
    }

    /// Whether the instance closed the connection (or sent something
    /// unasked) while it sat idle, checked without waiting. Reading through
    /// the stream, not the socket, lets TLS consume records that carry no
    /// data (session tickets) without taking them for an answer.
    pub(crate) fn closed_while_idle(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.input.is_empty() {
            return true;
        }
        // Pending: nothing arrived, the connection is as it was left.
        self.poll_read_more(cx).is_ready()
    }

    /// Writes `req`, with the fields of `set` in place of any it carries
    /// by those names, and reads the head of its final answer
    /// (informational answers are skipped).
    pub(crate) async fn request(
        &mut self,
        req: &Request<Bytes>,
        set: &SetFields<'_>,
    ) -> Result<ResponseHead, Failed> {
        let body = req.body();
        let length = (!body.is_empty() || needs_length(req.method())).then_some(body.len() as u64);
        self.output.clear();
        let is_set = |name: &[u8]| set.iter().any(|(n, _)| n.as_str().as_bytes() == name);
        let fields = mortar_h1::map_fields(req.headers())
            .filter(|(name, _)| !is_set(name))
            .chain(
                set.iter()
                    .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
            );
        mortar_h1::encode_request_head(&mut self.output, req.method(), req.uri(), fields, length);
        let coalesced = body.len() <= COALESCE_MAX;
        if coalesced {
            self.output.extend_from_slice(body);
        }
        let mut written = 0;
        while written < self.output.len() {
            match self.io.write(&self.output[written..]).await {
                Ok(0) => {
                    let zero = io::Error::from(io::ErrorKind::WriteZero);
                    return Err(failed(written > 0, zero.into()));
                }
                Ok(n) => written += n,
                Err(e) => return Err(failed(written > 0, e.into())),
            }
        }
        if !coalesced && let Err(e) = self.io.write_all(body).await {
            return Err(failed(true, e.into()));
        }
        // TLS may hold the last records back until flushed.
        if let Err(e) = self.io.flush().await {
            return Err(failed(true, e.into()));
        }
        self.read_head(req.method()).await.map_err(|error| Failed {
            written: true,
            error,
        })
    }

    async fn read_head(&mut self, method: &Method) -> Result<ResponseHead, ExchangeError> {
        loop {
            if !self.input.is_empty()
                && let Some(head) = mortar_h1::parse_response(&mut self.input, method)?
            {
                if head.status == http::StatusCode::SWITCHING_PROTOCOLS {
                    return Err(ExchangeError::Upgrade);
                }
                if !head.status.is_informational() {
                    return Ok(head);
                }
                continue;
            }
            self.input.reserve(READ_CHUNK);
            if self.io.read_buf(&mut self.input).await? == 0 {
                return Err(ExchangeError::Closed);
            }
        }
    }

    /// Reads until `n` bytes are buffered.
    pub(crate) async fn fill(&mut self, n: usize) -> Result<(), ExchangeError> {
        while self.input.len() < n {
            self.input.reserve(n - self.input.len());
            if self.io.read_buf(&mut self.input).await? == 0 {
                return Err(ExchangeError::Closed);
            }
        }
        Ok(())
    }

    /// Reads more into the buffer; `Ready(Ok(0))` at the end of stream.
    pub(crate) fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.input.reserve(READ_CHUNK);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.input)
    }
}

/// Methods whose empty body is still announced (`Content-Length: 0`), as
/// some servers require it.
fn needs_length(method: &Method) -> bool {
    *method == Method::POST || *method == Method::PUT || *method == Method::PATCH
}

fn failed(written: bool, error: ExchangeError) -> Failed {
    Failed { written, error }
}
