//! `POST /v1/batch`: many sub-requests in one round trip, run
//! concurrently through the same routing, cache and resilience as single
//! requests.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, header};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::proxy::{Peer, Shared};
use crate::{problems, trace};

/// The batch endpoint's path.
pub(crate) const PATH: &str = "/v1/batch";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    requests: Vec<SubRequest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubRequest {
    #[serde(default = "get")]
    method: String,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<Value>,
}

fn get() -> String {
    "GET".to_owned()
}

#[derive(Serialize)]
struct SubResponse {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Value,
}

#[derive(Serialize)]
struct BatchResponse {
    responses: Vec<SubResponse>,
}

fn build(sub: SubRequest, parent: &http::HeaderMap) -> Result<Request<Bytes>, String> {
    let method = Method::from_bytes(sub.method.as_bytes())
        .map_err(|_| format!("`{}` is not an HTTP method", sub.method))?;
    if !sub.path.starts_with('/') || sub.path.starts_with(PATH) {
        return Err(format!(
            "path `{}` must start with `/` and must not be {PATH}",
            sub.path
        ));
    }
    let mut req = Request::builder().method(method).uri(&sub.path);
    for (k, v) in &sub.headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("`{k}` is not a header name"))?;
        let value =
            HeaderValue::from_str(v).map_err(|_| format!("header `{k}` has an invalid value"))?;
        req = req.header(name, value);
    }
    let body = match sub.body {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(s)) => Bytes::from(s),
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(serde_json::to_vec(&v).map_err(|e| e.to_string())?)
        }
    };
    let mut req = req
        .body(body)
        .map_err(|e| format!("invalid sub-request: {e}"))?;
    req.headers_mut().insert(
        trace::TRACEPARENT_NAME,
        trace::next_hop(parent.get(trace::TRACEPARENT_NAME)),
    );
    Ok(req)
}

async fn collect(resp: Response) -> SubResponse {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect::<BTreeMap<_, _>>();
    let json = headers
        .get("content-type")
        .is_some_and(|ct| ct.contains("json"));
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body = if bytes.is_empty() {
        Value::Null
    } else if json {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    } else {
        Value::String(String::from_utf8_lossy(&bytes).into_owned())
    };
    SubResponse {
        status,
        headers,
        body,
    }
}

/// Runs a batch whose body is `body`.
pub(crate) async fn run(
    shared: &Arc<Shared>,
    parent: &http::HeaderMap,
    body: &[u8],
    peer: &Peer,
) -> Response {
    let batch: BatchRequest = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            return problems::bad_request(
                PATH,
                format!(
                    "batch body must be {{\"requests\":[{{\"method\",\"path\",\"headers\",\"body\"}}]}}: {e}"
                ),
            );
        }
    };
    let max = shared.config.batch_max;
    if batch.requests.len() > max {
        return problems::bad_request(
            PATH,
            format!(
                "a batch holds at most {max} requests, this one has {}; split it",
                batch.requests.len()
            ),
        );
    }
    let jobs = batch.requests.into_iter().map(|sub| {
        let built = build(sub, parent);
        async move {
            match built {
                Ok(req) => collect(shared.forward(req, peer).await.into_response()).await,
                Err(detail) => collect(problems::bad_request(PATH, detail)).await,
            }
        }
    });
    let responses = futures::future::join_all(jobs).await;
    axum::Json(BatchResponse { responses }).into_response()
}
