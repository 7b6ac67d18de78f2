//! [`Answer`]: what the gateway sends back for a request.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use mortar_resilience::RawResponse;
use mortar_sdk::Problem;

use crate::hop_by_hop::strip_hop_by_hop;

/// The answer to one request.
pub(crate) enum Answer {
    /// Made by the gateway: a refusal, a cached page, a batch.
    Made(Response),
    /// An instance's answer, passed on with its fields as they arrived.
    ///
    /// Why not an `http::Response`: building its `HeaderMap` only to write
    /// it out again was about a tenth of the gateway's instructions per
    /// forwarded call (docs/benchmarks.md).
    Passed(RawResponse),
}

impl From<Response> for Answer {
    fn from(resp: Response) -> Self {
        Answer::Made(resp)
    }
}

impl Answer {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Answer::Made(resp) => resp.status(),
            Answer::Passed(raw) => raw.status,
        }
    }

    /// As an `http` response, for callers that need one (the router, a
    /// batch): the passed-on fields go into a map.
    pub(crate) fn into_response(self) -> Response {
        let raw = match self {
            Answer::Made(resp) => return resp,
            Answer::Passed(raw) => raw,
        };
        let status = raw.status;
        match raw.into_http() {
            Ok(resp) => {
                let mut resp = resp.map(Body::new);
                strip_hop_by_hop(resp.headers_mut());
                resp
            }
            Err(e) => {
                let detail = format!("the instance's answer ({status}) is not valid HTTP: {e}");
                Problem::new(StatusCode::BAD_GATEWAY, detail).into_response()
            }
        }
    }
}
