//! Counts of what the supervisor did on its own or on request — deploys
//! started, succeeded and rolled back, autoscaler scale-ups and
//! scale-downs — since the node started, for `/metrics` (an operator
//! graphs their rate) and the dashboard.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// A deploy's event: `started`, `succeeded` or `rolled_back`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeployEvent {
    /// A deploy began.
    Started,
    /// The new revision runs everywhere.
    Succeeded,
    /// The old revision runs everywhere again.
    RolledBack,
}

impl DeployEvent {
    /// The label value in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DeployEvent::Started => "started",
            DeployEvent::Succeeded => "succeeded",
            DeployEvent::RolledBack => "rolled_back",
        }
    }
}

/// An autoscaler action that changed the instance count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScaleEvent {
    /// More instances.
    Up,
    /// Fewer instances.
    Down,
}

impl ScaleEvent {
    /// The label value in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ScaleEvent::Up => "up",
            ScaleEvent::Down => "down",
        }
    }
}

/// Event counters, keyed by service (and strategy for deploys).
#[derive(Debug, Default)]
pub struct EventCounts {
    /// `(service, strategy, event)` → count.
    deploys: Mutex<BTreeMap<(String, String, DeployEvent), u64>>,
    /// `(service, direction)` → count.
    scales: Mutex<BTreeMap<(String, ScaleEvent), u64>>,
}

impl EventCounts {
    /// Counters at zero for what a manifest can do: every deploy event of
    /// each service's configured strategy, and both directions for each
    /// autoscaled service, so their series exist (and rate from zero)
    /// before the first event. `services`: `(name, strategy, autoscaled)`.
    pub fn preset<'a>(services: impl IntoIterator<Item = (&'a str, String, bool)>) -> Self {
        let counts = EventCounts::default();
        {
            let mut deploys = counts.deploys.lock().unwrap_or_else(|p| p.into_inner());
            let mut scales = counts.scales.lock().unwrap_or_else(|p| p.into_inner());
            for (service, strategy, autoscaled) in services {
                for event in [
                    DeployEvent::Started,
                    DeployEvent::Succeeded,
                    DeployEvent::RolledBack,
                ] {
                    deploys.insert((service.to_owned(), strategy.clone(), event), 0);
                }
                if autoscaled {
                    for event in [ScaleEvent::Up, ScaleEvent::Down] {
                        scales.insert((service.to_owned(), event), 0);
                    }
                }
            }
        }
        counts
    }

    /// Counts one deploy event.
    pub fn deploy(&self, service: &str, strategy: &str, event: DeployEvent) {
        let mut map = self.deploys.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((service.to_owned(), strategy.to_owned(), event))
            .or_default() += 1;
    }

    /// Counts one scaling action.
    pub fn scale(&self, service: &str, event: ScaleEvent) {
        let mut map = self.scales.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((service.to_owned(), event)).or_default() += 1;
    }

    /// Every deploy counter: `(service, strategy, event, count)`, sorted.
    pub fn deploys(&self) -> Vec<(String, String, DeployEvent, u64)> {
        let map = self.deploys.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|((s, st, e), n)| (s.clone(), st.clone(), *e, *n))
            .collect()
    }

    /// Every scaling counter: `(service, direction, count)`, sorted.
    pub fn scales(&self) -> Vec<(String, ScaleEvent, u64)> {
        let map = self.scales.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|((s, e), n)| (s.clone(), *e, *n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_counted_per_key() {
        let counts = EventCounts::default();
        counts.deploy("catalog", "rolling", DeployEvent::Started);
        counts.deploy("catalog", "rolling", DeployEvent::Started);
        counts.deploy("catalog", "rolling", DeployEvent::RolledBack);
        counts.scale("worker", ScaleEvent::Up);
        assert_eq!(
            counts.deploys(),
            vec![
                ("catalog".into(), "rolling".into(), DeployEvent::Started, 2),
                (
                    "catalog".into(),
                    "rolling".into(),
                    DeployEvent::RolledBack,
                    1
                ),
            ]
        );
        assert_eq!(counts.scales(), vec![("worker".into(), ScaleEvent::Up, 1)]);
    }

    #[test]
    fn preset_counters_start_at_zero() {
        let counts = EventCounts::preset([
            ("catalog", "rolling".to_owned(), false),
            ("worker", "recreate".to_owned(), true),
        ]);
        assert_eq!(counts.deploys().len(), 6);
        assert!(counts.deploys().iter().all(|d| d.3 == 0));
        assert_eq!(
            counts.scales(),
            vec![
                ("worker".into(), ScaleEvent::Up, 0),
                ("worker".into(), ScaleEvent::Down, 0)
            ]
        );
        counts.scale("worker", ScaleEvent::Down);
        assert_eq!(counts.scales()[1].2, 1);
    }
}
