//! The blue-green verdict: compare the new version's error rate and p99
//! latency with the old one's over the same window. A pure function, so
//! every rule is tested without processes.

use std::time::Duration;

use mortar_manifest::DeploySpec;
use mortar_resilience::RequestStats;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Latencies below this are compared as equal: at sub-millisecond scale a
/// ratio says more about scheduling noise than about the release.
pub const P99_FLOOR: Duration = Duration::from_millis(5);

/// What the analysis concluded.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The new version is at least as good, within the allowed margins.
    Promote,
    /// The new version is worse; the reason names the numbers.
    RollBack(String),
    /// Not enough requests reached the new version to judge.
    Wait(String),
}

/// One version's numbers over the analysis window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VersionReport {
    /// The version.
    pub version: String,
    /// Requests it served in the window.
    pub requests: u64,
    /// Of those, answered 5xx or not at all.
    pub errors: u64,
    /// Its error rate in percent.
    pub error_rate_percent: f64,
    /// Its p99 latency in milliseconds (bucket upper bound), if it served any.
    pub p99_ms: Option<f64>,
}

impl VersionReport {
    /// The report of `stats` for `version`.
    pub fn new(version: &str, stats: &RequestStats) -> VersionReport {
        VersionReport {
            version: version.to_owned(),
            requests: stats.requests,
            errors: stats.errors,
            error_rate_percent: stats.error_rate() * 100.0,
            p99_ms: stats.p99().map(|d| d.as_secs_f64() * 1000.0),
        }
    }
}

/// Judges the new version against the old over the same window.
pub fn judge(old: &RequestStats, new: &RequestStats, spec: &DeploySpec) -> Verdict {
    if new.requests < u64::from(spec.min_requests) {
        return Verdict::Wait(format!(
            "the new version served {} of the {} requests needed for a verdict",
            new.requests, spec.min_requests
        ));
    }
    let (old_rate, new_rate) = (old.error_rate() * 100.0, new.error_rate() * 100.0);
    if new_rate - old_rate > spec.max_error_rate {
        return Verdict::RollBack(format!(
            "error rate {new_rate:.2}% against the old version's {old_rate:.2}% (at most {:.2} points more allowed)",
            spec.max_error_rate
        ));
    }
    if let (Some(old_p99), Some(new_p99)) = (old.p99(), new.p99()) {
        let allowed = old_p99
            .max(P99_FLOOR)
            .mul_f64(1.0 + spec.max_p99_increase / 100.0);
        if new_p99 > allowed {
            return Verdict::RollBack(format!(
                "p99 latency {:.1} ms against the old version's {:.1} ms (at most {}% more allowed)",
                new_p99.as_secs_f64() * 1000.0,
                old_p99.as_secs_f64() * 1000.0,
                spec.max_p99_increase
            ));
        }
    }
    Verdict::Promote
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(requests: u64, errors: u64, latency: Duration) -> RequestStats {
        let mut buckets = vec![0; RequestStats::bucket_bounds_us().len() + 1];
        buckets[RequestStats::bucket_of(latency)] = requests;
        RequestStats {
            requests,
            errors,
            buckets,
        }
    }

    fn spec() -> DeploySpec {
        DeploySpec {
            min_requests: 20,
            max_error_rate: 1.0,
            max_p99_increase: 50.0,
            ..DeploySpec::default()
        }
    }

    #[test]
    fn a_version_as_good_as_the_old_one_is_promoted() {
        let ms = Duration::from_millis;
        let old = window(900, 9, ms(40));
        assert_eq!(
            judge(&old, &window(100, 1, ms(40)), &spec()),
            Verdict::Promote
        );
        // Within the margins: +0.9 points, +26% p99.
        assert_eq!(
            judge(&old, &window(100, 2, ms(50)), &spec()),
            Verdict::Promote
        );
    }

    #[test]
    fn too_few_requests_wait_for_more() {
        let old = window(900, 0, Duration::from_millis(1));
        let v = judge(&old, &window(19, 0, Duration::from_millis(1)), &spec());
        assert!(
            matches!(v, Verdict::Wait(ref why) if why.contains("19 of the 20")),
            "{v:?}"
        );
    }

    #[test]
    fn more_errors_roll_back_with_the_numbers() {
        let old = window(900, 0, Duration::from_millis(1));
        let v = judge(&old, &window(100, 5, Duration::from_millis(1)), &spec());
        assert!(
            matches!(v, Verdict::RollBack(ref why) if why.contains("5.00%") && why.contains("0.00%")),
            "{v:?}"
        );
    }

    #[test]
    fn a_slower_version_rolls_back_but_sub_millisecond_noise_does_not() {
        let ms = Duration::from_millis;
        let v = judge(&window(900, 0, ms(40)), &window(100, 0, ms(90)), &spec());
        assert!(
            matches!(v, Verdict::RollBack(ref why) if why.contains("p99")),
            "{v:?}"
        );
        let us = Duration::from_micros;
        assert_eq!(
            judge(&window(900, 0, us(300)), &window(100, 0, us(2000)), &spec()),
            Verdict::Promote
        );
    }
}
