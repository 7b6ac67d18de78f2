//! Per-client-IP token buckets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::RateLimitConfig;

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by client IP.
pub(crate) struct RateLimiter {
    config: RateLimitConfig,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

/// Buckets kept before idle (full) ones are dropped.
const SWEEP_AT: usize = 10_000;

impl RateLimiter {
    pub(crate) fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            buckets: Mutex::default(),
        }
    }

    /// Takes `cost` tokens for `ip`, or says how long until it could.
    pub(crate) fn take(&self, ip: IpAddr, cost: f64) -> Result<(), Duration> {
        let now = Instant::now();
        let RateLimitConfig { per_second, burst } = self.config;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= SWEEP_AT {
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.last).as_secs_f64() * per_second < burst
            });
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * per_second).min(burst);
        b.last = now;
        if b.tokens >= cost {
            b.tokens -= cost;
            Ok(())
        } else {
            let wait = (cost - b.tokens) / per_second.max(f64::MIN_POSITIVE);
            Err(Duration::from_secs_f64(wait.min(3600.0)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_per_ip() {
        let l = RateLimiter::new(RateLimitConfig {
            per_second: 1.0,
            burst: 3.0,
        });
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.take(a, 1.0).is_ok());
        }
        let wait = l.take(a, 1.0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        assert!(l.take(b, 1.0).is_ok(), "another client has its own bucket");
    }
}
