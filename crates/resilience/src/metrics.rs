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
