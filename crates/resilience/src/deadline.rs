//! The call deadline, carried inside the request and told to the callee in
//! [`DEADLINE_HEADER`] so it can give up when the caller already has.

use std::time::Duration;

use http::{HeaderValue, Request};
use tokio::time::Instant;

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
}
