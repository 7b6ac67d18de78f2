//! How long each topic's group commits take to fsync. A publish is
//! acknowledged only after its fsync (and, with `Delivery::Synced`, delivered
//! only after it), so this is the disk's share of publish latency: an
//! operator who sees publish latency rise can tell a slow disk from a busy
//! broker (`mortar_bus_commit_seconds` on the node's `/metrics`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the histogram's buckets, in seconds (a last, unbounded
/// bucket follows): from a fast NVMe sync to a disk in trouble.
pub const COMMIT_BUCKETS_SECONDS: [f64; 11] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
];

/// A topic's commit durations so far (since the broker opened it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitHistogram {
    /// Commits per bucket of [`COMMIT_BUCKETS_SECONDS`], not cumulative; one
    /// more entry at the end for slower ones. Empty when nothing was
    /// measured (a backend whose commits are not the broker's own).
    pub buckets: Vec<u64>,
    /// Commits measured.
    pub count: u64,
    /// Their total duration in microseconds.
    pub sum_micros: u64,
}

/// Lock-free recording side, updated by the thread that fsyncs the topic's log.
#[derive(Debug, Default)]
pub(crate) struct CommitTimes {
    buckets: [AtomicU64; COMMIT_BUCKETS_SECONDS.len() + 1],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl CommitTimes {
    /// Counts one commit that took `took`.
    pub(crate) fn record(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = COMMIT_BUCKETS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(COMMIT_BUCKETS_SECONDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The counts now.
    pub(crate) fn snapshot(&self) -> CommitHistogram {
        CommitHistogram {
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            count: self.count.load(Ordering::Relaxed),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_commit_lands_in_the_first_bucket_that_holds_it() {
        let times = CommitTimes::default();
        times.record(Duration::from_micros(80));
        times.record(Duration::from_micros(100));
        times.record(Duration::from_micros(300));
        times.record(Duration::from_millis(3));
        times.record(Duration::from_secs(2));
        let h = times.snapshot();
        assert_eq!(h.buckets, vec![2, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
        assert_eq!(h.count, 5);
        assert_eq!(h.sum_micros, 80 + 100 + 300 + 3_000 + 2_000_000);
    }
}
