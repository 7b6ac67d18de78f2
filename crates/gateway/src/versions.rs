//! Per-version request statistics of split services: what a blue-green
//! deploy compares (error rate and p99 latency of the old and the new
//! version over the same window). Only requests sent under a split are
//! counted, so services that are not being deployed pay nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mortar_resilience::RequestStats;

/// Cumulative counts of one (service, version).
#[derive(Debug)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    /// One more bucket than bounds: the overflow.
    buckets: Vec<AtomicU64>,
}

impl Counters {
    fn new() -> Counters {
        Counters {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: (0..=RequestStats::bucket_bounds_us().len())
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
}

/// Statistics of every (service, version) that took split traffic.
#[derive(Debug, Default)]
pub(crate) struct Versions {
    by_key: RwLock<HashMap<(String, String), Arc<Counters>>>,
}

impl Versions {
    /// Counts one request of `service` sent to `version`.
    pub(crate) fn record(&self, service: &str, version: &str, failed: bool, latency: Duration) {
        let counters = self.counters(service, version);
        counters.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(b) = counters.buckets.get(RequestStats::bucket_of(latency)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counters(&self, service: &str, version: &str) -> Arc<Counters> {
        let key = (service.to_owned(), version.to_owned());
        if let Some(c) = self
            .by_key
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return c.clone();
        }
        self.by_key
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert_with(|| Arc::new(Counters::new()))
            .clone()
    }

    /// The cumulative statistics of `service` at `version` (zeros when it
    /// never took split traffic).
    pub(crate) fn snapshot(&self, service: &str, version: &str) -> RequestStats {
        let c = self.counters(service, version);
        RequestStats {
            requests: c.requests.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            buckets: c
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_has_its_own_error_rate_and_p99() {
        let v = Versions::default();
        for _ in 0..50 {
            v.record("web", "b", true, Duration::from_millis(900));
        }
        let start = v.snapshot("web", "b");
        for i in 0..100 {
            let latency = if i == 99 { 200 } else { 2 };
            v.record("web", "b", i % 10 == 0, Duration::from_millis(latency));
        }
        let window = v.snapshot("web", "b").since(&start);
        assert_eq!((window.requests, window.errors), (100, 10));
        assert_eq!(window.buckets.iter().sum::<u64>(), 100);
        assert_eq!(
            v.snapshot("web", "a"),
            RequestStats {
                requests: 0,
                errors: 0,
                buckets: vec![0; window.buckets.len()]
            },
            "other versions are apart"
        );
    }
}
