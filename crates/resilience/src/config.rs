//! Tunables of the client, with defaults that suit calls inside one node.

use std::time::Duration;

/// Everything a [`Client`](crate::Client) can be tuned with.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Upper bound for one attempt, including waiting for a ready instance.
    pub per_try_timeout: Duration,
    /// Upper bound for the whole call, retries and backoff included; the
    /// remaining part travels to the callee in `x-mortar-deadline-ms`.
    pub deadline: Duration,
    /// Retry policy and budget.
    pub retry: RetryConfig,
    /// Per-service circuit breaker.
    pub breaker: BreakerConfig,
    /// Per-instance passive outlier ejection.
    pub outlier: OutlierConfig,
    /// Largest request body [`buffer_request`](crate::buffer_request) keeps
    /// for replay.
    pub max_request_body: usize,
    /// Latency assumed for a new instance before it has been measured.
    pub default_rtt: Duration,
    /// How fast the peak-EWMA latency estimate forgets.
    pub ewma_decay: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// How connections are opened: plain TCP, or mutual TLS when the node
    /// gave this process a certificate.
    pub connector: crate::Connector,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            per_try_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(10),
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            outlier: OutlierConfig::default(),
            max_request_body: 1024 * 1024,
            default_rtt: Duration::from_millis(5),
            ewma_decay: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(30),
            connector: crate::Connector::Plain,
        }
    }
}

/// When and how often to retry.
#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// Most retries for one call (attempts = 1 + this).
    pub max_retries: u32,
    /// First backoff ceiling; doubles every retry (full jitter below it).
    pub base_backoff: Duration,
    /// Largest backoff ceiling.
    pub max_backoff: Duration,
    /// Retries allowed on top of normal traffic, as a fraction (0.2 = 20%).
    pub budget_ratio: f32,
    /// Retries per second always allowed, so light traffic can still retry.
    pub budget_min_per_sec: u32,
    /// How long a deposit in the budget counts.
    pub budget_ttl: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            budget_ratio: 0.2,
            budget_min_per_sec: 10,
            budget_ttl: Duration::from_secs(10),
        }
    }
}

/// When the per-service breaker opens and how it recovers.
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// Opens after this many failures in a row.
    pub consecutive_failures: u32,
    /// Opens when this share of the last `window` calls failed...
    pub failure_rate: f64,
    /// ...over this many most recent calls...
    pub window: usize,
    /// ...once at least this many calls are in the window.
    pub min_calls: usize,
    /// How long it stays open before letting one probe through.
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: 20,
            min_calls: 10,
            cool_down: Duration::from_secs(5),
        }
    }
}

/// When one instance is taken out of rotation.
#[derive(Debug, Clone)]
pub struct OutlierConfig {
    /// Ejects after this many 5xx answers or connect errors in a row.
    pub consecutive_failures: u32,
    /// First ejection time; doubles for each ejection that follows without a
    /// success in between.
    pub base_ejection: Duration,
    /// Longest ejection time.
    pub max_ejection: Duration,
    /// Never eject so many that less than this share of instances stays in
    /// rotation (0.5 = at most half ejected); at least one always stays.
    pub max_ejected_ratio: f64,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejected_ratio: 0.5,
        }
    }
}
