//! Every error the gateway itself answers, as problem+json.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use mortar_resilience::CallError;
use mortar_sdk::Problem;

fn with_instance(mut p: Problem, path: &str) -> Problem {
    p.instance = Some(path.to_owned());
    p
}

/// 404 naming the prefixes that do exist.
pub(crate) fn no_route(path: &str, prefixes: Vec<String>) -> Response {
    let detail = format!(
        "no route for `{path}`; known prefixes: {}",
        if prefixes.is_empty() {
            "none".to_owned()
        } else {
            prefixes.join(", ")
        }
    );
    with_instance(Problem::not_found(detail), path)
        .with("known_prefixes", prefixes)
        .into_response()
}

/// A failed forward: 503 when nothing can answer, 504 on time-outs, 502
/// when the upstream broke.
pub(crate) fn call_failed(path: &str, error: &CallError, retry_after: Duration) -> Response {
    let status = match error {
        CallError::NoInstances { .. } | CallError::BreakerOpen { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        CallError::Timeout { .. } | CallError::Deadline { .. } => StatusCode::GATEWAY_TIMEOUT,
        CallError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        CallError::Body { .. } => StatusCode::BAD_REQUEST,
        CallError::Upstream { .. } => StatusCode::BAD_GATEWAY,
    };
    let mut resp = with_instance(Problem::new(status, error.to_string()), path)
        .with("service", error.service())
        .into_response();
    if matches!(error, CallError::BreakerOpen { .. }) {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after.as_secs().max(1)),
        );
    }
    resp
}

/// 413 for a body over the limit.
pub(crate) fn too_large(path: &str, limit: usize) -> Response {
    with_instance(
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds the gateway's limit of {limit} bytes; send less"),
        ),
        path,
    )
    .with("limit_bytes", limit)
    .into_response()
}

/// 429 with `Retry-After`.
pub(crate) fn rate_limited(path: &str, wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut resp = with_instance(
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many requests from this client; retry after {secs} s"),
        ),
        path,
    )
    .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

/// 400 for a malformed request the gateway itself reads.
pub(crate) fn bad_request(path: &str, detail: impl Into<String>) -> Response {
    with_instance(Problem::bad_request(detail), path).into_response()
}

/// 503 for a request held while its service was redeployed, when the
/// queue was full or the swap took longer than the hold time.
pub(crate) fn held(path: &str, service: &str, refused: &crate::hold::HoldRefused) -> Response {
    use crate::hold::HoldRefused;
    let detail = match refused {
        HoldRefused::QueueFull(n) => format!(
            "service `{service}` is being redeployed and {n} requests already wait for it; retry shortly"
        ),
        HoldRefused::TimedOut(t) => format!(
            "service `{service}` is being redeployed and was not back within {t:?}; retry shortly"
        ),
    };
    let mut resp = with_instance(Problem::new(StatusCode::SERVICE_UNAVAILABLE, detail), path)
        .with("service", service)
        .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// 408 for a request head that did not arrive in time.
pub(crate) fn head_timeout(timeout: Duration) -> Response {
    Problem::new(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "request head not complete within {} s of its first byte; send the whole head at once",
            timeout.as_secs_f64()
        ),
    )
    .into_response()
}

/// The answer to a request whose body did not arrive in time.
pub(crate) fn body_timeout(path: &str, timeout: Duration) -> Response {
    Problem::new(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "request body for {path} not complete within {} s of its head; send the body without pauses",
            timeout.as_secs_f64()
        ),
    )
    .into_response()
}

/// The answer to a request whose head or framing cannot be read: 431 for
/// a head over the limits, 501 for a transfer coding, 417 for an
/// expectation the gateway does not meet, 400 for anything else.
pub(crate) fn unreadable(error: &mortar_h1::H1Error) -> Response {
    use mortar_h1::H1Error;
    let status = match error {
        H1Error::HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        H1Error::UnsupportedTransferEncoding(_) => StatusCode::NOT_IMPLEMENTED,
        H1Error::UnsupportedExpectation(_) => StatusCode::EXPECTATION_FAILED,
        _ => StatusCode::BAD_REQUEST,
    };
    Problem::new(status, error.to_string()).into_response()
}
