//! Kept-alive HTTP/1 connections to one instance, each driven by the task
//! that is using it rather than by a task of its own.
//!
//! Why not hyper_util's pooled client: it spawns one task per connection, so
//! every call hands its request to that task and gets the answer back
//! through a channel — two extra task wake-ups per call, often across
//! threads (futex, epoll). Here a connection ([`Conn`]) is checked out by
//! the caller, who writes the request and reads the answer itself. Small
//! answers of known length are read whole before the call returns, which
//! hands the connection back at once; larger, chunked or close-delimited
//! answers stream through [`PooledBody`], which reads the connection as the
//! body is read and returns it to the pool at the end of the body.
//!
//! Idle connections are not read while they sit in the pool; a checkout
//! checks one first, which notices a connection the instance closed
//! meanwhile. A request that failed before any of it was written is sent
//! again on another connection. Connections idle longer than the idle
//! timeout are dropped when the pool is next used, and by a sweeper task
//! that ends with the pool.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};
use mortar_h1::{BodyLength, ChunkedDecoder, Decoded};
use tokio::time::Instant;

use crate::BoxError;
use crate::conn::{Conn, ExchangeError, SetFields};
use crate::connect::Connector;
use crate::raw::RawResponse;

/// Answers up to this size (known from `Content-Length`) are read whole
/// before the call returns, so their connection goes back at once.
const INLINE_BODY_MAX: u64 = 64 * 1024;

/// Times a request that failed unwritten on a stale connection is sent
/// again.
const STALE_RETRIES: usize = 3;

/// Why a request through the pool failed.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be opened: the request was never sent.
    Connect(std::io::Error),
    /// The exchange failed after the request may have been sent.
    Exchange(ExchangeError),
}

struct Idle {
    /// Boxed: a connection moves in and out of the pool on every call.
    conn: Box<Conn>,
    since: Instant,
}

/// The kept-alive connections to one address.
pub(crate) struct Pool {
    address: SocketAddr,
    /// Plain TCP or TLS, and the service the address belongs to (the
    /// server name TLS checks).
    connector: Connector,
    service: Arc<str>,
    idle_timeout: Duration,
    max_idle: usize,
    /// Most recently used last: checkouts take the warmest connection and
    /// the coldest ones at the front expire first.
    idle: Mutex<Vec<Idle>>,
}

impl Pool {
    /// A pool for `address`. Call inside a tokio runtime: it starts the task
    /// that drops idle connections, which ends when the pool is dropped.
    #[cfg(test)]
    pub(crate) fn new(address: SocketAddr, idle_timeout: Duration, max_idle: usize) -> Arc<Pool> {
        Self::with_connector(address, Connector::Plain, "", idle_timeout, max_idle)
    }

    /// A pool for `address`, an instance of `service`, connecting through
    /// `connector`.
    pub(crate) fn with_connector(
        address: SocketAddr,
        connector: Connector,
        service: &str,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            address,
            connector,
            service: Arc::from(service),
            idle_timeout,
            max_idle,
            idle: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&pool);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(sweep(weak, idle_timeout.max(Duration::from_millis(10))));
        }
        pool
    }

    /// Sends `req`, with the fields of `set` (`Host` among them) in place
    /// of any it carries and its target in origin form, on a kept-alive or
    /// new connection and returns the answer.
    pub(crate) async fn send(
        self: &Arc<Self>,
        req: &Request<Bytes>,
        set: &SetFields<'_>,
    ) -> Result<RawResponse, SendError> {
        let mut tries = 0;
        loop {
            let (mut conn, reused) = match poll_fn(|cx| Poll::Ready(self.checkout(cx))).await {
                Some(c) => (c, true),
                // Boxed: connecting (TCP, maybe TLS) is the rare path, and its
                // future inline would make every call's future, which is
                // moved whole on each await, several kilobytes larger.
                None => (Box::pin(self.connect()).await?, false),
            };
            match conn.request(req, set).await {
                Ok(head) => return self.finish(conn, head).await,
                Err(failed) => {
                    tries += 1;
                    // Never written on a kept-alive connection: the instance
                    // closed it meanwhile, and any method may be sent again.
                    if reused && !failed.written && tries < STALE_RETRIES {
                        continue;
                    }
                    return Err(SendError::Exchange(failed.error));
                }
            }
        }
    }

    /// The answer with a body the caller can read: small ones read here.
    async fn finish(
        self: &Arc<Self>,
        mut conn: Box<Conn>,
        head: mortar_h1::ResponseHead,
    ) -> Result<RawResponse, SendError> {
        let mortar_h1::ResponseHead {
            status,
            version,
            fields,
            body: length,
            keep_alive,
        } = head;
        let body = match length {
            BodyLength::Empty => {
                if keep_alive {
                    self.put(conn);
                }
                Empty::new().map_err(|never| match never {}).boxed()
            }
            BodyLength::Known(n) if n <= INLINE_BODY_MAX => {
                let n = n as usize;
                conn.fill(n).await.map_err(SendError::Exchange)?;
                let bytes = conn.input.split_to(n).freeze();
                if keep_alive {
                    self.put(conn);
                }
                Full::new(bytes).map_err(|never| match never {}).boxed()
            }
            framing => PooledBody {
                framing: match framing {
                    BodyLength::Known(n) => Framing::Length(n),
                    BodyLength::Chunked => Framing::Chunked(ChunkedDecoder::default()),
                    _ => Framing::UntilClose,
                },
                conn: Some(conn),
                keep_alive,
                pool: Arc::downgrade(self),
            }
            .boxed(),
        };
        Ok(RawResponse {
            status,
            version,
            fields,
            body,
        })
    }

    /// A kept-alive connection that still works, if any.
    fn checkout(&self, cx: &mut Context<'_>) -> Option<Box<Conn>> {
        loop {
            let Idle { mut conn, since } = self.lock().pop()?;
            if since.elapsed() >= self.idle_timeout {
                continue;
            }
            if !conn.closed_while_idle(cx) {
                return Some(conn);
            }
        }
    }

    async fn connect(&self) -> Result<Box<Conn>, SendError> {
        let stream = self
            .connector
            .connect(self.address, &self.service)
            .await
            .map_err(SendError::Connect)?;
        Ok(Box::new(Conn::new(stream)))
    }

    /// Keeps a connection whose exchange finished for the next request.
    fn put(&self, conn: Box<Conn>) {
        // Bytes after the answer were not asked for: the connection is not
        // in step with its instance.
        if !conn.input.is_empty() {
            return;
        }
        let now = Instant::now();
        let expired = {
            let mut idle = self.lock();
            let expired = self.take_expired(&mut idle, now);
            if idle.len() < self.max_idle {
                idle.push(Idle { conn, since: now });
            }
            expired
        };
        // Closed outside the lock.
        drop(expired);
    }

    fn take_expired(&self, idle: &mut Vec<Idle>, now: Instant) -> Vec<Idle> {
        let n = idle
            .iter()
            .take_while(|i| now.saturating_duration_since(i.since) >= self.idle_timeout)
            .count();
        idle.drain(..n).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
impl Pool {
    /// Sends as an endpoint does, with `Host: test` and a deadline field.
    pub(crate) async fn call(
        self: &Arc<Self>,
        req: &Request<Bytes>,
    ) -> Result<RawResponse, SendError> {
        let host = http::HeaderValue::from_static("test");
        let deadline = http::HeaderValue::from_static("1000");
        let set = [
            (&http::header::HOST, &host),
            (&crate::deadline::DEADLINE_NAME, &deadline),
        ];
        self.send(req, &set).await
    }
}

/// Drops connections idle for longer than the timeout, until the pool goes.
async fn sweep(pool: Weak<Pool>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let expired = {
            let mut idle = pool.lock();
            pool.take_expired(&mut idle, Instant::now())
        };
        drop(expired);
    }
}

/// How the rest of a streamed answer is delimited.
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// A streamed answer that reads its connection as it is read and hands
/// the connection back to the pool once the body has ended.
struct PooledBody {
    framing: Framing,
    /// `None` once the body ended or failed.
    conn: Option<Box<Conn>>,
    keep_alive: bool,
    pool: Weak<Pool>,
}

impl PooledBody {
    /// The end of the body: the connection goes back if it can be reused.
    fn end(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && !matches!(self.framing, Framing::UntilClose)
            && let Some(pool) = self.pool.upgrade()
        {
            pool.put(conn);
        }
        Poll::Ready(None)
    }

    fn fail(&mut self, error: ExchangeError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        Poll::Ready(Some(Err(error.into())))
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let input = &mut conn.input;
            match &mut this.framing {
                Framing::Length(0) => return this.end(),
                Framing::Length(left) if !input.is_empty() => {
                    let take = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    *left -= take as u64;
                    return Poll::Ready(Some(Ok(Frame::data(input.split_to(take).freeze()))));
                }
                Framing::Chunked(decoder) => match decoder.decode(input) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Done) => return this.end(),
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => return this.fail(e.into()),
                },
                Framing::UntilClose if !input.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(input.split().freeze()))));
                }
                Framing::Length(_) | Framing::UntilClose => {}
            }
            match std::task::ready!(conn.poll_read_more(cx)) {
                Ok(0) if matches!(this.framing, Framing::UntilClose) => return this.end(),
                Ok(0) => return this.fail(ExchangeError::Closed),
                Ok(_) => {}
                Err(e) => return this.fail(e.into()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || matches!(self.framing, Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mortar_test_support::http::raw_server as server;
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn get() -> Request<Bytes> {
        Request::get("/x")
            .header(http::header::HOST, "test")
            .body(Bytes::new())
            .unwrap()
    }

    async fn text(resp: RawResponse) -> String {
        let b = resp.body.collect().await.unwrap().to_bytes();
        String::from_utf8(b.to_vec()).unwrap()
    }

    fn ok(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn one_connection_serves_calls_one_after_another() {
        let (addr, accepted) = server(|n| Some(ok(&format!("answer {n}")))).await;
        let pool = Pool::new(addr, Duration::from_secs(30), 16);
        for n in 0..5 {
            let resp = pool.call(&get()).await.unwrap();
            assert_eq!(text(resp).await, format!("answer {n}"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closes_is_not_reused() {
        let (addr, accepted) = server(|_| {
            Some(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 4\r\n\r\nonce".to_vec())
        })
        .await;
        let pool = Pool::new(addr, Duration::from_secs(30), 16);
        for _ in 0..3 {
            let resp = pool.call(&get()).await.unwrap();
            assert_eq!(text(resp).await, "once");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_idle_connection_closed_by_the_server_is_replaced() {
        // Answers one request per connection, then closes it silently.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(&ok("once")).await.unwrap();
                drop(s);
                closed_tx.send(()).unwrap();
            }
        });
        let pool = Pool::new(addr, Duration::from_secs(30), 16);
        for _ in 0..3 {
            let resp = pool.call(&get()).await.unwrap();
            assert_eq!(text(resp).await, "once");
            closed.recv().await.unwrap();
        }
    }

    #[tokio::test]
    async fn chunked_and_large_answers_stream_and_keep_the_connection() {
        let big = "y".repeat(200_000);
        let big2 = big.clone();
        let (addr, accepted) = server(move |n| {
            Some(if n == 0 {
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                    .to_vec()
            } else {
                ok(&big2)
            })
        })
        .await;
        let pool = Pool::new(addr, Duration::from_secs(30), 16);
        assert_eq!(text(pool.call(&get()).await.unwrap()).await, "abcde");
        assert_eq!(text(pool.call(&get()).await.unwrap()).await, big);
        assert_eq!(text(pool.call(&get()).await.unwrap()).await, big);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_calls_open_their_own_connections_and_then_reuse_them() {
        let (addr, accepted) = server(|_| Some(ok("hi"))).await;
        let pool = Pool::new(addr, Duration::from_secs(30), 16);
        for _ in 0..3 {
            let calls = (0..4).map(|_| {
                let pool = pool.clone();
                async move { text(pool.call(&get()).await.unwrap()).await }
            });
            for t in futures::future::join_all(calls).await {
                assert_eq!(t, "hi");
            }
        }
        assert!(accepted.load(Ordering::SeqCst) <= 4);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let pool = Pool::new(addr, Duration::from_secs(30), 16);
        assert!(matches!(
            pool.call(&get()).await,
            Err(SendError::Connect(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_expire() {
        let (addr, accepted) = server(|_| Some(ok("hi"))).await;
        let pool = Pool::new(addr, Duration::from_secs(30), 16);
        text(pool.call(&get()).await.unwrap()).await;
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert!(pool.lock().is_empty(), "the sweeper dropped it");
        text(pool.call(&get()).await.unwrap()).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// Answers the first request on each connection with `raw`, then
    /// closes it.
    async fn one_shot_server(raw: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(raw).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn informational_answers_are_skipped() {
        let (addr, _) = server(|_| {
            Some(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal".to_vec())
        })
        .await;
        let pool = Pool::new(addr, Duration::from_secs(30), 16);
        let resp = pool.call(&get()).await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(text(resp).await, "final");
    }

    #[tokio::test]
    async fn an_answer_without_length_is_read_until_close_and_not_reused() {
        let addr = one_shot_server(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").await;
        let pool = Pool::new(addr, Duration::from_secs(30), 16);
        for _ in 0..2 {
            assert_eq!(
                text(pool.call(&get()).await.unwrap()).await,
                "until the end"
            );
        }
        assert!(pool.lock().is_empty());
    }

    #[tokio::test]
    async fn a_short_or_invalid_answer_is_an_exchange_error() {
        let addr = one_shot_server(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc").await;
        let pool = Pool::new(addr, Duration::from_secs(30), 16);
        assert!(matches!(
            pool.call(&get()).await,
            Err(SendError::Exchange(ExchangeError::Closed))
        ));
        let addr = one_shot_server(b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n").await;
        let pool = Pool::new(addr, Duration::from_secs(30), 16);
        assert!(matches!(
            pool.call(&get()).await,
            Err(SendError::Exchange(ExchangeError::Invalid(_)))
        ));
        let addr = one_shot_server(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\nabc").await;
        let pool = Pool::new(addr, Duration::from_secs(30), 16);
        let body = pool.call(&get()).await.unwrap().body.collect().await;
        assert!(body.is_err(), "a streamed body that ends early is an error");
    }

    #[tokio::test]
    async fn a_request_body_and_its_length_are_sent() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.ends_with(b"payload") {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(&ok("done")).await.unwrap();
            String::from_utf8(got).unwrap()
        });
        let pool = Pool::new(addr, Duration::from_secs(30), 16);
        let req = Request::post("/orders?x=1")
            .header(http::header::HOST, "ordering")
            .body(Bytes::from_static(b"payload"))
            .unwrap();
        assert_eq!(text(pool.call(&req).await.unwrap()).await, "done");
        let seen = seen.await.unwrap();
        assert!(seen.starts_with("POST /orders?x=1 HTTP/1.1\r\n"), "{seen}");
        // The endpoint's `Host` replaces the request's; the deadline is added.
        assert!(seen.contains("host: test\r\n"), "{seen}");
        assert!(!seen.contains("ordering"), "{seen}");
        assert!(seen.contains("x-mortar-deadline-ms: 1000\r\n"), "{seen}");
        assert!(seen.ends_with("content-length: 7\r\n\r\npayload"), "{seen}");
    }
}
