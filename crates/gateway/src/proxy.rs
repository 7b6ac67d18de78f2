//! Forwarding one request: route, split, cache, resilient call.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::Entry;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, header};
use mortar_auth::Verifier;
use mortar_resilience::{CallError, Client, RawResponse};

use crate::answer::Answer;
use crate::cache::Cache;
use crate::faults::{Faults, Verdict};
use crate::hold::Holds;
use crate::hop_by_hop::strip_hop_by_hop;
use crate::rate_limit::RateLimiter;
use crate::routes::RouteTable;
use crate::split::Splits;
use crate::versions::Versions;
use crate::{Access, GatewayConfig, auth, problems};

/// Everything a request handler needs, shared by all connections.
///
/// Each serving thread has its own copy: the forwarding client is a fork
/// with that thread's connection pools, and everything else is the same
/// shared state (a split or a cached page is seen by every thread).
pub(crate) struct Shared {
    pub(crate) config: Arc<GatewayConfig>,
    pub(crate) routes: Arc<RouteTable>,
    pub(crate) client: Client,
    pub(crate) cache: Arc<Cache>,
    pub(crate) splits: Arc<Splits>,
    /// Services whose requests wait while a recreate deploy swaps them.
    pub(crate) holds: Arc<Holds>,
    /// Per-version statistics of split services.
    pub(crate) versions: Arc<Versions>,
    /// Injected faults (`mortar chaos latency|errors`).
    pub(crate) faults: Arc<Faults>,
    pub(crate) limiter: Option<Arc<RateLimiter>>,
    /// Checks tokens on authenticated routes, when an issuer is configured.
    pub(crate) verifier: Option<Verifier>,
}

impl Shared {
    /// The state a serving thread uses: the same shared parts, its own
    /// client fork.
    pub(crate) fn for_thread(&self) -> Shared {
        Shared {
            config: self.config.clone(),
            routes: self.routes.clone(),
            client: self.client.fork(),
            cache: self.cache.clone(),
            splits: self.splits.clone(),
            holds: self.holds.clone(),
            versions: self.versions.clone(),
            faults: self.faults.clone(),
            limiter: self.limiter.clone(),
            verifier: self.verifier.clone(),
        }
    }
}

/// The client a request came from.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// Its IP, when known.
    pub(crate) ip: Option<IpAddr>,
    /// `ip` as a header value, for `X-Forwarded-For`.
    pub(crate) forwarded_for: Option<HeaderValue>,
}

/// Parsed once, not per request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Adds the client to `X-Forwarded-For`, after any proxies already listed.
/// Through the map's entry: one lookup rather than a get and an insert.
fn add_forwarded_for(headers: &mut HeaderMap, client: &HeaderValue) {
    match headers.entry(X_FORWARDED_FOR) {
        Entry::Vacant(empty) => {
            empty.insert(client.clone());
        }
        Entry::Occupied(mut listed) => {
            let prev = listed.get();
            let mut joined = BytesMut::with_capacity(prev.len() + 2 + client.len());
            joined.put_slice(prev.as_bytes());
            joined.put_slice(b", ");
            joined.put_slice(client.as_bytes());
            if let Ok(v) = HeaderValue::from_maybe_shared(joined.freeze()) {
                listed.insert(v);
            }
        }
    }
}

impl Shared {
    /// Forwards `req` (already size-checked and carrying its traceparent)
    /// to the service its path routes to.
    pub(crate) async fn forward(self: &Arc<Self>, mut req: Request<Bytes>, peer: &Peer) -> Answer {
        let Some(route) = self.routes.find(req.uri().path()) else {
            let path = req.uri().path();
            return problems::no_route(path, self.routes.prefixes()).into();
        };
        let service = route.service.as_str();
        auth::strip_identity(req.headers_mut());
        if let Access::Authenticated { scopes } = &route.access
            && let Err(refused) = auth::authenticate(self.verifier.as_ref(), scopes, &mut req).await
        {
            return refused.into();
        }
        strip_hop_by_hop(req.headers_mut());
        if let Some(client) = &peer.forwarded_for {
            add_forwarded_for(req.headers_mut(), client);
        }
        let version = self.splits.pick(service);
        if let Some(entry) = self.holds.enter(service) {
            let routable = || self.client.live_instances(service, version.as_deref()) > 0;
            let waited = match entry {
                Ok(waiting) => waiting.wait(routable).await,
                Err(refused) => Err(refused),
            };
            if let Err(refused) = waited {
                return problems::held(req.uri().path(), service, &refused).into();
            }
        }
        match self.faults.verdict(service) {
            Verdict::Abort => {
                return crate::faults::injected_error(req.uri().path(), service).into();
            }
            Verdict::Forward(Some(delay)) => tokio::time::sleep(delay).await,
            Verdict::Forward(None) => {}
        }
        let retry_after = self.config.client.breaker.cool_down;
        // Kept for the problem+json answer if the call fails; a cheap
        // reference-counted copy.
        let uri = req.uri().clone();
        // A shared cache never stores answers to credentialed requests.
        let cacheable = route.public
            && req.method() == Method::GET
            && !req.headers().contains_key(header::AUTHORIZATION)
            && !req.headers().contains_key(header::COOKIE);
        if cacheable {
            let key = uri
                .path_and_query()
                .map_or_else(|| uri.path(), |p| p.as_str())
                .to_owned();
            let request_headers = req.headers().clone();
            let fetch = |validator: Option<HeaderValue>| {
                let mut req = req;
                req.headers_mut().remove(header::IF_NONE_MATCH);
                req.headers_mut().remove(header::IF_MODIFIED_SINCE);
                if let Some(etag) = validator {
                    req.headers_mut().insert(header::IF_NONE_MATCH, etag);
                }
                let version = version.as_deref();
                async move {
                    let raw = self.call_counted(service, version, req).await?;
                    raw.into_http_for(service)
                }
            };
            let answer = match self
                .cache
                .serve(service, &key, &request_headers, fetch)
                .await
            {
                Ok(mut resp) => {
                    strip_hop_by_hop(resp.headers_mut());
                    resp
                }
                Err(e) => problems::call_failed(uri.path(), &e, retry_after),
            };
            return answer.into();
        }
        match self.call_counted(service, version.as_deref(), req).await {
            Ok(raw) => Answer::Passed(raw),
            Err(e) => problems::call_failed(uri.path(), &e, retry_after).into(),
        }
    }
}

impl Shared {
    /// Calls `service`; under a split, counts the outcome for `version`
    /// (a 5xx or no answer is an error) for blue-green analysis.
    async fn call_counted(
        &self,
        service: &str,
        version: Option<&str>,
        req: Request<Bytes>,
    ) -> Result<RawResponse, CallError> {
        let client = &self.client;
        let Some(version) = version else {
            return client.call_raw(service, None, req).await;
        };
        let started = std::time::Instant::now();
        let result = client.call_raw(service, Some(version), req).await;
        let failed = result
            .as_ref()
            .map_or(true, |resp| resp.status.is_server_error());
        self.versions
            .record(service, version, failed, started.elapsed());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_appends_the_client() {
        let client = HeaderValue::from_static("10.0.0.7");
        let mut h = HeaderMap::new();
        add_forwarded_for(&mut h, &client);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.7");
        add_forwarded_for(&mut h, &client);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.7, 10.0.0.7");
    }
}
