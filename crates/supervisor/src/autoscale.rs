//! The autoscaler: adds and removes instances of a bus consumer by the
//! backlog of its subscription.
//!
//! Every second, for each service with `[services.<name>.autoscale]`, it
//! reads the backlog of the service's consumer group (unacknowledged plus
//! undelivered messages) and computes
//! `desired = clamp(ceil(backlog / target_backlog), min, max)`. Scaling up
//! happens at once — a growing queue is the expensive case. Scaling down
//! waits: the count applied is the *largest* desired count seen over the
//! last `scale_down_window`, so instances are removed only once the backlog
//! has stayed low for the whole window, and a consumer pausing between
//! bursts is not stopped and started again every few seconds.
//!
//! The decision is a pure function of the samples ([`Scaler`]), so it is
//! tested without processes or clocks; [`run`] wires it to the broker's
//! statistics and the supervisor.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mortar_manifest::AutoscaleSpec;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::Supervisor;

/// How often the backlog is read and a decision made.
pub const EVALUATION_INTERVAL: Duration = Duration::from_secs(1);

/// The instance count the backlog alone asks for:
/// `ceil(backlog / target_backlog)` clamped to `min..=max`.
pub fn desired_for(backlog: u64, spec: &AutoscaleSpec) -> u32 {
    let target = u64::from(spec.target_backlog.max(1));
    let wanted = backlog.div_ceil(target);
    let wanted = u32::try_from(wanted).unwrap_or(u32::MAX);
    wanted.clamp(spec.min, spec.max.max(spec.min))
}

/// One decision and the numbers behind it, logged and exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Decision {
    /// The group's backlog that was read.
    pub backlog: u64,
    /// `target_backlog` of the service.
    pub target_backlog: u32,
    /// Instances before the decision.
    pub current: u32,
    /// What the backlog alone asks for now (clamped to min..=max).
    pub desired: u32,
    /// The count to run: `desired` when it is higher than `current`,
    /// otherwise the largest desired count over the window (never above
    /// `current`).
    pub decided: u32,
    /// The stabilization window, in milliseconds.
    pub window_ms: u64,
}

impl Decision {
    /// What the decision does: `"scale_up"`, `"scale_down"` or `"hold"`.
    pub fn action(&self) -> &'static str {
        match self.decided.cmp(&self.current) {
            std::cmp::Ordering::Greater => "scale_up",
            std::cmp::Ordering::Less => "scale_down",
            std::cmp::Ordering::Equal => "hold",
        }
    }
}

/// The decision state of one service: its rule and the desired counts of
/// the last window.
#[derive(Debug, Clone)]
pub struct Scaler {
    spec: AutoscaleSpec,
    /// When the scaler began; no scale-down before a whole window has been seen.
    since: Instant,
    /// Desired counts of the last window, oldest first.
    samples: VecDeque<(Instant, u32)>,
}

impl Scaler {
    /// A scaler for `spec` that has seen nothing yet (as of `now`).
    pub fn new(spec: AutoscaleSpec, now: Instant) -> Self {
        Scaler {
            spec,
            since: now,
            samples: VecDeque::new(),
        }
    }

    /// The rule this scaler applies.
    pub fn spec(&self) -> &AutoscaleSpec {
        &self.spec
    }

    /// Records the backlog read at `now` and decides how many instances
    /// to run, given `current`.
    pub fn decide(&mut self, now: Instant, backlog: u64, current: u32) -> Decision {
        let window = self.spec.scale_down_window;
        let desired = desired_for(backlog, &self.spec);
        self.samples.push_back((now, desired));
        while let Some(&(at, _)) = self.samples.front() {
            if now.saturating_duration_since(at) > window {
                self.samples.pop_front();
            } else {
                break;
            }
        }
        let decided = if desired >= current {
            desired
        } else if now.saturating_duration_since(self.since) < window {
            // Not a whole window seen yet: it cannot have stayed lower for it.
            current
        } else {
            let held = self
                .samples
                .iter()
                .map(|&(_, d)| d)
                .max()
                .unwrap_or(desired);
            held.min(current)
        };
        Decision {
            backlog,
            target_backlog: self.spec.target_backlog,
            current,
            desired,
            decided,
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Where the autoscaler reads a group's backlog: `(topic, group)` to the
/// backlog, `None` while the broker does not know the group yet.
pub type BacklogSource = Arc<dyn Fn(&str, &str) -> Option<u64> + Send + Sync>;

/// Evaluates every autoscaled service every [`EVALUATION_INTERVAL`] until
/// `stop`, scaling through the supervisor. Start it after
/// [`Supervisor::start`], so scaling never launches a service before its
/// dependencies.
pub async fn run(supervisor: Arc<Supervisor>, backlog: BacklogSource, stop: CancellationToken) {
    let services: Vec<(String, AutoscaleSpec)> = supervisor
        .manifest()
        .services
        .iter()
        .filter_map(|s| Some((s.name.clone(), s.autoscale.clone()?)))
        .collect();
    if services.is_empty() {
        return;
    }
    let tasks: Vec<_> = services
        .into_iter()
        .map(|(name, spec)| {
            tokio::spawn(run_one(
                supervisor.clone(),
                name,
                spec,
                backlog.clone(),
                stop.clone(),
            ))
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

/// The loop for one service: one task each, so a slow drain of one
/// service's instance never delays another service's scale-up.
async fn run_one(
    supervisor: Arc<Supervisor>,
    name: String,
    spec: AutoscaleSpec,
    backlog: BacklogSource,
    stop: CancellationToken,
) {
    let mut scaler = Scaler::new(spec.clone(), Instant::now());
    let mut last: Option<(u64, u32, u32)> = None;
    let mut interval = tokio::time::interval(EVALUATION_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let Some(current) = supervisor.scale_target(&name) else {
            // Stopped by an operator: leave it alone.
            continue;
        };
        let Some(backlog) = backlog(&spec.topic, &spec.group) else {
            tracing::debug!(managed_service = %name, topic = %spec.topic, group = %spec.group, "autoscale: the group has no statistics yet");
            continue;
        };
        let decision = scaler.decide(Instant::now(), backlog, current);
        supervisor.record_decision(&name, &decision);
        let key = (decision.backlog, decision.desired, decision.decided);
        if decision.decided != current {
            tracing::info!(
                managed_service = %name,
                topic = %spec.topic,
                group = %spec.group,
                backlog = decision.backlog,
                target_backlog = decision.target_backlog,
                current = decision.current,
                desired = decision.desired,
                decided = decision.decided,
                min = spec.min,
                max = spec.max,
                window_ms = decision.window_ms,
                action = decision.action(),
                "autoscale decision"
            );
            let event = if decision.decided > current {
                crate::events::ScaleEvent::Up
            } else {
                crate::events::ScaleEvent::Down
            };
            supervisor.events().scale(&name, event);
            supervisor.scale(&name, decision.decided).await;
        } else if last.is_none_or(|(_, desired, _)| desired != decision.desired) {
            // A change of what the backlog asks for that is not acted on
            // (yet): logged once, so a held scale-down is explained.
            tracing::info!(
                managed_service = %name,
                topic = %spec.topic,
                group = %spec.group,
                backlog = decision.backlog,
                target_backlog = decision.target_backlog,
                current = decision.current,
                desired = decision.desired,
                decided = decision.decided,
                min = spec.min,
                max = spec.max,
                window_ms = decision.window_ms,
                action = decision.action(),
                "autoscale decision"
            );
        }
        last = Some(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(min: u32, max: u32, target: u32, window_s: u64) -> AutoscaleSpec {
        AutoscaleSpec {
            min,
            max,
            topic: "jobs".into(),
            group: "workers".into(),
            target_backlog: target,
            scale_down_window: Duration::from_secs(window_s),
        }
    }

    #[test]
    fn desired_is_the_ceiling_of_backlog_over_target_clamped() {
        let s = spec(1, 4, 10, 30);
        let d: Vec<u32> = [0, 1, 10, 11, 25, 40, 41, 1_000_000, u64::MAX]
            .iter()
            .map(|&b| desired_for(b, &s))
            .collect();
        assert_eq!(d, [1, 1, 1, 2, 3, 4, 4, 4, 4]);
        assert_eq!(desired_for(0, &spec(2, 5, 1, 1)), 2);
    }

    #[test]
    fn scales_up_at_once_even_inside_the_window() {
        let t0 = Instant::now();
        let mut s = Scaler::new(spec(1, 4, 10, 30), t0);
        let d = s.decide(t0, 35, 1);
        assert_eq!((d.desired, d.decided, d.action()), (4, 4, "scale_up"));
        let d = s.decide(t0 + Duration::from_secs(1), 1000, 4);
        assert_eq!((d.decided, d.action()), (4, "hold"));
    }

    #[test]
    fn holds_during_the_window_then_steps_down_to_the_window_maximum() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut s = Scaler::new(spec(1, 4, 10, 10), t0);
        assert_eq!(s.decide(at(0), 40, 1).decided, 4);
        // Backlog drained: desired 1, but 4 was desired within the window.
        for t in 1..=10 {
            let d = s.decide(at(t), 0, 4);
            assert_eq!((d.desired, d.decided, d.action()), (1, 4, "hold"), "t={t}");
        }
        // A blip to 2 inside the window keeps 2 for another window.
        assert_eq!(s.decide(at(11), 15, 4).decided, 2);
        assert_eq!(s.decide(at(12), 0, 2).decided, 2);
        assert_eq!(s.decide(at(21), 0, 2).decided, 2);
        let d = s.decide(at(22), 0, 2);
        assert_eq!((d.decided, d.action()), (1, "scale_down"));
    }

    #[test]
    fn no_scale_down_before_a_whole_window_was_seen() {
        let t0 = Instant::now();
        let mut s = Scaler::new(spec(1, 4, 10, 5), t0);
        // Started with 3 instances and nothing to do.
        assert_eq!(s.decide(t0 + Duration::from_secs(1), 0, 3).decided, 3);
        assert_eq!(s.decide(t0 + Duration::from_secs(4), 0, 3).decided, 3);
        assert_eq!(s.decide(t0 + Duration::from_secs(5), 0, 3).decided, 1);
    }

    #[test]
    fn never_leaves_min_max_whatever_current_is() {
        let t0 = Instant::now();
        let mut s = Scaler::new(spec(2, 3, 1, 0), t0);
        assert_eq!(s.decide(t0, 0, 1).decided, 2);
        assert_eq!(s.decide(t0, 100, 2).decided, 3);
        let d = s.decide(t0 + Duration::from_millis(1), 0, 3);
        assert_eq!(d.decided, 2);
        assert_eq!(d.window_ms, 0);
    }
}
