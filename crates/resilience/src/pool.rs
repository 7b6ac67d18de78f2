//! Kept-alive HTTP/1 connections to one instance, each driven by the task
//! that is using it rather than by a task of its own.
//!
//! Why not hyper_util's pooled client: it spawns one task per connection, so
//! every call hands its request to that task and gets the answer back
//! through a channel — two extra task wake-ups per call, often across
//! threads (futex, epoll). Here a connection is checked out by the caller,
//! who polls the connection itself while it waits for the answer, so the
//! request, the socket reads and writes and the answer all happen in the
//! caller's task. Small answers of known length are read whole before the
//! call returns, which hands the connection back at once; larger or chunked
//! answers stream through [`PooledBody`], which drives the connection while
//! the body is read and returns it to the pool at the end of the body.
//!
//! Idle connections are not polled while they sit in the pool; a checkout
//! polls one first, which notices a connection the instance closed
//! meanwhile. A request that a closed connection refused before writing it
//! is sent again on another connection. Connections idle longer than the
//! idle timeout are dropped when the pool is next used, and by a sweeper
//! task that ends with the pool.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::BoxError;
use crate::client::ResponseBody;
use crate::connect::{Connector, Stream};

type Conn = Connection<TokioIo<Stream>, Full<Bytes>>;

/// Answers up to this size (known from `Content-Length`) are read whole
/// before the call returns, so their connection goes back at once.
const INLINE_BODY_MAX: u64 = 64 * 1024;

/// Times a request refused unwritten by a stale connection is sent again.
const STALE_RETRIES: usize = 3;

/// Why a request through the pool failed.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be opened: the request was never sent.
    Connect(std::io::Error),
    /// The exchange failed after the request may have been sent.
    Exchange(hyper::Error),
}

/// One connection: the request side and the connection future.
struct Pooled {
    sender: SendRequest<Full<Bytes>>,
    conn: Conn,
    /// The connection future finished (closed or failed): never reuse.
    done: bool,
}

impl Pooled {
    /// Drives the connection's I/O; marks it done when it ends.
    fn poll_conn(&mut self, cx: &mut Context<'_>) {
        if !self.done && Pin::new(&mut self.conn).poll(cx).is_ready() {
            self.done = true;
        }
    }
}

struct Idle {
    /// Boxed: a connection is large, and moves in and out of the pool on
    /// every call.
    conn: Box<Pooled>,
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

    /// Sends `req` (origin-form URI, `Host` set) on a kept-alive or new
    /// connection and returns the answer.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<ResponseBody>, SendError> {
        let mut tries = 0;
        loop {
            let mut pooled = match poll_fn(|cx| Poll::Ready(self.checkout(cx))).await {
                Some(p) => p,
                // Boxed: connecting (TCP, maybe TLS) is the rare path, and its
                // future inline would make every call's future, which is
                // moved whole on each await, several kilobytes larger.
                None => Box::pin(self.connect()).await?,
            };
            let mut answer = pin!(pooled.sender.try_send_request(req));
            let result = poll_fn(|cx| {
                if let Poll::Ready(r) = answer.as_mut().poll(cx) {
                    return Poll::Ready(r);
                }
                pooled.poll_conn(cx);
                answer.as_mut().poll(cx)
            })
            .await;
            match result {
                Ok(resp) => return self.finish(pooled, resp).await,
                Err(mut e) => {
                    tries += 1;
                    match e.take_message() {
                        // Never written: safe to send again, whatever the method.
                        Some(unsent) if tries < STALE_RETRIES => req = unsent,
                        _ => return Err(SendError::Exchange(e.into_error())),
                    }
                }
            }
        }
    }

    /// The answer with a body the caller can read: small ones read here.
    async fn finish(
        self: &Arc<Self>,
        mut pooled: Box<Pooled>,
        resp: Response<Incoming>,
    ) -> Result<Response<ResponseBody>, SendError> {
        let (parts, mut body) = resp.into_parts();
        if body.is_end_stream() {
            self.put(pooled);
            let empty = Empty::new().map_err(|never| match never {}).boxed();
            return Ok(Response::from_parts(parts, empty));
        }
        let small = body
            .size_hint()
            .exact()
            .is_some_and(|n| n <= INLINE_BODY_MAX);
        if !small {
            let body = PooledBody {
                body,
                conn: Some(pooled),
                pool: Arc::downgrade(self),
            };
            return Ok(Response::from_parts(parts, body.boxed()));
        }
        let mut data = Vec::<Bytes>::new();
        let read = poll_fn(|cx| {
            loop {
                let frame = match poll_body(&mut body, &mut pooled, cx) {
                    Poll::Ready(f) => f,
                    Poll::Pending => return Poll::Pending,
                };
                match frame {
                    None => return Poll::Ready(Ok(())),
                    Some(Err(e)) => return Poll::Ready(Err(e)),
                    Some(Ok(frame)) => {
                        if let Ok(bytes) = frame.into_data() {
                            data.push(bytes);
                        }
                    }
                }
            }
        })
        .await;
        if let Err(e) = read {
            return Err(SendError::Exchange(e));
        }
        self.put(pooled);
        let bytes = match data.len() {
            0 => Bytes::new(),
            1 => data.pop().unwrap_or_default(),
            _ => Bytes::from(data.concat()),
        };
        let full = Full::new(bytes).map_err(|never| match never {}).boxed();
        Ok(Response::from_parts(parts, full))
    }

    /// A kept-alive connection that still works, if any.
    fn checkout(&self, cx: &mut Context<'_>) -> Option<Box<Pooled>> {
        loop {
            let Idle { mut conn, since } = self.lock().pop()?;
            if since.elapsed() >= self.idle_timeout {
                continue;
            }
            // Lets the connection notice a close while it sat idle, and
            // tells its request side it may send again.
            conn.poll_conn(cx);
            if !conn.done && conn.sender.is_ready() {
                return Some(conn);
            }
        }
    }

    async fn connect(&self) -> Result<Box<Pooled>, SendError> {
        let stream = self
            .connector
            .connect(self.address, &self.service)
            .await
            .map_err(SendError::Connect)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Exchange)?;
        Ok(Box::new(Pooled {
            sender,
            conn,
            done: false,
        }))
    }

    /// Keeps a connection whose exchange finished for the next request.
    fn put(&self, conn: Box<Pooled>) {
        if conn.done || conn.sender.is_closed() {
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

/// Polls the body, driving the connection so it can deliver the body.
fn poll_body(
    body: &mut Incoming,
    pooled: &mut Pooled,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
    if let Poll::Ready(f) = Pin::new(&mut *body).poll_frame(cx) {
        return Poll::Ready(f);
    }
    pooled.poll_conn(cx);
    Pin::new(body).poll_frame(cx)
}

/// A streamed answer that keeps its connection going while it is read and
/// hands it back to the pool once the body has ended.
struct PooledBody {
    body: Incoming,
    conn: Option<Box<Pooled>>,
    pool: Weak<Pool>,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = match &mut this.conn {
            Some(pooled) => std::task::ready!(poll_body(&mut this.body, pooled, cx)),
            None => std::task::ready!(Pin::new(&mut this.body).poll_frame(cx)),
        };
        match &frame {
            None => {
                if let (Some(conn), Some(pool)) = (this.conn.take(), this.pool.upgrade()) {
                    pool.put(conn);
                }
            }
            // A broken exchange leaves the connection unusable.
            Some(Err(_)) => this.conn = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A raw HTTP/1 server: answers each request on a connection with
    /// `answer(n)` (n counts requests on that connection); counts accepted
    /// connections.
    async fn server(
        answer: impl Fn(usize) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> (SocketAddr, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut n = 0;
                    loop {
                        let mut chunk = [0u8; 4096];
                        let Ok(read) = s.read(&mut chunk).await else {
                            return;
                        };
                        if read == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..read]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            match answer(n) {
                                Some(bytes) => s.write_all(&bytes).await.unwrap(),
                                None => return,
                            }
                            n += 1;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn get() -> Request<Full<Bytes>> {
        Request::get("/x")
            .header(http::header::HOST, "test")
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    async fn text(resp: Response<ResponseBody>) -> String {
        let b = resp.into_body().collect().await.unwrap().to_bytes();
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
            let resp = pool.send(get()).await.unwrap();
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
            let resp = pool.send(get()).await.unwrap();
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
            let resp = pool.send(get()).await.unwrap();
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
        assert_eq!(text(pool.send(get()).await.unwrap()).await, "abcde");
        assert_eq!(text(pool.send(get()).await.unwrap()).await, big);
        assert_eq!(text(pool.send(get()).await.unwrap()).await, big);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_calls_open_their_own_connections_and_then_reuse_them() {
        let (addr, accepted) = server(|_| Some(ok("hi"))).await;
        let pool = Pool::new(addr, Duration::from_secs(30), 16);
        for _ in 0..3 {
            let calls = (0..4).map(|_| {
                let pool = pool.clone();
                async move { text(pool.send(get()).await.unwrap()).await }
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
        assert!(matches!(pool.send(get()).await, Err(SendError::Connect(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_expire() {
        let (addr, accepted) = server(|_| Some(ok("hi"))).await;
        let pool = Pool::new(addr, Duration::from_secs(30), 16);
        text(pool.send(get()).await.unwrap()).await;
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert!(pool.lock().is_empty(), "the sweeper dropped it");
        text(pool.send(get()).await.unwrap()).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}
