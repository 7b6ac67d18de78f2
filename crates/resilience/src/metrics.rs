//! Counters of every decision the client makes, cheap enough for the hot
//! path, to be exported (e.g. to Prometheus) by whoever owns the client.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters; shared by all services of one [`Client`](crate::Client).
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) calls: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) attempts: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) retries_denied_by_budget: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) deadlines_exceeded: AtomicU64,
    pub(crate) no_instances: AtomicU64,
    pub(crate) ejections: AtomicU64,
    pub(crate) readmissions: AtomicU64,
    pub(crate) breaker_opened: AtomicU64,
    pub(crate) breaker_half_opened: AtomicU64,
    pub(crate) breaker_closed: AtomicU64,
    pub(crate) breaker_rejected: AtomicU64,
    pub(crate) fallbacks: AtomicU64,
}

/// A point-in-time copy of [`Metrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Calls made through [`Client::call`](crate::Client::call).
    pub calls: u64,
    /// Calls that ended in an error (before any fallback).
    pub failures: u64,
    /// Attempts sent to an instance (first tries and retries).
    pub attempts: u64,
    /// Retries issued.
    pub retries: u64,
    /// Retries refused because the retry budget was empty.
    pub retries_denied_by_budget: u64,
    /// Attempts that hit the per-try timeout.
    pub timeouts: u64,
    /// Calls that ran out of their overall deadline.
    pub deadlines_exceeded: u64,
    /// Calls refused because the service had no ready instance.
    pub no_instances: u64,
    /// Instances taken out of rotation.
    pub ejections: u64,
    /// Ejected instances put back.
    pub readmissions: u64,
    /// Breaker transitions to open.
    pub breaker_opened: u64,
    /// Breaker transitions to half-open.
    pub breaker_half_opened: u64,
    /// Breaker transitions to closed.
    pub breaker_closed: u64,
    /// Calls shed by an open breaker.
    pub breaker_rejected: u64,
    /// Errors answered by the fallback hook.
    pub fallbacks: u64,
}

impl Metrics {
    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            calls: r(&self.calls),
            failures: r(&self.failures),
            attempts: r(&self.attempts),
            retries: r(&self.retries),
            retries_denied_by_budget: r(&self.retries_denied_by_budget),
            timeouts: r(&self.timeouts),
            deadlines_exceeded: r(&self.deadlines_exceeded),
            no_instances: r(&self.no_instances),
            ejections: r(&self.ejections),
            readmissions: r(&self.readmissions),
            breaker_opened: r(&self.breaker_opened),
            breaker_half_opened: r(&self.breaker_half_opened),
            breaker_closed: r(&self.breaker_closed),
            breaker_rejected: r(&self.breaker_rejected),
            fallbacks: r(&self.fallbacks),
        }
    }
}

/// Adds one to a counter.
pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Upper bounds (seconds) of the latency buckets kept per upstream: from a
/// loopback hop (1 ms) to a call near a generous deadline (10 s).
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What one client saw of one upstream service: calls, failures and a
/// latency histogram, kept with atomics so recording costs no lock.
#[derive(Debug, Default)]
pub struct UpstreamMetrics {
    calls: AtomicU64,
    failures: AtomicU64,
    /// Micro-seconds, summed.
    latency_sum_us: AtomicU64,
    /// Per bucket of [`LATENCY_BUCKETS`], plus one for larger values (not
    /// cumulative; [`UpstreamSnapshot`] makes them so).
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
}

/// A point-in-time copy of [`UpstreamMetrics`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamSnapshot {
    /// Calls made (including those answered by a fallback).
    pub calls: u64,
    /// Calls that ended in an error (before any fallback).
    pub failures: u64,
    /// Total latency of all calls, in micro-seconds.
    pub latency_sum_us: u64,
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`]; the last entry
    /// (`+Inf`) equals `calls`.
    pub cumulative: Vec<u64>,
}

impl UpstreamMetrics {
    /// Records one finished call.
    pub(crate) fn record(&self, elapsed: std::time::Duration, failed: bool) {
        inc(&self.calls);
        if failed {
            inc(&self.failures);
        }
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        inc(&self.buckets[bucket]);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> UpstreamSnapshot {
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        UpstreamSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            latency_sum_us: self.latency_sum_us.load(Ordering::Relaxed),
            cumulative,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn upstream_buckets_are_cumulative_and_end_at_the_call_count() {
        let m = UpstreamMetrics::default();
        m.record(Duration::from_micros(500), false);
        m.record(Duration::from_millis(30), true);
        m.record(Duration::from_secs(60), false);
        let s = m.snapshot();
        assert_eq!((s.calls, s.failures), (3, 1));
        assert_eq!(s.cumulative[0], 1);
        assert_eq!(s.cumulative[5], 2);
        assert_eq!(s.cumulative[LATENCY_BUCKETS.len() - 1], 2);
        assert_eq!(*s.cumulative.last().unwrap(), 3);
    }
}
