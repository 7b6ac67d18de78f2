//! What a chaos run shows: the client's view, and whether everything
//! acknowledged arrived everywhere it should, exactly once.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// The result of a scenario run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Scorecard {
    /// Requests the client sent (sign-ups, log-ins, browsing, orders).
    pub requests_sent: u64,
    /// Of those, answered other than 2xx, or not at all (never retried).
    pub requests_failed: u64,
    /// The failed requests by what the client saw (status, or `no answer`).
    pub failures: Vec<(String, u64)>,
    /// Orders the shop acknowledged (201).
    pub orders_acknowledged: u64,
    /// Acknowledged orders present in the "my orders" read model.
    pub orders_in_read_model: u64,
    /// Acknowledged orders the notifier recorded a notification for.
    pub orders_notified: u64,
    /// Entries seen more than once (read model or notifications).
    pub duplicates: u64,
    /// Acknowledged orders missing from the read model or the notifier.
    pub lost: u64,
    /// Faults injected, each with the time its service took to be fully
    /// ready again.
    pub faults: Vec<Recovery>,
    /// The longest of those recoveries, in milliseconds.
    pub longest_recovery_ms: u64,
}

/// One injected fault and how long its service took to recover.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recovery {
    /// What was done, e.g. `kill -9 catalog-1`.
    pub fault: String,
    /// Milliseconds until every instance of the service was ready again.
    pub recovered_ms: u64,
}

impl Recovery {
    /// A recovery that took `took`.
    pub fn new(fault: String, took: Duration) -> Recovery {
        Recovery {
            fault,
            recovered_ms: took.as_millis() as u64,
        }
    }
}

impl Scorecard {
    /// Whether nothing acknowledged was lost or duplicated.
    pub fn nothing_lost(&self) -> bool {
        self.lost == 0 && self.duplicates == 0
    }
}

impl fmt::Display for Scorecard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "chaos scorecard")?;
        for r in &self.faults {
            writeln!(
                f,
                "  fault   {:<50} recovered in {:>6} ms",
                r.fault, r.recovered_ms
            )?;
        }
        let row = |f: &mut fmt::Formatter<'_>, k: &str, v: String| writeln!(f, "  {k:<34} {v}");
        row(f, "requests sent", self.requests_sent.to_string())?;
        let failures: Vec<String> = self
            .failures
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        row(
            f,
            "requests failed (client, no retry)",
            if failures.is_empty() {
                "0".to_owned()
            } else {
                format!("{} ({})", self.requests_failed, failures.join(", "))
            },
        )?;
        row(
            f,
            "orders acknowledged",
            self.orders_acknowledged.to_string(),
        )?;
        row(
            f,
            "orders in the read model",
            self.orders_in_read_model.to_string(),
        )?;
        row(f, "orders notified", self.orders_notified.to_string())?;
        row(f, "duplicates", self.duplicates.to_string())?;
        row(f, "lost", self.lost.to_string())?;
        row(
            f,
            "longest recovery",
            format!("{} ms", self.longest_recovery_ms),
        )?;
        write!(
            f,
            "  verdict: {}",
            if self.nothing_lost() {
                "nothing acknowledged was lost"
            } else {
                "ACKNOWLEDGED WORK WAS LOST OR DUPLICATED"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scorecard_is_a_json_document_for_other_tools() {
        let card = Scorecard {
            requests_sent: 10,
            requests_failed: 1,
            failures: vec![("order: 503".to_owned(), 1)],
            orders_acknowledged: 4,
            orders_in_read_model: 4,
            orders_notified: 4,
            faults: vec![Recovery::new(
                "bus outage for 3000 ms".to_owned(),
                Duration::from_millis(3012),
            )],
            longest_recovery_ms: 3012,
            ..Scorecard::default()
        };
        let json = serde_json::to_value(&card).unwrap();
        assert_eq!(json["requests_failed"], 1);
        assert_eq!(json["failures"][0][0], "order: 503");
        assert_eq!(json["faults"][0]["recovered_ms"], 3012);
        assert_eq!(json["lost"], 0);
        assert!(card.to_string().contains("bus outage for 3000 ms"));
    }
}
