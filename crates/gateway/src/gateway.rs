//! [`Gateway`]: the public entry point.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, Method, header};
use http_body_util::{BodyExt, Limited};
use mortar_resilience::{BoxError, Client, Metrics, Resolve};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::answer::Answer;
use crate::cache::Cache;
use crate::proxy::{Peer, Shared};
use crate::rate_limit::RateLimiter;
use crate::routes::RouteTable;
use crate::spread::{Handoff, Slot, Spread};
use crate::{GatewayConfig, batch, problems, trace};

/// The node's edge. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
    /// How connections are spread over the serving threads, one entry per
    /// running [`Gateway::serve`].
    serving: Arc<Mutex<Vec<Arc<Spread>>>>,
}

impl Gateway {
    /// A gateway resolving services through `resolver`. Call inside a tokio
    /// runtime.
    pub fn new(resolver: Arc<dyn Resolve>, config: GatewayConfig) -> Gateway {
        let client = Client::new(resolver, config.client.clone());
        let verifier = config
            .auth
            .as_ref()
            .map(|auth| crate::auth::verifier(auth, client.clone()));
        Gateway {
            serving: Arc::default(),
            shared: Arc::new(Shared {
                verifier,
                routes: Arc::new(RouteTable::new(config.routes.clone())),
                client,
                cache: Arc::new(Cache::new(config.cache)),
                splits: Arc::default(),
                holds: Arc::default(),
                versions: Arc::default(),
                faults: Arc::default(),
                limiter: config.rate_limit.map(|r| Arc::new(RateLimiter::new(r))),
                config: Arc::new(config),
            }),
        }
    }

    /// Sends `service`'s traffic to its versions by weight (e.g.
    /// `[("v1", 90), ("v2", 10)]`); an empty list ends the split.
    pub fn set_split(&self, service: &str, weights: Vec<(String, u32)>) {
        tracing::info!(service, ?weights, "traffic split set");
        self.shared.splits.set(service, weights);
    }

    /// Holds `service`'s requests (at most `queue` at once, each for at
    /// most `timeout`) until [`Gateway::release`]: a recreate deploy calls
    /// this before stopping the old instances, so requests arriving during
    /// the swap wait for the new ones instead of failing.
    pub fn hold(&self, service: &str, timeout: Duration, queue: u32) {
        tracing::info!(
            service,
            timeout_ms = timeout.as_millis() as u64,
            queue,
            "holding requests"
        );
        self.shared.holds.hold(service, timeout, queue);
    }

    /// Lets `service`'s held requests go on (each once an instance is
    /// routable) and stops holding new ones.
    pub fn release(&self, service: &str) {
        tracing::info!(service, "releasing held requests");
        self.shared.holds.release(service);
    }

    /// Delays or fails a share of `service`'s requests before they are
    /// forwarded (or answered from the cache), until replaced or cleared
    /// with `None`: the node's fault injection for `mortar chaos`.
    pub fn set_fault(&self, service: &str, fault: Option<crate::UpstreamFault>) {
        tracing::info!(service, ?fault, "injected fault set");
        self.shared.faults.set(service, fault);
    }

    /// The cumulative statistics of `service`'s requests sent to `version`
    /// under a split; compare two snapshots with
    /// [`RequestStats::since`](mortar_resilience::RequestStats::since).
    pub fn version_stats(&self, service: &str, version: &str) -> mortar_resilience::RequestStats {
        self.shared.versions.snapshot(service, version)
    }

    /// The forwarding client: per-upstream calls and latency, breaker
    /// states (exported on the node's `/metrics`).
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    /// Open client connections per serving thread (see
    /// [`GatewayConfig::threads`]), summed over every listener the gateway
    /// serves: [`Gateway::serve`] deals each accepted connection to the
    /// thread serving the fewest, so an uneven spread shows here.
    pub fn open_connections(&self) -> Vec<usize> {
        let mut open = vec![0; self.shared.config.threads.max(1)];
        let serving = self.serving.lock().unwrap_or_else(|p| p.into_inner());
        for spread in serving.iter() {
            for (sum, n) in open.iter_mut().zip(spread.open_connections()) {
                *sum += n;
            }
        }
        open
    }

    /// The forwarding client's counters (retries, ejections, breakers).
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.shared.client.metrics()
    }

    /// The gateway as an axum router, to embed it in an application. Serve
    /// it with `into_make_service_with_connect_info::<SocketAddr>()` so the
    /// rate limit can key on client IPs (without it all clients share one
    /// bucket). [`Gateway::serve`] does not go through it: it hands each
    /// request straight to the gateway, which is cheaper.
    pub fn router(&self) -> Router {
        Router::new()
            .fallback(handle_routed)
            .with_state(self.shared.clone())
    }

    /// Serves HTTP/1.1 on `listener` until `shutdown` is cancelled, then
    /// stops accepting and waits for open connections to finish the
    /// requests they are serving. Fails at once if the listener cannot be
    /// shared between threads. A gateway may serve several listeners.
    ///
    /// Connections are served by [`GatewayConfig::threads`] threads, each
    /// running its own single-threaded runtime and accepting from the same
    /// listener, the way nginx runs one worker per core. A thread that
    /// accepts a connection hands it to the thread serving the fewest (see
    /// `spread.rs`): left to the race for `accept`, one thread took nearly
    /// every connection of a burst and became the bottleneck. A connection, its
    /// requests and the upstream connections they use all stay on one
    /// thread, so the hot path never wakes another thread; only the
    /// per-service breaker, retry budget and counters are shared. Against
    /// one multi-threaded runtime this cut the gateway's CPU time per
    /// request by about a quarter (docs/benchmarks.md). Each connection is
    /// read and written by its own task with `mortar-h1` (see
    /// `connection.rs`), without a router: the gateway has one handler, so
    /// routing layers would only add work to every request.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let listener = listener.into_std()?;
        let (spread, inboxes) = Spread::new(self.shared.config.threads);
        let serving = Serving::start(&self.serving, spread.clone());
        // Each thread holds a sender; all dropped = every thread drained.
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        for (i, inbox) in inboxes.into_iter().enumerate() {
            let listener = listener.try_clone()?;
            let thread = Thread {
                index: i,
                shared: Arc::new(self.shared.for_thread()),
                spread: spread.clone(),
            };
            let shutdown = shutdown.clone();
            let done = done_tx.clone();
            std::thread::Builder::new()
                .name(format!("mortar-gateway-{i}"))
                .spawn(move || {
                    serve_thread(thread, listener, inbox, shutdown);
                    drop(done);
                })?;
        }
        drop(done_tx);
        let _ = done_rx.recv().await;
        drop(serving);
        Ok(())
    }
}

/// A running [`Gateway::serve`]'s entry among those
/// [`Gateway::open_connections`] sums, removed when it returns.
struct Serving {
    list: Arc<Mutex<Vec<Arc<Spread>>>>,
    spread: Arc<Spread>,
}

impl Serving {
    fn start(list: &Arc<Mutex<Vec<Arc<Spread>>>>, spread: Arc<Spread>) -> Serving {
        list.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(spread.clone());
        Serving {
            list: list.clone(),
            spread,
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|s| !Arc::ptr_eq(s, &self.spread));
    }
}

/// What one serving thread works with.
struct Thread {
    index: usize,
    shared: Arc<Shared>,
    spread: Arc<Spread>,
}

impl Thread {
    /// A connection this thread accepted, if it should serve it; otherwise
    /// handed to the thread serving the fewest.
    fn keep_or_hand(
        &self,
        stream: TcpStream,
        remote: SocketAddr,
    ) -> Option<(TcpStream, SocketAddr, Slot)> {
        let slot = self.spread.deal(self.index);
        if slot.thread() == self.index {
            return Some((stream, remote, slot));
        }
        match stream.into_std() {
            Ok(stream) => self.spread.hand(Handoff {
                stream,
                remote,
                slot,
            }),
            Err(e) => tracing::debug!(error = %e, "cannot hand over an accepted connection"),
        }
        None
    }
}

/// One serving thread: its own runtime, accepting until `shutdown`.
fn serve_thread(
    thread: Thread,
    listener: std::net::TcpListener,
    inbox: mpsc::UnboundedReceiver<Handoff>,
    shutdown: CancellationToken,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "gateway thread cannot start its runtime; the other threads serve");
            thread.spread.retire(thread.index);
            return;
        }
    };
    runtime.block_on(async move {
        let client = &thread.shared.config.client;
        crate::wheel_anchor::spawn(client.per_try_timeout.min(client.deadline));
        match TcpListener::from_std(listener) {
            Ok(listener) => accept_loop(thread, listener, inbox, shutdown).await,
            Err(e) => {
                tracing::error!(error = %e, "gateway thread cannot use the listener");
                thread.spread.retire(thread.index);
            }
        }
    });
}

/// Accepts connections until `shutdown`, serving each itself or handing it
/// to the thread with the fewest (see [`Spread`]), and serves those other
/// threads hand over; then waits for the open ones to finish the requests
/// they are serving.
async fn accept_loop(
    thread: Thread,
    listener: TcpListener,
    mut inbox: mpsc::UnboundedReceiver<Handoff>,
    shutdown: CancellationToken,
) {
    // Each connection task holds a sender; all dropped = all drained.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    let open = Arc::new(Mutex::new(Open::default()));
    loop {
        let (stream, remote, slot) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => match thread.keep_or_hand(stream, remote) {
                    Some(kept) => kept,
                    None => continue,
                },
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            Some(handoff) = inbox.recv() => match TcpStream::from_std(handoff.stream) {
                Ok(stream) => (stream, handoff.remote, handoff.slot),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot serve a handed-over connection");
                    continue;
                }
            },
        };
        let shared = thread.shared.clone();
        let (id, stop) = lock(&open).add();
        let open = open.clone();
        let draining = open_tx.clone();
        tokio::spawn(async move {
            crate::connection::serve(shared, stream, remote, stop).await;
            lock(&open).stop.remove(&id);
            drop(slot);
            drop(draining);
        });
    }
    drop(listener);
    // Connections dealt to this thread and not yet received are closed
    // unserved, like those still in the listener's backlog.
    drop(inbox);
    // Tells every open connection to finish its request and close.
    lock(&open).stop.clear();
    drop(open_tx);
    let _ = open_rx.recv().await;
}

/// The shutdown signals of open connections: dropping a connection's
/// sender tells it to finish the request it serves and close.
///
/// Why not a clone of the cancellation token: a connection polls its
/// signal on every wake-up, and polling a token locks a mutex, whereas
/// polling a oneshot receiver is an atomic load.
#[derive(Default)]
struct Open {
    next: u64,
    stop: HashMap<u64, oneshot::Sender<()>>,
}

impl Open {
    fn add(&mut self) -> (u64, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        self.next += 1;
        self.stop.insert(self.next, tx);
        (self.next, rx)
    }
}

fn lock(open: &Mutex<Open>) -> std::sync::MutexGuard<'_, Open> {
    open.lock().unwrap_or_else(|p| p.into_inner())
}

/// Errors of `accept` that concern one connection only; anything else
/// (e.g. out of file descriptors) is logged and waited out.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "gateway cannot accept connections; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The router's entry: the same handler, with the peer from `ConnectInfo`.
async fn handle_routed(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let peer = match req.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(c) => Peer::new(c.0.ip()),
        None => Peer::unknown(),
    };
    handle(&shared, req, &peer).await
}

async fn handle<B>(shared: &Arc<Shared>, req: http::Request<B>, peer: &Peer) -> Response
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(refused) = refusal(shared, &parts, declared, peer) {
        return refused;
    }
    let limit = shared.config.max_body_bytes;
    let body = if body.is_end_stream() {
        Bytes::new()
    } else {
        match Limited::new(body, limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return problems::too_large(parts.uri.path(), limit);
            }
            Err(e) => {
                return problems::bad_request(
                    parts.uri.path(),
                    format!("request body could not be read: {e}"),
                );
            }
        }
    };
    let (answer, traceparent) = handle_buffered(shared, parts, body, peer).await;
    let mut resp = answer.into_response();
    resp.headers_mut()
        .insert(trace::TRACEPARENT_NAME, traceparent);
    resp
}

/// The checks made before a request's body is read: the client's rate
/// limit and the `declared` body length (taken from the framing the caller
/// has already read). `Some`: the answer refusing it.
pub(crate) fn refusal(
    shared: &Shared,
    parts: &http::request::Parts,
    declared: Option<u64>,
    peer: &Peer,
) -> Option<Response> {
    if let Some(limiter) = &shared.limiter {
        let ip = peer.ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if let Err(wait) = limiter.take(ip, 1.0) {
            tracing::debug!(client = %ip, path = parts.uri.path(), "rate limited");
            return Some(problems::rate_limited(parts.uri.path(), wait));
        }
    }
    let limit = shared.config.max_body_bytes;
    if declared.is_some_and(|l| l > limit as u64) {
        return Some(problems::too_large(parts.uri.path(), limit));
    }
    None
}

/// Everything after the body is read: trace context, batch or forward.
/// Returns the answer and the `traceparent` to send back with it.
pub(crate) async fn handle_buffered(
    shared: &Arc<Shared>,
    mut parts: http::request::Parts,
    body: Bytes,
    peer: &Peer,
) -> (Answer, HeaderValue) {
    if parts.method == Method::POST && parts.uri.path() == batch::PATH {
        let traceparent = trace::next_hop(parts.headers.get(trace::TRACEPARENT_NAME));
        let resp = batch::run(shared, &parts.headers, &body, peer).await;
        return (resp.into(), traceparent);
    }
    let traceparent = trace::replace(&mut parts.headers);
    parts.extensions = http::Extensions::new();
    let access =
        tracing::enabled!(tracing::Level::DEBUG).then(|| (parts.method.clone(), parts.uri.clone()));
    let answer = shared
        .forward(http::Request::from_parts(parts, body), peer)
        .await;
    let status = answer.status().as_u16();
    if status >= 500 || access.is_some() {
        access_log(&traceparent, access, status);
    }
    (answer, traceparent)
}

/// One line per forwarded request with its `trace_id`: at `debug`, or
/// `warn` for a 5xx answer (then without method and path unless debug is
/// on, since the request was not kept for it).
fn access_log(traceparent: &HeaderValue, request: Option<(Method, http::Uri)>, status: u16) {
    let trace_id = traceparent
        .to_str()
        .ok()
        .and_then(|v| v.get(3..35))
        .unwrap_or_default();
    let (method, path) = request
        .as_ref()
        .map_or(("", ""), |(m, u)| (m.as_str(), u.path()));
    if status >= 500 {
        tracing::warn!(trace_id, method, path, status, "gateway request failed");
    } else {
        tracing::debug!(trace_id, method, path, status, "gateway request");
    }
}

impl Peer {
    /// The client at `ip`, with its `X-Forwarded-For` entry formatted once
    /// per connection rather than once per request.
    pub(crate) fn new(ip: IpAddr) -> Peer {
        Peer {
            ip: Some(ip),
            forwarded_for: HeaderValue::try_from(ip.to_string()).ok(),
        }
    }

    fn unknown() -> Peer {
        Peer {
            ip: None,
            forwarded_for: None,
        }
    }
}
