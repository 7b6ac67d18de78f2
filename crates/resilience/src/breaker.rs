//! A per-service circuit breaker as a tower layer.
//!
//! Closed: calls flow, outcomes are counted. Open (after N failures in a row
//! or a failure rate over a window): calls are shed at once with
//! [`BreakerOpen`]. After a cool-down the breaker is half-open and lets one
//! probe through; its success closes the breaker, its failure opens it again.
//! A failure is an error or a 5xx answer. The state machine ([`Machine`]) is
//! plain data so it can be tested without time or I/O.

use futures::future::BoxFuture;
use http::Response;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::metrics::{Metrics, inc};
use crate::{BoxError, BreakerConfig};

/// The error of a call shed by an open breaker.
#[derive(Debug, thiserror::Error)]
#[error("circuit breaker for service `{service}` is open")]
pub struct BreakerOpen {
    /// The service whose breaker is open.
    pub service: String,
}

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are shed until the given instant.
    Open {
        /// When a probe may go through.
        until: Instant,
    },
    /// One probe may be in flight.
    HalfOpen {
        /// Whether the probe is already out.
        probing: bool,
    },
}

/// What the breaker lets a call do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// A normal call while closed.
    Pass,
    /// The single probe of a half-open breaker.
    Probe,
    /// Shed.
    Reject,
}

/// The breaker's state machine.
#[derive(Debug)]
pub struct Machine {
    config: BreakerConfig,
    state: BreakerState,
    consecutive: u32,
    window: VecDeque<bool>,
    /// Failures in `window`, kept as calls come and go rather than counted
    /// on every call.
    failed: usize,
}

impl Machine {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: BreakerState::Closed,
            consecutive: 0,
            window: VecDeque::new(),
            failed: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Decides whether a call may go; may move open → half-open.
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            BreakerState::Closed => Admit::Pass,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen { probing: true };
                Admit::Probe
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { probing: true } => Admit::Reject,
            BreakerState::HalfOpen { probing: false } => {
                self.state = BreakerState::HalfOpen { probing: true };
                Admit::Probe
            }
        }
    }

    /// Records the outcome of an admitted call; returns the new state when
    /// it changed. `now` is only asked for when the breaker opens, so the
    /// common case (a success while closed) reads no clock.
    pub fn record(
        &mut self,
        admit: Admit,
        success: bool,
        now: impl FnOnce() -> Instant,
    ) -> Option<BreakerState> {
        match (admit, self.state) {
            (Admit::Probe, BreakerState::HalfOpen { .. }) => {
                self.reset();
                self.state = if success {
                    BreakerState::Closed
                } else {
                    BreakerState::Open {
                        until: now() + self.config.cool_down,
                    }
                };
                Some(self.state)
            }
            (Admit::Pass, BreakerState::Closed) => {
                self.window.push_back(success);
                self.failed += usize::from(!success);
                if self.window.len() > self.config.window && self.window.pop_front() == Some(false)
                {
                    self.failed -= 1;
                }
                self.consecutive = if success { 0 } else { self.consecutive + 1 };
                let rate_tripped = self.window.len() >= self.config.min_calls
                    && self.failed as f64 >= self.config.failure_rate * self.window.len() as f64;
                if !success
                    && (self.consecutive >= self.config.consecutive_failures || rate_tripped)
                {
                    self.reset();
                    self.state = BreakerState::Open {
                        until: now() + self.config.cool_down,
                    };
                    return Some(self.state);
                }
                None
            }
            // Late outcomes of calls admitted before the state changed.
            _ => None,
        }
    }

    fn reset(&mut self) {
        self.consecutive = 0;
        self.window.clear();
        self.failed = 0;
    }
}

/// Shared breaker of one service.
#[derive(Debug)]
pub(crate) struct Shared {
    service: String,
    machine: Mutex<Machine>,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn admit(&self) -> Admit {
        let mut m = self.machine.lock().unwrap_or_else(|p| p.into_inner());
        // Closed needs no clock: only an open breaker's cool-down does.
        let admit = if m.state == BreakerState::Closed {
            Admit::Pass
        } else {
            m.admit(Instant::now())
        };
        match admit {
            Admit::Probe => {
                inc(&self.metrics.breaker_half_opened);
                tracing::info!(service = %self.service, reason = "cool-down elapsed", "breaker half-open, probing");
            }
            Admit::Reject => inc(&self.metrics.breaker_rejected),
            Admit::Pass => {}
        }
        admit
    }

    fn record(&self, admit: Admit, success: bool) {
        let mut m = self.machine.lock().unwrap_or_else(|p| p.into_inner());
        match m.record(admit, success, Instant::now) {
            Some(BreakerState::Open { .. }) => {
                inc(&self.metrics.breaker_opened);
                tracing::warn!(service = %self.service, reason = if admit == Admit::Probe { "probe failed" } else { "failures" }, "breaker open");
            }
            Some(BreakerState::Closed) => {
                inc(&self.metrics.breaker_closed);
                tracing::info!(service = %self.service, reason = "probe succeeded", "breaker closed");
            }
            _ => {}
        }
    }

    /// The current state, for introspection.
    pub(crate) fn state(&self) -> BreakerState {
        self.machine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .state()
    }
}

/// Layer adding one shared breaker in front of a service.
#[derive(Debug, Clone)]
pub struct BreakerLayer {
    shared: Arc<Shared>,
}

impl BreakerLayer {
    /// A closed breaker for `service`, counting into `metrics`.
    pub fn new(service: impl Into<String>, config: BreakerConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            shared: Arc::new(Shared {
                service: service.into(),
                machine: Mutex::new(Machine::new(config)),
                metrics,
            }),
        }
    }

    /// The breaker's state now.
    pub fn state(&self) -> BreakerState {
        self.shared.state()
    }

    /// Admits one call, or sheds it when open; the outcome must be
    /// reported through [`Outcome::finish`] (a dropped one counts as a
    /// failed probe). What the [`Breaker`] service does around each call,
    /// for callers that do not go through a tower stack.
    pub(crate) fn admit(&self) -> Result<Outcome, BreakerOpen> {
        let admit = self.shared.admit();
        if admit == Admit::Reject {
            return Err(BreakerOpen {
                service: self.shared.service.clone(),
            });
        }
        Ok(Outcome {
            shared: self.shared.clone(),
            admit,
            done: false,
        })
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = Breaker<S>;
    fn layer(&self, inner: S) -> Breaker<S> {
        Breaker {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service a [`BreakerLayer`] produces.
#[derive(Debug, Clone)]
pub struct Breaker<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Records a failure if a probe or call is dropped before it finishes, so a
/// cancelled probe cannot leave the breaker half-open for ever.
pub(crate) struct Outcome {
    shared: Arc<Shared>,
    admit: Admit,
    done: bool,
}

impl Outcome {
    /// Records the admitted call's outcome.
    pub(crate) fn finish(mut self, success: bool) {
        self.done = true;
        self.shared.record(self.admit, success);
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if !self.done && self.admit == Admit::Probe {
            self.shared.record(self.admit, false);
        }
    }
}

impl<S, Req, B> Service<Req> for Breaker<S>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: 'static,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<B>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let outcome = match (BreakerLayer {
            shared: self.shared.clone(),
        })
        .admit()
        {
            Ok(o) => o,
            Err(open) => return Box::pin(async move { Err(open.into()) }),
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await.map_err(Into::into);
            let success = matches!(&result, Ok(r) if !r.status().is_server_error());
            outcome.finish(success);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_rate: 0.5,
            window: 10,
            min_calls: 6,
            cool_down: Duration::from_secs(5),
        }
    }

    #[test]
    fn opens_after_consecutive_failures_then_half_opens_and_closes() {
        let mut m = Machine::new(config());
        let t = Instant::now();
        for _ in 0..2 {
            assert_eq!(m.admit(t), Admit::Pass);
            assert_eq!(m.record(Admit::Pass, false, || t), None);
        }
        assert_eq!(m.admit(t), Admit::Pass);
        assert!(matches!(
            m.record(Admit::Pass, false, || t),
            Some(BreakerState::Open { .. })
        ));
        assert_eq!(m.admit(t + Duration::from_secs(1)), Admit::Reject);
        let later = t + Duration::from_secs(6);
        assert_eq!(m.admit(later), Admit::Probe);
        assert_eq!(m.admit(later), Admit::Reject, "only one probe at a time");
        assert_eq!(
            m.record(Admit::Probe, true, || later),
            Some(BreakerState::Closed)
        );
        assert_eq!(m.admit(later), Admit::Pass);
    }

    #[test]
    fn failed_probe_reopens_for_another_cool_down() {
        let mut m = Machine::new(config());
        let t = Instant::now();
        for _ in 0..3 {
            m.admit(t);
            m.record(Admit::Pass, false, || t);
        }
        let later = t + Duration::from_secs(5);
        assert_eq!(m.admit(later), Admit::Probe);
        assert!(
            matches!(m.record(Admit::Probe, false, || later), Some(BreakerState::Open { until }) if until == later + Duration::from_secs(5))
        );
        assert_eq!(m.admit(later + Duration::from_secs(1)), Admit::Reject);
    }

    #[test]
    fn opens_on_failure_rate_without_a_long_streak() {
        let mut m = Machine::new(config());
        let t = Instant::now();
        let mut opened = false;
        // fail, fail, ok, repeated: never 3 in a row, but 2/3 failures.
        for i in 0..12 {
            m.admit(t);
            if m.record(Admit::Pass, i % 3 == 2, || t).is_some() {
                opened = true;
                break;
            }
        }
        assert!(opened);
        assert!(matches!(m.state(), BreakerState::Open { .. }));
    }

    #[test]
    fn successes_keep_it_closed_and_late_results_are_ignored() {
        let mut m = Machine::new(config());
        let t = Instant::now();
        for _ in 0..100 {
            m.admit(t);
            assert_eq!(m.record(Admit::Pass, true, || t), None);
        }
        for _ in 0..3 {
            m.record(Admit::Pass, false, || t);
        }
        // A call admitted while closed finishing now changes nothing.
        assert_eq!(m.record(Admit::Pass, false, || t), None);
        assert!(matches!(m.state(), BreakerState::Open { .. }));
    }
}
