//! Waiting for new instances to become available, and noticing at once
//! when one of them crashes or fails instead.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Run;
use crate::{InstanceState, InstanceStatus};

/// How often instance states are looked at.
pub(crate) const POLL: Duration = Duration::from_millis(50);

/// Tracks how long each new instance has been ready, and whether one has
/// crashed since the deploy started it.
#[derive(Debug, Default)]
pub(crate) struct Availability {
    ready_since: HashMap<String, Instant>,
    restarts_at_start: HashMap<String, u32>,
}

impl Availability {
    /// Looks at `instances`; the ids available (ready for `min_ready`), or
    /// why the deploy must stop.
    pub(crate) fn observe(
        &mut self,
        instances: &[InstanceStatus],
        min_ready: Duration,
    ) -> Result<Vec<String>, String> {
        let now = Instant::now();
        let mut available = Vec::new();
        for i in instances {
            let restarts = *self
                .restarts_at_start
                .entry(i.id.clone())
                .or_insert(i.restarts);
            let why = i.last_exit.as_deref().unwrap_or("no reason recorded");
            if i.state == InstanceState::Failed {
                return Err(format!("new instance {} failed: {why}", i.id));
            }
            if i.restarts > restarts {
                return Err(format!(
                    "new instance {} crashed after it started: {why}",
                    i.id
                ));
            }
            if i.state == InstanceState::Ready {
                let since = *self.ready_since.entry(i.id.clone()).or_insert(now);
                if now.duration_since(since) >= min_ready {
                    available.push(i.id.clone());
                }
            } else {
                self.ready_since.remove(&i.id);
            }
        }
        Ok(available)
    }
}

/// Waits until every instance in `ids` has been ready for `min_ready`.
pub(crate) async fn ready(
    run: &Run<'_>,
    ids: &[String],
    min_ready: Duration,
    deadline: Instant,
) -> Result<(), String> {
    let mut availability = Availability::default();
    loop {
        let (new, old) = run.instances();
        let watched: Vec<InstanceStatus> = new
            .into_iter()
            .chain(old)
            .filter(|i| ids.contains(&i.id))
            .collect();
        let available = availability.observe(&watched, min_ready)?;
        if ids.iter().all(|id| available.contains(id)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let waiting: Vec<&str> = ids
                .iter()
                .filter(|id| !available.contains(id))
                .map(String::as_str)
                .collect();
            return Err(format!(
                "{} not ready in time (progress deadline)",
                waiting.join(", ")
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, state: InstanceState, restarts: u32) -> InstanceStatus {
        InstanceStatus {
            state,
            restarts,
            last_exit: Some("exit status 3".into()),
            ..InstanceStatus::new("web", id)
        }
    }

    #[test]
    fn an_instance_counts_once_ready_for_min_ready() {
        let mut a = Availability::default();
        let ready = [inst("web-3", InstanceState::Ready, 0)];
        assert_eq!(a.observe(&ready, Duration::ZERO).unwrap(), ["web-3"]);
        let mut a = Availability::default();
        assert!(
            a.observe(&ready, Duration::from_secs(60))
                .unwrap()
                .is_empty()
        );
        let starting = [inst("web-3", InstanceState::Starting, 0)];
        assert!(a.observe(&starting, Duration::ZERO).unwrap().is_empty());
    }

    #[test]
    fn a_crash_or_a_failure_stops_the_deploy_with_its_reason() {
        let mut a = Availability::default();
        a.observe(&[inst("web-3", InstanceState::Starting, 2)], Duration::ZERO)
            .unwrap();
        let err = a
            .observe(&[inst("web-3", InstanceState::Backoff, 3)], Duration::ZERO)
            .unwrap_err();
        assert!(
            err.contains("web-3 crashed") && err.contains("exit status 3"),
            "{err}"
        );
        let err = Availability::default()
            .observe(&[inst("web-4", InstanceState::Failed, 0)], Duration::ZERO)
            .unwrap_err();
        assert!(err.contains("web-4 failed"), "{err}");
    }
}
