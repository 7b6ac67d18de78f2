//! The call deadline, carried inside the request and told to the callee in
//! [`DEADLINE_HEADER`] so it can give up when the caller already has.

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;
use http::HeaderValue;
use tokio::time::Instant;

use crate::BoxError;
use crate::metrics::{Metrics, inc};

/// Header carrying the milliseconds left before the caller gives up.
pub const DEADLINE_HEADER: &str = "x-mortar-deadline-ms";

/// [`DEADLINE_HEADER`] as a header name, parsed once rather than per call.
pub(crate) const DEADLINE_NAME: http::HeaderName = http::HeaderName::from_static(DEADLINE_HEADER);

/// Reads a deadline a caller sent us, so a service can pass it on.
pub fn from_headers(headers: &http::HeaderMap) -> Option<Duration> {
    let ms: u64 = headers.get(DEADLINE_NAME)?.to_str().ok()?.parse().ok()?;
    Some(Duration::from_millis(ms))
}

/// The call's deadline passed during an attempt; never retried.
#[derive(Debug, thiserror::Error)]
#[error("the call deadline passed")]
pub(crate) struct DeadlineReached;

/// When one attempt must end: at the per-try timeout or the call's
/// deadline, whichever comes first.
///
/// Why bound attempts by the deadline: with a per-try timeout and a second
/// timer around the whole call, every call armed two timers. Since retries
/// are only made when their backoff ends before the deadline, bounding each
/// attempt by it enforces the deadline with a single timer per attempt.
#[derive(Debug, Clone)]
pub(crate) struct AttemptEnd {
    at: Instant,
    by_deadline: bool,
    /// The time left, for [`DEADLINE_HEADER`].
    pub(crate) header: HeaderValue,
}

/// Starts an attempt at `now` within the call's `deadline`: counts it, and
/// says when it ends and what to tell the callee in [`DEADLINE_HEADER`]
/// (the endpoint writes that field on the request it sends).
///
/// The deadline is passed along rather than kept in the request's
/// extensions: inserting one allocates a map on every call.
pub(crate) fn begin_attempt(
    now: Instant,
    deadline: Instant,
    per_try: Duration,
    metrics: &Metrics,
) -> AttemptEnd {
    inc(&metrics.attempts);
    let try_end = now + per_try;
    let (at, by_deadline) = if deadline < try_end {
        (deadline, true)
    } else {
        (try_end, false)
    };
    let left = at.saturating_duration_since(now);
    AttemptEnd {
        at,
        by_deadline,
        header: HeaderValue::from(left.as_millis() as u64),
    }
}

/// Runs an attempt until `end`: a per-try timeout ends it with tower's
/// `Elapsed` (retried for idempotent requests), the deadline with
/// [`DeadlineReached`].
///
/// A mapped future rather than an `async` block: one would keep the
/// timeout it awaits twice in its state (once as captured, once as
/// awaited), doubling a future that every call moves whole on each await.
pub(crate) fn bounded<T, F>(
    end: &AttemptEnd,
    attempt: F,
) -> impl Future<Output = Result<T, BoxError>> + use<T, F>
where
    F: Future<Output = Result<T, BoxError>>,
{
    let by_deadline = end.by_deadline;
    tokio::time::timeout_at(end.at, attempt).map(move |outcome| match outcome {
        Ok(result) => result,
        Err(_) if by_deadline => Err(DeadlineReached.into()),
        Err(_) => Err(tower::timeout::error::Elapsed::new().into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the callee reads from the field the attempt sends.
    fn told(end: &AttemptEnd) -> Option<Duration> {
        let mut headers = http::HeaderMap::new();
        headers.insert(DEADLINE_NAME, end.header.clone());
        from_headers(&headers)
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_ends_at_the_per_try_timeout_or_the_deadline() {
        let metrics = Metrics::default();
        let hang = std::future::pending::<Result<(), BoxError>>;
        let far = Instant::now() + Duration::from_secs(60);
        let end = begin_attempt(Instant::now(), far, Duration::from_millis(300), &metrics);
        assert_eq!(told(&end), Some(Duration::from_millis(300)));
        let e = bounded(&end, hang()).await.unwrap_err();
        assert!(e.is::<tower::timeout::error::Elapsed>(), "{e}");

        let near = Instant::now() + Duration::from_millis(100);
        let end = begin_attempt(Instant::now(), near, Duration::from_millis(300), &metrics);
        assert_eq!(told(&end), Some(Duration::from_millis(100)));
        let e = bounded(&end, hang()).await.unwrap_err();
        assert!(e.is::<DeadlineReached>(), "{e}");
        assert_eq!(metrics.snapshot().attempts, 2);
    }
}
