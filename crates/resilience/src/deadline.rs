//! The call deadline, carried inside the request and told to the callee in
//! [`DEADLINE_HEADER`] so it can give up when the caller already has.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{HeaderValue, Request};
use tokio::time::Instant;
use tower::Service;

use crate::BoxError;
use crate::metrics::{Metrics, inc};

/// Header carrying the milliseconds left before the caller gives up.
pub const DEADLINE_HEADER: &str = "x-mortar-deadline-ms";

/// When the whole call must be finished; a request extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

/// Reads a deadline a caller sent us, so a service can pass it on.
pub fn from_headers(headers: &http::HeaderMap) -> Option<Duration> {
    let ms: u64 = headers.get(DEADLINE_HEADER)?.to_str().ok()?.parse().ok()?;
    Some(Duration::from_millis(ms))
}

/// Writes the time left for this attempt (`min(deadline, per_try)`) into the
/// request's header; used as a `map_request` step before each try.
pub fn stamp<B>(per_try: Duration) -> impl Fn(Request<B>) -> Request<B> + Clone {
    move |mut req: Request<B>| {
        let left = req
            .extensions()
            .get::<Deadline>()
            .map(|d| d.0.saturating_duration_since(Instant::now()))
            .unwrap_or(per_try)
            .min(per_try);
        req.headers_mut()
            .insert(DEADLINE_HEADER, HeaderValue::from(left.as_millis() as u64));
        req
    }
}

/// The call's deadline passed during an attempt; never retried.
#[derive(Debug, thiserror::Error)]
#[error("the call deadline passed")]
pub(crate) struct DeadlineReached;

/// One attempt: counts it, tells the callee the time it has left, and
/// bounds it by the per-try timeout or the call's deadline, whichever comes
/// first.
///
/// Why one layer: with a per-try timeout layer and an overall timeout
/// around the whole call, every call armed two timers. Since retries are
/// only made when their backoff ends before the deadline, bounding each
/// attempt by the deadline enforces it with a single timer per attempt.
#[derive(Clone)]
pub(crate) struct Attempt<S> {
    inner: S,
    per_try: Duration,
    metrics: Arc<Metrics>,
}

impl<S> Attempt<S> {
    pub(crate) fn new(inner: S, per_try: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            per_try,
            metrics,
        }
    }
}

impl<S, B, R> Service<Request<B>> for Attempt<S>
where
    S: Service<Request<B>, Response = R>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = R;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<R, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        inc(&self.metrics.attempts);
        let now = Instant::now();
        let try_end = now + self.per_try;
        let (end, by_deadline) = match req.extensions().get::<Deadline>() {
            Some(Deadline(d)) if *d < try_end => (*d, true),
            _ => (try_end, false),
        };
        let left = end.saturating_duration_since(now);
        req.headers_mut()
            .insert(DEADLINE_HEADER, HeaderValue::from(left.as_millis() as u64));
        let fut = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout_at(end, fut).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) if by_deadline => Err(DeadlineReached.into()),
                Err(_) => Err(tower::timeout::error::Elapsed::new().into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stamp_writes_the_smaller_of_deadline_and_per_try() {
        let mut req = Request::new(());
        req.extensions_mut()
            .insert(Deadline(Instant::now() + Duration::from_secs(60)));
        let req = stamp(Duration::from_millis(300))(req);
        assert_eq!(
            from_headers(req.headers()),
            Some(Duration::from_millis(300))
        );

        let mut req = Request::new(());
        req.extensions_mut()
            .insert(Deadline(Instant::now() + Duration::from_millis(100)));
        let left = from_headers(stamp(Duration::from_secs(5))(req).headers()).unwrap();
        assert!(left <= Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_ends_at_the_per_try_timeout_or_the_deadline() {
        let hang = tower::service_fn(|req: Request<()>| async move {
            let left = from_headers(req.headers());
            std::future::pending::<()>().await;
            Ok::<_, BoxError>(left)
        });
        let mut attempt = Attempt::new(hang, Duration::from_millis(300), Arc::default());
        let mut req = Request::new(());
        req.extensions_mut()
            .insert(Deadline(Instant::now() + Duration::from_secs(60)));
        let e = attempt.call(req).await.unwrap_err();
        assert!(e.is::<tower::timeout::error::Elapsed>(), "{e}");

        let mut req = Request::new(());
        req.extensions_mut()
            .insert(Deadline(Instant::now() + Duration::from_millis(100)));
        let e = attempt.call(req).await.unwrap_err();
        assert!(e.is::<DeadlineReached>(), "{e}");
        assert_eq!(attempt.metrics.snapshot().attempts, 2);
    }
}
