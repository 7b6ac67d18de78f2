//! Forwarding one request: route, split, cache, resilient call.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, header};
use mortar_resilience::{Client, ResponseBody};

use crate::cache::Cache;
use crate::rate_limit::RateLimiter;
use crate::routes::RouteTable;
use crate::split::Splits;
use crate::{GatewayConfig, problems};

/// Everything a request handler needs, shared by all connections.
pub(crate) struct Shared {
    pub(crate) config: GatewayConfig,
    pub(crate) routes: RouteTable,
    pub(crate) client: Client,
    pub(crate) cache: Cache,
    pub(crate) splits: Splits,
    pub(crate) limiter: Option<RateLimiter>,
}

/// Parsed once, not per request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for n in &HOP_BY_HOP {
        headers.remove(n);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// Turns an upstream answer into the client's answer.
fn downstream(resp: http::Response<ResponseBody>) -> Response {
    let mut resp = resp.map(Body::new);
    strip_hop_by_hop(resp.headers_mut());
    resp
}

impl Shared {
    /// Forwards `req` (already size-checked and carrying its traceparent)
    /// to the service its path routes to.
    pub(crate) async fn forward(
        self: &Arc<Self>,
        mut req: Request<Bytes>,
        client_ip: Option<IpAddr>,
    ) -> Response {
        let path = req.uri().path().to_owned();
        let Some(route) = self.routes.find(&path) else {
            return problems::no_route(&path, self.routes.prefixes());
        };
        let service = route.service.clone();
        let public = route.public;
        strip_hop_by_hop(req.headers_mut());
        if let Some(ip) = client_ip {
            let forwarded = match req
                .headers()
                .get(&X_FORWARDED_FOR)
                .and_then(|v| v.to_str().ok())
            {
                Some(prev) => format!("{prev}, {ip}"),
                None => ip.to_string(),
            };
            if let Ok(v) = HeaderValue::from_str(&forwarded) {
                req.headers_mut().insert(X_FORWARDED_FOR, v);
            }
        }
        let version = self.splits.pick(&service);
        let retry_after = self.config.client.breaker.cool_down;
        // A shared cache never stores answers to credentialed requests.
        let shareable = !req.headers().contains_key(header::AUTHORIZATION)
            && !req.headers().contains_key(header::COOKIE);
        if public && shareable && req.method() == Method::GET {
            let key = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| path.clone());
            let request_headers = req.headers().clone();
            let fetch = |validator: Option<HeaderValue>| {
                let mut req = req;
                req.headers_mut().remove(header::IF_NONE_MATCH);
                req.headers_mut().remove(header::IF_MODIFIED_SINCE);
                if let Some(etag) = validator {
                    req.headers_mut().insert(header::IF_NONE_MATCH, etag);
                }
                let this = self.clone();
                let service = service.clone();
                let version = version.clone();
                async move {
                    this.client
                        .call_version(&service, version.as_deref(), req)
                        .await
                }
            };
            return match self
                .cache
                .serve(&service, &key, &request_headers, fetch)
                .await
            {
                Ok(resp) => {
                    let mut resp = resp;
                    strip_hop_by_hop(resp.headers_mut());
                    resp
                }
                Err(e) => problems::call_failed(&path, &e, retry_after),
            };
        }
        match self
            .client
            .call_version(&service, version.as_deref(), req)
            .await
        {
            Ok(resp) => downstream(resp),
            Err(e) => problems::call_failed(&path, &e, retry_after),
        }
    }
}
