//! What the gateway is told: routes and limits, from the manifest.

use std::time::Duration;

use mortar_auth::VerifierConfig;
use mortar_resilience::ClientConfig;

/// Who may use a route.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Access {
    /// Anyone; the gateway checks no token (the service may).
    #[default]
    Open,
    /// Only callers with a valid access token granting every one of
    /// `scopes`; the gateway checks it before forwarding.
    Authenticated {
        /// Scopes the token must grant (403 otherwise).
        scopes: Vec<String>,
    },
}

/// One public path prefix and the service behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Path prefix, e.g. `/v1/products`; matched on whole segments, the
    /// longest wins, nothing is stripped.
    pub prefix: String,
    /// The service name to resolve.
    pub service: String,
    /// Whether GET answers may be cached and shared between clients.
    pub public: bool,
    /// Whether a token is checked before forwarding.
    pub access: Access,
}

impl Route {
    /// A route without a token check; `public` enables the shared cache
    /// for its GETs.
    pub fn new(prefix: impl Into<String>, service: impl Into<String>, public: bool) -> Self {
        Self {
            prefix: prefix.into(),
            service: service.into(),
            public,
            access: Access::Open,
        }
    }

    /// A route forwarded only with a valid access token granting `scopes`
    /// (never cached).
    pub fn authenticated<S: Into<String>>(
        prefix: impl Into<String>,
        service: impl Into<String>,
        scopes: impl IntoIterator<Item = S>,
    ) -> Self {
        Self {
            prefix: prefix.into(),
            service: service.into(),
            public: false,
            access: Access::Authenticated {
                scopes: scopes.into_iter().map(Into::into).collect(),
            },
        }
    }
}

/// Whose access tokens authenticated routes accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// The issuer service, whose key set is fetched by name.
    pub issuer_service: String,
    /// Where it publishes its key set (JWKS).
    pub jwks_path: String,
    /// What a token must say (issuer, audience) and the leeway.
    pub verifier: VerifierConfig,
}

/// Per-client-IP token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    /// Sustained requests per second per client IP.
    pub per_second: f64,
    /// Requests a client may burst above the sustained rate.
    pub burst: f64,
}

/// Response cache bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Most cached responses; the oldest is dropped beyond it.
    pub max_entries: usize,
    /// Largest cached body; bigger responses pass through uncached.
    pub max_entry_bytes: usize,
    /// How long past freshness a cached page may stand in for a failing
    /// upstream, unless the response says `stale-if-error=N` itself.
    pub stale_if_error: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_entry_bytes: 1024 * 1024,
            stale_if_error: Duration::from_secs(24 * 3600),
        }
    }
}

/// Everything the gateway needs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Routing table.
    pub routes: Vec<Route>,
    /// The resilient client's settings for forwarded calls.
    pub client: ClientConfig,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Per-client rate limit; `None` disables it.
    pub rate_limit: Option<RateLimitConfig>,
    /// Response cache bounds.
    pub cache: CacheConfig,
    /// Most sub-requests in one `POST /v1/batch`.
    pub batch_max: usize,
    /// Token checking for authenticated routes; without it such routes
    /// answer 503 (a manifest never gets here without it).
    pub auth: Option<AuthConfig>,
    /// Threads serving connections, each running its own single-threaded
    /// runtime with its own upstream connections (see
    /// [`Gateway::serve`](crate::Gateway::serve)); at least 1.
    pub threads: usize,
    /// How long a request head may take to arrive once its first byte has:
    /// a client that trickles a head in (slowloris) gets 408 and a closed
    /// connection instead of holding the connection forever. Idle
    /// kept-alive connections are not limited.
    pub head_timeout: Duration,
    /// How long a request body may take to arrive once its head has: a
    /// client that trickles a body in gets 408 and a closed connection
    /// instead of holding a connection (and the body buffered so far).
    /// At the default body limit (1 MiB), 30 s admits clients sending at
    /// 35 KB/s or more. A body that arrived with its head costs no timer.
    pub body_timeout: Duration,
}

/// One serving thread per core the process may use.
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            routes: Vec::new(),
            client: ClientConfig::default(),
            max_body_bytes: 1024 * 1024,
            rate_limit: Some(RateLimitConfig {
                per_second: 1000.0,
                burst: 2000.0,
            }),
            cache: CacheConfig::default(),
            batch_max: 50,
            auth: None,
            threads: default_threads(),
            head_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
        }
    }
}
