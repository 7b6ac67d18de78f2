//! Shared response cache for public GETs: honours `Cache-Control`
//! (`max-age`, `s-maxage`, `no-store`, `private`, `no-cache`,
//! `stale-if-error`), answers `If-None-Match` with 304 from the stored
//! `ETag`, revalidates stale entries upstream with the stored ETag, and
//! serves a stored page (marked stale) while the upstream fails.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use mortar_resilience::{CallError, ResponseBody};
use tokio::time::Instant;

use crate::CacheConfig;

/// Header telling the client how the cache answered: `hit`, `miss`,
/// `revalidated` or `stale`.
pub(crate) const CACHE_STATUS: &str = "x-mortar-cache";

#[derive(Clone)]
struct Entry {
    headers: HeaderMap,
    body: Bytes,
    etag: Option<HeaderValue>,
    stored: Instant,
    fresh_for: Duration,
    stale_if_error: Duration,
}

impl Entry {
    fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored)
    }
    fn is_fresh(&self, now: Instant) -> bool {
        self.age(now) < self.fresh_for
    }
    fn usable_on_error(&self, now: Instant) -> bool {
        self.age(now) < self.fresh_for + self.stale_if_error
    }
}

/// The parts of `Cache-Control` the cache obeys.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    no_store: bool,
    private: bool,
    no_cache: bool,
    max_age: Option<u64>,
    s_maxage: Option<u64>,
    stale_if_error: Option<u64>,
}

impl Directives {
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut d = Directives::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for item in value.split(',') {
                let item = item.trim();
                let (name, arg) = match item.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (item, None),
                };
                let num = arg.and_then(|a| a.parse::<u64>().ok());
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => d.no_store = true,
                    "private" => d.private = true,
                    "no-cache" => d.no_cache = true,
                    "max-age" => d.max_age = num,
                    "s-maxage" => d.s_maxage = num,
                    "stale-if-error" => d.stale_if_error = num,
                    _ => {}
                }
            }
        }
        d
    }

    fn storable(&self) -> bool {
        !self.no_store && !self.private
    }

    fn fresh_for(&self) -> Duration {
        if self.no_cache {
            return Duration::ZERO;
        }
        Duration::from_secs(self.s_maxage.or(self.max_age).unwrap_or(0))
    }
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison).
pub(crate) fn etag_matches(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    let (Ok(inm), Ok(etag)) = (if_none_match.to_str(), etag.to_str()) else {
        return false;
    };
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let etag = strip(etag);
    inm.split(',').any(|t| t.trim() == "*" || strip(t) == etag)
}

/// The cache.
pub(crate) struct Cache {
    config: CacheConfig,
    entries: Mutex<HashMap<String, Entry>>,
}

/// What the cache hands the upstream fetch: the ETag to revalidate with.
pub(crate) type Validator = Option<HeaderValue>;

impl Cache {
    pub(crate) fn new(config: CacheConfig) -> Self {
        Self {
            config,
            entries: Mutex::default(),
        }
    }

    fn get(&self, key: &str) -> Option<Entry> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn put(&self, key: &str, entry: Entry) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.config.max_entries && !entries.contains_key(key) {
            let oldest = entries
                .iter()
                .min_by_key(|(_, e)| e.stored)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                entries.remove(&k);
            }
        }
        entries.insert(key.to_owned(), entry);
    }

    fn remove(&self, key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Answers a public GET for `key` from the cache or through `fetch`.
    pub(crate) async fn serve<F, Fut>(
        &self,
        service: &str,
        key: &str,
        request_headers: &HeaderMap,
        fetch: F,
    ) -> Result<Response, CallError>
    where
        F: FnOnce(Validator) -> Fut,
        Fut: Future<Output = Result<http::Response<ResponseBody>, CallError>>,
    {
        let client_inm = request_headers.get(header::IF_NONE_MATCH);
        let client_no_cache = Directives::parse(request_headers).no_cache;
        let cached = self.get(key);
        let now = Instant::now();
        if let Some(entry) = &cached
            && entry.is_fresh(now)
            && !client_no_cache
        {
            return Ok(respond(entry, client_inm, "hit", now));
        }
        let validator = cached.as_ref().and_then(|e| e.etag.clone());
        let result = fetch(validator).await;
        let now = Instant::now();
        let failed = match &result {
            Ok(r) => r.status().is_server_error(),
            Err(_) => true,
        };
        if failed {
            if let Some(entry) = cached.filter(|e| e.usable_on_error(now)) {
                tracing::warn!(
                    service,
                    key,
                    reason = "upstream failed",
                    "serving stale cached page"
                );
                let mut resp = respond(&entry, client_inm, "stale", now);
                resp.headers_mut().insert(
                    header::WARNING,
                    HeaderValue::from_static("110 - \"Response is Stale\""),
                );
                return Ok(resp);
            }
            return result.map(|r| r.map(Body::new));
        }
        let upstream = result?;
        if upstream.status() == StatusCode::NOT_MODIFIED {
            if let Some(mut entry) = cached {
                let d = Directives::parse(upstream.headers());
                entry.stored = now;
                entry.fresh_for = d.fresh_for();
                for name in [header::CACHE_CONTROL, header::EXPIRES, header::ETAG] {
                    if let Some(v) = upstream.headers().get(&name) {
                        entry.headers.insert(name, v.clone());
                    }
                }
                self.put(key, entry.clone());
                return Ok(respond(&entry, client_inm, "revalidated", now));
            }
            return Ok(upstream.map(Body::new));
        }
        let d = Directives::parse(upstream.headers());
        let length = upstream
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let varies = upstream
            .headers()
            .get_all(header::VARY)
            .iter()
            .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"accept-encoding"));
        let cacheable = upstream.status() == StatusCode::OK
            && d.storable()
            && !varies
            && length.is_some_and(|l| l <= self.config.max_entry_bytes);
        if !cacheable {
            if !d.storable() {
                self.remove(key);
            }
            return Ok(upstream.map(Body::new));
        }
        let (parts, body) = upstream.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(source) => {
                return Err(CallError::Upstream {
                    service: service.to_owned(),
                    source,
                });
            }
        };
        let entry = Entry {
            etag: parts.headers.get(header::ETAG).cloned(),
            headers: parts.headers,
            body,
            stored: now,
            fresh_for: d.fresh_for(),
            stale_if_error: d
                .stale_if_error
                .map(Duration::from_secs)
                .unwrap_or(self.config.stale_if_error),
        };
        self.put(key, entry.clone());
        Ok(respond(&entry, client_inm, "miss", now))
    }
}

fn respond(
    entry: &Entry,
    client_inm: Option<&HeaderValue>,
    how: &'static str,
    now: Instant,
) -> Response {
    let not_modified =
        matches!((client_inm, &entry.etag), (Some(inm), Some(etag)) if etag_matches(inm, etag));
    let mut resp = if not_modified {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        for name in [
            header::ETAG,
            header::CACHE_CONTROL,
            header::EXPIRES,
            header::VARY,
        ] {
            if let Some(v) = entry.headers.get(&name) {
                r.headers_mut().insert(name, v.clone());
            }
        }
        r
    } else {
        let mut r = Response::new(Body::from(entry.body.clone()));
        *r.headers_mut() = entry.headers.clone();
        r
    };
    resp.headers_mut()
        .insert(CACHE_STATUS, HeaderValue::from_static(how));
    resp.headers_mut()
        .insert(header::AGE, HeaderValue::from(entry.age(now).as_secs()));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_directives_that_matter() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60, stale-if-error=300"),
        );
        let d = Directives::parse(&h);
        assert_eq!(d.max_age, Some(60));
        assert_eq!(d.stale_if_error, Some(300));
        assert!(d.storable());
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, max-age=60"),
        );
        assert!(!Directives::parse(&h).storable());
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert!(!Directives::parse(&h).storable());
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60, s-maxage=5"),
        );
        assert_eq!(Directives::parse(&h).fresh_for(), Duration::from_secs(5));
    }

    #[test]
    fn etags_compare_weakly_and_in_lists() {
        let etag = HeaderValue::from_static("\"v1\"");
        assert!(etag_matches(&HeaderValue::from_static("\"v1\""), &etag));
        assert!(etag_matches(&HeaderValue::from_static("W/\"v1\""), &etag));
        assert!(etag_matches(
            &HeaderValue::from_static("\"x\", \"v1\""),
            &etag
        ));
        assert!(etag_matches(&HeaderValue::from_static("*"), &etag));
        assert!(!etag_matches(&HeaderValue::from_static("\"v2\""), &etag));
    }
}
