//! Request statistics over a window: counts, errors and a latency
//! histogram, cheap to snapshot and subtract.

use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds: 100 µs to ~100 s
/// in steps of about 26% (10 per decade, as HDR histograms at 1 digit do).
pub(crate) fn bucket_bounds() -> &'static [u64] {
    static BOUNDS: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
    BOUNDS.get_or_init(|| {
        (0..=60)
            .map(|i| (100.0 * 10f64.powf(f64::from(i) / 10.0)).round() as u64)
            .collect()
    })
}

/// A snapshot of cumulative request statistics (of one service version at
/// the gateway); two snapshots give those of the time between them
/// ([`RequestStats::since`]), which is what a blue-green deploy compares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestStats {
    /// Requests answered (any status) or failed.
    pub requests: u64,
    /// Requests answered 5xx or not answered at all.
    pub errors: u64,
    /// Latency histogram: counts per bucket of [`RequestStats::bucket_bounds_us`].
    pub buckets: Vec<u64>,
}

impl RequestStats {
    /// Upper bounds (µs) of the buckets; the last bucket has no bound.
    pub fn bucket_bounds_us() -> &'static [u64] {
        bucket_bounds()
    }

    /// The bucket a request of `latency` falls in.
    pub fn bucket_of(latency: Duration) -> usize {
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        bucket_bounds().partition_point(|&bound| bound < us)
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &RequestStats) -> RequestStats {
        RequestStats {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(earlier.buckets.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// The share of requests that failed, 0 to 1 (0 without requests).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// The 99th percentile latency, as the upper bound of its bucket;
    /// `None` without requests.
    pub fn p99(&self) -> Option<Duration> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (total as f64 * 0.99).ceil() as u64;
        let mut seen = 0;
        let bounds = bucket_bounds();
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let us = bounds.get(i).copied().unwrap_or(u64::MAX / 1000);
                return Some(Duration::from_micros(us));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(requests: u64, errors: u64, latencies_ms: &[u64]) -> RequestStats {
        let mut buckets = vec![0; bucket_bounds().len() + 1];
        for ms in latencies_ms {
            buckets[RequestStats::bucket_of(Duration::from_millis(*ms))] += 1;
        }
        RequestStats {
            requests,
            errors,
            buckets,
        }
    }

    #[test]
    fn a_window_is_the_difference_of_two_snapshots() {
        let before = stats(50, 50, &[900; 50]);
        let mut after = stats(150, 60, &[2; 99]);
        for (a, b) in after.buckets.iter_mut().zip(&before.buckets) {
            *a += b;
        }
        after.buckets[RequestStats::bucket_of(Duration::from_millis(200))] += 1;
        let window = after.since(&before);
        assert_eq!((window.requests, window.errors), (100, 10));
        assert!((window.error_rate() - 0.1).abs() < 1e-9);
        let p99 = window.p99().unwrap();
        assert!(
            p99 >= Duration::from_millis(2) && p99 < Duration::from_millis(3),
            "{p99:?}"
        );
        assert_eq!(RequestStats::default().p99(), None);
    }

    #[test]
    fn buckets_cover_fast_and_very_slow_requests() {
        assert_eq!(RequestStats::bucket_of(Duration::from_micros(1)), 0);
        assert_eq!(
            RequestStats::bucket_of(Duration::from_secs(1000)),
            bucket_bounds().len()
        );
    }
}
