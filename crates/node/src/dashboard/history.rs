//! The last minutes of the node's counters, sampled once a second, and
//! what the charts draw from them: request rate and p99 latency per
//! service as the gateway saw them, publish and delivery rates and backlog
//! per consumer group. Rates are differences of counters between samples,
//! as a Prometheus `rate()` would compute them.

use std::collections::VecDeque;

use mortar_bus::TopicStats;
use mortar_resilience::{LATENCY_BUCKETS, UpstreamSnapshot};
use serde::{Deserialize, Serialize};

/// How many samples are kept (about two minutes at one a second).
pub const CAPACITY: usize = 120;

/// The window over which a "now" rate or p99 is computed, in samples.
const CURRENT_WINDOW: usize = 5;

/// The counters read at one moment.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Unix time of the sample, in milliseconds.
    pub at_ms: u64,
    /// The gateway's calls per upstream service (cumulative).
    pub upstreams: Vec<(String, UpstreamSnapshot)>,
    /// The bus's topics and groups.
    pub topics: Vec<TopicStats>,
}

/// One point of a service's traffic chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficPoint {
    /// Unix time, milliseconds (the end of the interval).
    pub at_ms: u64,
    /// Requests per second through the gateway.
    pub rps: f64,
    /// Failed requests (5xx or no answer) per second.
    pub errors_per_s: f64,
    /// The 99th percentile latency in the interval, milliseconds; `None`
    /// without requests.
    pub p99_ms: Option<f64>,
}

/// A service's traffic as the gateway saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficSeries {
    /// The upstream service.
    pub service: String,
    /// Requests per second over the last few seconds.
    pub rps: f64,
    /// p99 latency over the last few seconds, milliseconds.
    pub p99_ms: Option<f64>,
    /// One point per sample interval, oldest first.
    pub points: Vec<TrafficPoint>,
}

/// One point of a group's backlog chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuePoint {
    /// Unix time, milliseconds.
    pub at_ms: u64,
    /// Messages not yet acknowledged.
    pub backlog: u64,
}

/// A consumer group's queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueSeries {
    /// The topic.
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// Messages not yet acknowledged now.
    pub backlog: u64,
    /// Offsets behind the end of the topic.
    pub lag: u64,
    /// Delivered and not yet acknowledged.
    pub in_flight: u64,
    /// Moved to the dead-letter topic since the broker started.
    pub dead_lettered: u64,
    /// Messages published to the topic per second, lately.
    pub published_per_s: f64,
    /// Messages delivered to the group per second, lately.
    pub delivered_per_s: f64,
    /// The backlog at every sample, oldest first.
    pub points: Vec<QueuePoint>,
}

/// The samples of the last [`CAPACITY`] seconds.
#[derive(Debug, Clone, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    /// Adds a sample, dropping the oldest beyond [`CAPACITY`].
    pub fn push(&mut self, sample: Sample) {
        if self.samples.len() == CAPACITY {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// Per upstream service of the latest sample: its traffic chart.
    pub fn traffic(&self) -> Vec<TrafficSeries> {
        let Some(latest) = self.samples.back() else {
            return Vec::new();
        };
        latest
            .upstreams
            .iter()
            .map(|(service, _)| {
                let series: Vec<(u64, Option<&UpstreamSnapshot>)> = self
                    .samples
                    .iter()
                    .map(|s| (s.at_ms, upstream(s, service)))
                    .collect();
                let points = series
                    .windows(2)
                    .filter_map(|w| traffic_point(w[0], w[1]))
                    .collect();
                let start = series.len().saturating_sub(CURRENT_WINDOW + 1);
                let now = traffic_point(series[start], series[series.len() - 1]);
                TrafficSeries {
                    service: service.clone(),
                    rps: now.as_ref().map_or(0.0, |p| p.rps),
                    p99_ms: now.and_then(|p| p.p99_ms),
                    points,
                }
            })
            .collect()
    }

    /// Per consumer group of the latest sample: its queue chart.
    pub fn queues(&self) -> Vec<QueueSeries> {
        let Some(latest) = self.samples.back() else {
            return Vec::new();
        };
        let start = self.samples.len().saturating_sub(CURRENT_WINDOW + 1);
        let earlier = &self.samples[start];
        let seconds = latest.at_ms.saturating_sub(earlier.at_ms) as f64 / 1000.0;
        let per_s = |now: u64, then: Option<u64>| match then {
            Some(then) if seconds > 0.0 => now.saturating_sub(then) as f64 / seconds,
            _ => 0.0,
        };
        let mut out = Vec::new();
        for topic in &latest.topics {
            let published_then = find_topic(earlier, &topic.topic).map(|t| t.next_offset);
            for group in &topic.groups {
                let delivered_then = find_topic(earlier, &topic.topic)
                    .and_then(|t| t.groups.iter().find(|g| g.group == group.group))
                    .map(|g| g.delivered);
                let points = self
                    .samples
                    .iter()
                    .filter_map(|s| {
                        let g = find_topic(s, &topic.topic)?
                            .groups
                            .iter()
                            .find(|g| g.group == group.group)?;
                        Some(QueuePoint {
                            at_ms: s.at_ms,
                            backlog: g.backlog,
                        })
                    })
                    .collect();
                out.push(QueueSeries {
                    topic: topic.topic.clone(),
                    group: group.group.clone(),
                    backlog: group.backlog,
                    lag: group.lag,
                    in_flight: group.in_flight,
                    dead_lettered: group.dead_lettered,
                    published_per_s: per_s(topic.next_offset, published_then),
                    delivered_per_s: per_s(group.delivered, delivered_then),
                    points,
                });
            }
        }
        out
    }
}

fn upstream<'a>(sample: &'a Sample, service: &str) -> Option<&'a UpstreamSnapshot> {
    sample
        .upstreams
        .iter()
        .find(|(s, _)| s == service)
        .map(|(_, u)| u)
}

fn find_topic<'a>(sample: &'a Sample, topic: &str) -> Option<&'a TopicStats> {
    sample.topics.iter().find(|t| t.topic == topic)
}

/// The traffic between two samples; `None` when time did not advance.
/// A service not yet called in the earlier sample counts from zero.
fn traffic_point(
    (then_ms, then): (u64, Option<&UpstreamSnapshot>),
    (now_ms, now): (u64, Option<&UpstreamSnapshot>),
) -> Option<TrafficPoint> {
    let seconds = now_ms.checked_sub(then_ms).filter(|d| *d > 0)? as f64 / 1000.0;
    let empty = UpstreamSnapshot::default();
    let now = now.unwrap_or(&empty);
    let then = then.unwrap_or(&empty);
    let calls = now.calls.saturating_sub(then.calls);
    let failures = now.failures.saturating_sub(then.failures);
    let buckets: Vec<u64> = now
        .cumulative
        .iter()
        .enumerate()
        .map(|(i, n)| n.saturating_sub(then.cumulative.get(i).copied().unwrap_or(0)))
        .collect();
    Some(TrafficPoint {
        at_ms: now_ms,
        rps: calls as f64 / seconds,
        errors_per_s: failures as f64 / seconds,
        p99_ms: quantile(&buckets, 0.99).map(|s| s * 1000.0),
    })
}

/// The `q` quantile, in seconds, of cumulative bucket counts over
/// [`LATENCY_BUCKETS`] (plus `+Inf`), interpolated linearly inside its
/// bucket as Prometheus' `histogram_quantile` does; the top finite bound
/// when it falls in `+Inf`. `None` without observations.
pub fn quantile(cumulative: &[u64], q: f64) -> Option<f64> {
    let total = *cumulative.last()?;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let index = cumulative.iter().position(|&c| c as f64 >= rank)?;
    let Some(&upper) = LATENCY_BUCKETS.get(index) else {
        return LATENCY_BUCKETS.last().copied();
    };
    let (lower, below) = match index {
        0 => (0.0, 0),
        i => (LATENCY_BUCKETS[i - 1], cumulative[i - 1]),
    };
    let in_bucket = cumulative[index] - below;
    if in_bucket == 0 {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - below as f64) / in_bucket as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mortar_bus::GroupStats;

    fn cumulative(counts_per_bucket: &[(usize, u64)]) -> Vec<u64> {
        let mut per = vec![0u64; LATENCY_BUCKETS.len() + 1];
        for (i, n) in counts_per_bucket {
            per[*i] += n;
        }
        let mut total = 0;
        per.iter()
            .map(|n| {
                total += n;
                total
            })
            .collect()
    }

    fn calls(calls: u64, failures: u64, buckets: &[(usize, u64)]) -> UpstreamSnapshot {
        UpstreamSnapshot {
            calls,
            failures,
            latency_sum_us: 0,
            cumulative: cumulative(buckets),
        }
    }

    fn topic(next: u64, backlog: u64, delivered: u64) -> TopicStats {
        TopicStats {
            topic: "orders".into(),
            first_offset: 0,
            next_offset: next,
            bytes: 0,
            groups: vec![GroupStats {
                group: "history".into(),
                backlog,
                lag: backlog,
                in_flight: 0,
                dead_lettered: 0,
                redelivered: 0,
                delivered,
            }],
            commits: Default::default(),
        }
    }

    #[test]
    fn quantile_interpolates_inside_the_bucket() {
        // 100 calls: 98 in (0, 1ms], 2 in (5ms, 10ms]: p99 is halfway
        // into the 10 ms bucket.
        let c = cumulative(&[(0, 98), (3, 2)]);
        let p99 = quantile(&c, 0.99).unwrap();
        assert!((p99 - 0.0075).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(&cumulative(&[]), 0.99), None);
        // Beyond the last bound: that bound.
        let slow = cumulative(&[(LATENCY_BUCKETS.len(), 5)]);
        assert_eq!(quantile(&slow, 0.99), Some(10.0));
    }

    #[test]
    fn rates_and_p99_come_from_differences_between_samples() {
        let mut h = History::default();
        h.push(Sample {
            at_ms: 1_000,
            upstreams: vec![("catalog".into(), calls(100, 0, &[(0, 100)]))],
            topics: vec![topic(10, 0, 10)],
        });
        h.push(Sample {
            at_ms: 3_000,
            // 40 more calls in 2 s, 4 failed, all slow (25–50 ms).
            upstreams: vec![("catalog".into(), calls(140, 4, &[(0, 100), (5, 40)]))],
            topics: vec![topic(30, 15, 15)],
        });
        let traffic = h.traffic();
        assert_eq!(traffic.len(), 1);
        let t = &traffic[0];
        assert_eq!(t.service, "catalog");
        assert_eq!(t.points.len(), 1);
        assert!((t.rps - 20.0).abs() < 1e-9);
        assert!((t.points[0].errors_per_s - 2.0).abs() < 1e-9);
        let p99 = t.p99_ms.unwrap();
        assert!(p99 > 25.0 && p99 <= 50.0, "{p99}");

        let queues = h.queues();
        assert_eq!(queues.len(), 1);
        let q = &queues[0];
        assert_eq!((q.topic.as_str(), q.group.as_str()), ("orders", "history"));
        assert_eq!(q.backlog, 15);
        assert!((q.published_per_s - 10.0).abs() < 1e-9);
        assert!((q.delivered_per_s - 2.5).abs() < 1e-9);
        assert_eq!(
            q.points.iter().map(|p| p.backlog).collect::<Vec<_>>(),
            vec![0, 15]
        );
    }

    #[test]
    fn a_service_first_called_between_samples_counts_from_zero() {
        let mut h = History::default();
        h.push(Sample {
            at_ms: 0,
            ..Sample::default()
        });
        h.push(Sample {
            at_ms: 1_000,
            upstreams: vec![("ordering".into(), calls(3, 0, &[(2, 3)]))],
            topics: vec![],
        });
        let t = h.traffic();
        assert!((t[0].rps - 3.0).abs() < 1e-9);
        assert!(h.queues().is_empty());
    }

    #[test]
    fn history_keeps_the_latest_samples_only() {
        let mut h = History::default();
        for i in 0..(CAPACITY as u64 + 10) {
            h.push(Sample {
                at_ms: i * 1000,
                upstreams: vec![],
                topics: vec![topic(i, i, i)],
            });
        }
        let q = &h.queues()[0];
        assert_eq!(q.points.len(), CAPACITY);
        assert_eq!(q.points[0].backlog, 10);
    }
}
