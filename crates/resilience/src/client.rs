//! [`Client`]: call a service by name through the resilient stack.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tower::retry::Policy;

use crate::balance::Members;
use crate::breaker::{BreakerLayer, BreakerOpen, BreakerState};
use crate::deadline::{self, DeadlineReached};
use crate::discovery::{self, Setup};
use crate::metrics::{Metrics, UpstreamMetrics, UpstreamSnapshot, inc};
use crate::raw::RawResponse;
use crate::retry::{self, RetryPolicy};
use crate::{BoxError, CallError, ClientConfig, EndpointError, Resolve};

/// The body of responses the client returns.
pub type ResponseBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// Graceful degradation: given the service and the error, may answer in the
/// failed call's place (e.g. a cached or default response).
pub type Fallback =
    Arc<dyn Fn(&str, &CallError) -> Option<Response<ResponseBody>> + Send + Sync + 'static>;

/// `service`, or `service` NUL `version` for a version-filtered stack.
type StackKey = String;

/// The stack of one (service, version): what every call to it goes
/// through, outermost first.
struct ServiceStack {
    retry: Arc<retry::Shared>,
    breaker: BreakerLayer,
    members: Arc<Members>,
    live: Arc<AtomicUsize>,
    upstream: Arc<UpstreamMetrics>,
    _stop: DropGuard,
}

/// Calls services by name: discovery, p2c/peak-EWMA balancing, per-try
/// timeout, deadline, budgeted retries, outlier ejection and a per-service
/// circuit breaker. Cheap to clone; clones share pools, stacks and metrics.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    resolver: Arc<dyn Resolve>,
    config: ClientConfig,
    metrics: Arc<Metrics>,
    fallback: Option<Fallback>,
    stacks: Mutex<HashMap<StackKey, Arc<ServiceStack>>>,
    /// Shared with forks: a service has one breaker however many threads
    /// call it.
    breakers: Arc<Mutex<HashMap<String, BreakerLayer>>>,
    /// Shared with forks: one retry budget per service.
    retries: Arc<Mutex<HashMap<String, Arc<retry::Shared>>>>,
    /// Shared with forks: calls and latency per upstream service.
    upstreams: Arc<Mutex<HashMap<String, Arc<UpstreamMetrics>>>>,
}

impl Client {
    /// A client resolving names through `resolver`. Must be used inside a
    /// tokio runtime (stacks spawn their discovery tasks on first use).
    pub fn new(resolver: Arc<dyn Resolve>, config: ClientConfig) -> Client {
        Self::build(resolver, config, None)
    }

    /// Like [`Client::new`], with a fallback consulted when a call fails.
    pub fn with_fallback(
        resolver: Arc<dyn Resolve>,
        config: ClientConfig,
        fallback: Fallback,
    ) -> Client {
        Self::build(resolver, config, Some(fallback))
    }

    fn build(
        resolver: Arc<dyn Resolve>,
        config: ClientConfig,
        fallback: Option<Fallback>,
    ) -> Client {
        Client {
            inner: Arc::new(Inner {
                resolver,
                config,
                metrics: Arc::default(),
                fallback,
                stacks: Mutex::default(),
                breakers: Arc::default(),
                retries: Arc::default(),
                upstreams: Arc::default(),
            }),
        }
    }

    /// A client for another thread's runtime: it shares this client's
    /// breakers, retry budgets, metrics and fallback, but keeps its own
    /// connection pools, balancer state and discovery watches, which run on
    /// the runtime that first uses them.
    ///
    /// Why: a server that runs one single-threaded runtime per core (the
    /// gateway) then sends each request on connections owned by the thread
    /// that serves it, with no lock or cache line shared with other threads
    /// on the hot path, while a failing service still trips one breaker.
    pub fn fork(&self) -> Client {
        let inner = &self.inner;
        Client {
            inner: Arc::new(Inner {
                resolver: inner.resolver.clone(),
                config: inner.config.clone(),
                metrics: inner.metrics.clone(),
                fallback: inner.fallback.clone(),
                stacks: Mutex::default(),
                breakers: inner.breakers.clone(),
                retries: inner.retries.clone(),
                upstreams: inner.upstreams.clone(),
            }),
        }
    }

    /// The client's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Calls, failures and latency per upstream service called so far,
    /// sorted by service.
    pub fn upstreams(&self) -> Vec<(String, UpstreamSnapshot)> {
        let upstreams = self
            .inner
            .upstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = upstreams
            .iter()
            .map(|(service, m)| (service.clone(), m.snapshot()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The breaker state of every service called so far, sorted by service.
    pub fn breaker_states(&self) -> Vec<(String, BreakerState)> {
        let breakers = self
            .inner
            .breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = breakers
            .iter()
            .map(|(service, b)| (service.clone(), b.state()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The breaker state of `service` (closed if never called).
    pub fn breaker_state(&self, service: &str) -> BreakerState {
        self.breaker(service).state()
    }

    /// How many instances of `service` (at `version`, or any) this client
    /// can send to now. Starts following the service when it does not yet,
    /// so a caller can wait for the first instance before sending.
    pub fn live_instances(&self, service: &str, version: Option<&str>) -> usize {
        self.stack(service, version).live.load(Ordering::Relaxed)
    }

    /// Calls any instance of `service`.
    pub async fn call(
        &self,
        service: &str,
        req: Request<Bytes>,
    ) -> Result<Response<ResponseBody>, CallError> {
        self.call_version(service, None, req).await
    }

    /// Calls an instance of `service` whose version is `version` (any when
    /// `None`); the gateway's traffic split uses this.
    pub async fn call_version(
        &self,
        service: &str,
        version: Option<&str>,
        req: Request<Bytes>,
    ) -> Result<Response<ResponseBody>, CallError> {
        let raw = self.call_raw(service, version, req).await?;
        raw.into_http_for(service)
    }

    /// Like [`Client::call_version`], with the answer's fields as they
    /// arrived rather than in a `HeaderMap`: for a proxy that passes the
    /// answer on (see [`RawResponse`]).
    pub async fn call_raw(
        &self,
        service: &str,
        version: Option<&str>,
        mut req: Request<Bytes>,
    ) -> Result<RawResponse, CallError> {
        let inner = &self.inner;
        inc(&inner.metrics.calls);
        propagate_trace(&mut req);
        let stack = self.stack(service, version);
        let started = Instant::now();
        let result = self.call_stack(service, &stack, req, started).await;
        stack.upstream.record(started.elapsed(), result.is_err());
        result
    }

    async fn call_stack(
        &self,
        service: &str,
        stack: &ServiceStack,
        req: Request<Bytes>,
        started: Instant,
    ) -> Result<RawResponse, CallError> {
        let inner = &self.inner;
        let mut budget = inner.config.deadline;
        if let Some(asked) = deadline::from_headers(req.headers()) {
            budget = budget.min(asked);
        }
        let result = if stack.live.load(Ordering::Relaxed) == 0 {
            inc(&inner.metrics.no_instances);
            Err(CallError::NoInstances {
                service: service.to_owned(),
            })
        } else {
            // Each attempt is bounded by this deadline (see
            // `deadline::Attempt`) and retries are only made when they can
            // start before it, so no timer around the whole call is needed.
            let deadline = started + budget;
            match self.run(stack, req, started, deadline).await {
                Ok(resp) => return Ok(resp),
                Err(e) if e.is::<DeadlineReached>() => {
                    inc(&inner.metrics.deadlines_exceeded);
                    Err(CallError::Deadline {
                        service: service.to_owned(),
                        deadline: budget,
                    })
                }
                Err(e) => Err(self.classify(service, e)),
            }
        };
        let error = match result {
            Ok(resp) => return Ok(resp),
            Err(e) => e,
        };
        inc(&inner.metrics.failures);
        tracing::debug!(service, error = %error, "call failed");
        if let Some(fallback) = &inner.fallback
            && let Some(resp) = fallback(service, &error)
        {
            inc(&inner.metrics.fallbacks);
            tracing::info!(service, reason = %error, "answered by fallback");
            return Ok(RawResponse::from_http(resp));
        }
        Err(error)
    }

    /// Retries: every attempt sends the same request (each attempt sets its
    /// own deadline and `Host` fields on it), and the policy decides
    /// (budget, backoff, deadline) whether there is a next.
    ///
    /// The layers are plain calls rather than a boxed tower stack: every
    /// layer of one allocated a future and cloned services per call, for
    /// no flexibility the client uses. Lending the request to each attempt
    /// rather than copying it for a possible retry saves copying its
    /// fields on every call, retried or not.
    async fn run(
        &self,
        stack: &ServiceStack,
        mut req: Request<Bytes>,
        started: Instant,
        deadline: Instant,
    ) -> Result<RawResponse, BoxError> {
        let mut policy = RetryPolicy {
            shared: stack.retry.clone(),
            attempt: 0,
            deadline,
        };
        // The first attempt starts when the call did: one clock read fewer.
        let mut now = started;
        loop {
            let mut result = self.attempt(stack, &req, now, deadline).await;
            match policy.retry(&mut req, &mut result) {
                Some(backoff) => {
                    backoff.await;
                    now = Instant::now();
                }
                None => return result,
            }
        }
    }

    /// One attempt, starting `now`: the breaker admits it, it is bounded by
    /// the per-try timeout and the deadline, and the balancer sends it.
    async fn attempt(
        &self,
        stack: &ServiceStack,
        req: &Request<Bytes>,
        now: Instant,
        deadline: Instant,
    ) -> Result<RawResponse, BoxError> {
        let outcome = stack.breaker.admit()?;
        let end = deadline::begin_attempt(
            now,
            deadline,
            self.inner.config.per_try_timeout,
            &self.inner.metrics,
        );
        let result = deadline::bounded(&end, async {
            let sent = stack.members.send(req, &end.header, now).await;
            sent.map_err(BoxError::from)
        })
        .await;
        outcome.finish(matches!(&result, Ok(r) if !r.status.is_server_error()));
        result
    }

    fn classify(&self, service: &str, error: BoxError) -> CallError {
        let service = service.to_owned();
        if error.is::<BreakerOpen>() {
            return CallError::BreakerOpen { service };
        }
        if error.is::<tower::timeout::error::Elapsed>() {
            return CallError::Timeout {
                service,
                timeout: self.inner.config.per_try_timeout,
            };
        }
        if error.is::<EndpointError>() {
            return CallError::Upstream {
                service,
                source: error,
            };
        }
        CallError::Upstream {
            service,
            source: error,
        }
    }

    fn breaker(&self, service: &str) -> BreakerLayer {
        let mut breakers = self
            .inner
            .breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        breakers
            .entry(service.to_owned())
            .or_insert_with(|| {
                BreakerLayer::new(
                    service,
                    self.inner.config.breaker.clone(),
                    self.inner.metrics.clone(),
                )
            })
            .clone()
    }

    fn upstream(&self, service: &str) -> Arc<UpstreamMetrics> {
        let mut upstreams = self
            .inner
            .upstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        upstreams.entry(service.to_owned()).or_default().clone()
    }

    fn retry_shared(&self, service: &str) -> Arc<retry::Shared> {
        let mut retries = self.inner.retries.lock().unwrap_or_else(|p| p.into_inner());
        retries
            .entry(service.to_owned())
            .or_insert_with(|| {
                Arc::new(retry::Shared::new(
                    service,
                    self.inner.config.retry.clone(),
                    self.inner.metrics.clone(),
                ))
            })
            .clone()
    }

    fn stack(&self, service: &str, version: Option<&str>) -> Arc<ServiceStack> {
        let key: std::borrow::Cow<'_, str> = match version {
            None => service.into(),
            Some(v) => format!("{service}\0{v}").into(),
        };
        if let Some(s) = self
            .inner
            .stacks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key.as_ref())
        {
            return s.clone();
        }
        let built = Arc::new(self.build_stack(service, version));
        let mut stacks = self.inner.stacks.lock().unwrap_or_else(|p| p.into_inner());
        stacks.entry(key.into_owned()).or_insert(built).clone()
    }

    fn build_stack(&self, service: &str, version: Option<&str>) -> ServiceStack {
        let inner = &self.inner;
        let cfg = &inner.config;
        let cancel = CancellationToken::new();
        let members = Members::new(cfg.ewma_decay);
        let live = discovery::spawn(
            Setup {
                service: service.to_owned(),
                version: version.map(str::to_owned),
                pool_idle_timeout: cfg.pool_idle_timeout,
                connector: cfg.connector.clone(),
                default_rtt: cfg.default_rtt,
                outlier: cfg.outlier.clone(),
                metrics: inner.metrics.clone(),
                cancel: cancel.clone(),
            },
            members.clone(),
            inner.resolver.watch(service),
        );
        // A version (a blue-green candidate) gets a breaker of its own:
        // a failing new version must not open the breaker of the version
        // that serves most of the traffic.
        let breaker = match version {
            None => self.breaker(service),
            Some(v) => self.breaker(&format!("{service}@{v}")),
        };
        ServiceStack {
            retry: self.retry_shared(service),
            breaker,
            members,
            live,
            upstream: self.upstream(service),
            _stop: cancel.drop_guard(),
        }
    }
}

/// Continues the trace of the request or message being handled: a call
/// made without its own `traceparent` gets the current trace with a new
/// span id (the gateway, which sets one itself, is left alone).
fn propagate_trace(req: &mut Request<Bytes>) {
    // Outside any trace (the gateway's threads) there is nothing to
    // continue, and no field to look up.
    let Some(current) = mortar_trace::current() else {
        return;
    };
    if req.headers().contains_key(TRACEPARENT) {
        return;
    }
    if let Ok(value) = http::HeaderValue::try_from(current.child().header()) {
        req.headers_mut().insert(TRACEPARENT, value);
    }
}

/// [`mortar_trace::TRACEPARENT`] as a header name: looking a field up by a
/// `&str` parses the name again on every call.
const TRACEPARENT: http::HeaderName = http::HeaderName::from_static(mortar_trace::TRACEPARENT);

/// Reads a request body into memory, up to `limit` bytes, so the request can
/// be replayed by retries.
pub async fn buffer_request<B>(
    service: &str,
    req: Request<B>,
    limit: usize,
) -> Result<Request<Bytes>, CallError>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    let bytes = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|source| {
            if source.is::<http_body_util::LengthLimitError>() {
                CallError::BodyTooLarge {
                    service: service.to_owned(),
                    limit,
                }
            } else {
                CallError::Body {
                    service: service.to_owned(),
                    source,
                }
            }
        })?;
    Ok(Request::from_parts(parts, bytes.to_bytes()))
}
