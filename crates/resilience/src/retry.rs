//! The retry policy: which failures are retried, how long to wait, and the
//! budget that keeps retries from multiplying an outage.
//!
//! Retried: connect errors (the request never left, so any method), and for
//! idempotent requests (GET, HEAD, OPTIONS, PUT, DELETE, or any request with
//! an `Idempotency-Key` header) also timeouts, broken exchanges and 502/503/
//! 504 answers. Never retried: a shed call of an open breaker. Every retry
//! needs a withdrawal from a shared [`TpsBudget`], waits a full-jitter
//! backoff, and must fit in the call's deadline.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use tokio::time::Instant;
use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};

use crate::breaker::BreakerOpen;
use crate::metrics::{Metrics, inc};
use crate::raw::Answer;
use crate::{BoxError, EndpointError, RetryConfig, backoff};

/// Header that marks a non-idempotent request as safe to repeat.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// [`IDEMPOTENCY_KEY`] as a header name, parsed once rather than per call.
const IDEMPOTENCY_NAME: http::HeaderName = http::HeaderName::from_static(IDEMPOTENCY_KEY);

/// Whether repeating `req` cannot do harm twice.
pub fn is_idempotent<B>(req: &Request<B>) -> bool {
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    ) || req.headers().contains_key(IDEMPOTENCY_NAME)
}

/// What one service's retries share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) service: String,
    pub(crate) config: RetryConfig,
    pub(crate) budget: TpsBudget,
    pub(crate) metrics: Arc<Metrics>,
}

impl Shared {
    pub(crate) fn new(service: &str, config: RetryConfig, metrics: Arc<Metrics>) -> Self {
        let budget = TpsBudget::new(
            config.budget_ttl,
            config.budget_min_per_sec,
            config.budget_ratio,
        );
        Self {
            service: service.to_owned(),
            config,
            budget,
            metrics,
        }
    }
}

/// The per-call policy (tower clones it for every call).
#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    pub(crate) shared: Arc<Shared>,
    pub(crate) attempt: u32,
    /// When the whole call must be done: a retry must start before it.
    pub(crate) deadline: Instant,
}

/// Why an outcome may be retried, or `None` when it may not.
fn retry_reason<R: Answer>(idempotent: bool, result: &Result<R, BoxError>) -> Option<&'static str> {
    match result {
        Ok(resp) => match resp.status() {
            StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
                if idempotent =>
            {
                Some("upstream 5xx")
            }
            _ => None,
        },
        Err(e) if e.is::<BreakerOpen>() => None,
        Err(e) => match e.downcast_ref::<EndpointError>() {
            Some(EndpointError::Connect { .. }) => Some("connect error"),
            _ if e.is::<tower::timeout::error::Elapsed>() && idempotent => Some("per-try timeout"),
            Some(EndpointError::Exchange { .. }) if idempotent => Some("exchange failed"),
            _ => None,
        },
    }
}

impl<R: Answer> Policy<Request<Bytes>, R, BoxError> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        req: &mut Request<Bytes>,
        result: &mut Result<R, BoxError>,
    ) -> Option<Self::Future> {
        let shared = &self.shared;
        if self.attempt == 0 {
            shared.budget.deposit();
        }
        if let Err(e) = result
            && e.is::<tower::timeout::error::Elapsed>()
        {
            inc(&shared.metrics.timeouts);
        }
        let reason = retry_reason(is_idempotent(req), result)?;
        if self.attempt >= shared.config.max_retries {
            tracing::debug!(service = %shared.service, reason, attempts = self.attempt + 1, "not retrying: attempts used up");
            return None;
        }
        let delay = backoff::full_jitter(
            shared.config.base_backoff,
            shared.config.max_backoff,
            self.attempt,
        );
        if Instant::now() + delay >= self.deadline {
            tracing::debug!(service = %shared.service, reason, "not retrying: deadline too close");
            return None;
        }
        if !shared.budget.withdraw() {
            inc(&shared.metrics.retries_denied_by_budget);
            tracing::warn!(service = %shared.service, reason, "not retrying: retry budget exhausted");
            return None;
        }
        self.attempt += 1;
        inc(&shared.metrics.retries);
        tracing::info!(service = %shared.service, reason, attempt = self.attempt, backoff_ms = delay.as_millis() as u64, "retrying");
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, req: &Request<Bytes>) -> Option<Request<Bytes>> {
        let mut copy = Request::new(req.body().clone());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        Some(copy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Response;
    use std::time::Duration;

    fn policy(min_per_sec: u32, ratio: f32) -> RetryPolicy {
        let config = RetryConfig {
            max_retries: 3,
            base_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
            budget_ratio: ratio,
            budget_min_per_sec: min_per_sec,
            budget_ttl: Duration::from_secs(10),
        };
        RetryPolicy {
            shared: Arc::new(Shared::new("svc", config, Arc::default())),
            attempt: 0,
            deadline: Instant::now() + Duration::from_secs(60),
        }
    }

    fn unavailable() -> Result<Response<()>, BoxError> {
        Ok(Response::builder().status(503).body(()).unwrap())
    }

    #[tokio::test]
    async fn idempotent_requests_retry_and_posts_do_not() {
        let mut p = policy(10, 0.2);
        let mut get = Request::get("/x").body(Bytes::new()).unwrap();
        assert!(p.clone().retry(&mut get, &mut unavailable()).is_some());
        let mut post = Request::post("/x").body(Bytes::new()).unwrap();
        assert!(p.retry(&mut post, &mut unavailable()).is_none());
        let mut keyed = Request::post("/x")
            .header(IDEMPOTENCY_KEY, "k1")
            .body(Bytes::new())
            .unwrap();
        assert!(p.retry(&mut keyed, &mut unavailable()).is_some());
        let mut ok = Ok(Response::new(()));
        assert!(p.clone().retry(&mut get, &mut ok).is_none());
        let mut shed: Result<Response<()>, BoxError> = Err(BreakerOpen {
            service: "svc".into(),
        }
        .into());
        assert!(p.clone().retry(&mut get, &mut shed).is_none());
    }

    #[tokio::test]
    async fn budget_stops_retries() {
        // No free retries and 10% of traffic: after the budget is spent,
        // failures are returned instead of retried.
        let p = policy(0, 0.1);
        let mut granted = 0;
        for _ in 0..100 {
            let mut per_call = p.clone();
            let mut req = Request::get("/x").body(Bytes::new()).unwrap();
            if per_call.retry(&mut req, &mut unavailable()).is_some() {
                granted += 1;
            }
        }
        assert!(
            granted <= 15,
            "{granted} retries for 100 calls at a 10% budget"
        );
        assert!(granted >= 1);
        assert!(p.shared.metrics.snapshot().retries_denied_by_budget >= 85);
    }

    #[tokio::test]
    async fn max_retries_caps_attempts() {
        let mut p = policy(1000, 1.0);
        let mut req = Request::get("/x").body(Bytes::new()).unwrap();
        let mut tries = 0;
        while p.retry(&mut req, &mut unavailable()).is_some() {
            tries += 1;
        }
        assert_eq!(tries, 3);
    }
}
