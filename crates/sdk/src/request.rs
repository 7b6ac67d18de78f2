//! What happens around every request a service answers: it joins the
//! caller's trace (or starts one), runs inside a `request` span carrying
//! `trace_id` (so every line the handler logs names it, and the resilient
//! client and bus client continue it), is counted and timed per route, and
//! is logged when it finishes — at `debug`, or `warn` for a 5xx.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use mortar_trace::{TRACEPARENT, TraceContext};
use tracing::Instrument;

use crate::metrics::ServiceMetrics;

/// Paths that are the platform's, not the service's: probed every second,
/// so neither logged nor counted.
fn is_platform(path: &str) -> bool {
    path.starts_with("/health/") || path == "/metrics"
}

/// The route label of a request: its matched pattern, never the raw path.
fn route_of(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned())
}

/// Middleware: see the module docs.
pub(crate) async fn observe(
    State(metrics): State<ServiceMetrics>,
    req: Request,
    next: Next,
) -> Response {
    if is_platform(req.uri().path()) {
        return next.run(req).await;
    }
    let incoming = req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok());
    // This hop's own span in the caller's trace.
    let ctx = TraceContext::continue_or_start(incoming).child();
    let route = route_of(&req);
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        trace_id = %ctx.trace_id(),
        method = %method,
        route = %route,
    );
    let started = Instant::now();
    let resp = mortar_trace::scope(ctx, next.run(req).instrument(span.clone())).await;
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    metrics.record(&route, method.as_str(), status, elapsed);
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, duration_ms, "request failed");
        } else {
            tracing::debug!(status, duration_ms, "request");
        }
    });
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn handlers_run_in_the_callers_trace_and_requests_are_counted() {
        let metrics = ServiceMetrics::default();
        let app = Router::new()
            .route(
                "/v1/items/{id}",
                get(|| async {
                    mortar_trace::current()
                        .map(|c| c.trace_id())
                        .unwrap_or_default()
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                metrics.clone(),
                observe,
            ));
        let req = axum::http::Request::get("/v1/items/42")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"4bf92f3577b34da6a3ce929d0e0e4736");

        // No traceparent: a new trace all the same.
        let req = axum::http::Request::get("/v1/items/7")
            .body(Body::empty())
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert_eq!(body.len(), 32);

        let text = metrics.render();
        assert!(
            text.contains(
                r#"mortar_http_requests_total{route="/v1/items/{id}",method="GET",status="200"} 2"#
            ),
            "{text}"
        );
    }
}
