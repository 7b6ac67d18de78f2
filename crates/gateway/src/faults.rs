//! Injected faults on a service's responses, the way Envoy's fault filter
//! does it: after routing, before the cache and the call, a request to a
//! faulty service is delayed, or answered 503 problem+json marked as
//! injected instead of being forwarded. The node sets them for
//! `mortar chaos latency|errors`; without any, requests pay one atomic load.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode};
use rand::Rng;

/// The header marking an answer the gateway made up on purpose.
pub const INJECTED_HEADER: HeaderName = HeaderName::from_static("x-mortar-fault");

/// The problem type of an injected error.
pub const INJECTED_PROBLEM: &str = "urn:mortar:problem:injected-fault";

/// What to do to a share of one service's requests.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UpstreamFault {
    /// Delay this long before forwarding, for `delay_percent` of requests.
    pub delay: Option<Duration>,
    /// The share of requests delayed, 0–100.
    pub delay_percent: f64,
    /// The share of requests answered 503 without being forwarded, 0–100.
    pub abort_percent: f64,
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Verdict {
    /// Forward it (after `delay`, if any).
    Forward(Option<Duration>),
    /// Answer 503 instead.
    Abort,
}

/// Every service's faults.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    by_service: RwLock<HashMap<String, UpstreamFault>>,
    any: AtomicBool,
}

impl Faults {
    /// Sets `service`'s fault, replacing any earlier one; `None` clears it.
    pub(crate) fn set(&self, service: &str, fault: Option<UpstreamFault>) {
        let mut map = self.by_service.write().unwrap_or_else(|p| p.into_inner());
        match fault {
            Some(f) => map.insert(service.to_owned(), f),
            None => map.remove(service),
        };
        self.any.store(!map.is_empty(), Ordering::Release);
    }

    /// What happens to a request for `service` now.
    pub(crate) fn verdict(&self, service: &str) -> Verdict {
        if !self.any.load(Ordering::Acquire) {
            return Verdict::Forward(None);
        }
        let fault = {
            let map = self.by_service.read().unwrap_or_else(|p| p.into_inner());
            match map.get(service) {
                Some(f) => *f,
                None => return Verdict::Forward(None),
            }
        };
        let mut rng = rand::rng();
        decide(
            &fault,
            rng.random_range(0.0..100.0),
            rng.random_range(0.0..100.0),
        )
    }
}

/// The verdict for two rolls in [0, 100): one for the abort, one for the
/// delay.
fn decide(fault: &UpstreamFault, abort_roll: f64, delay_roll: f64) -> Verdict {
    if abort_roll < fault.abort_percent {
        return Verdict::Abort;
    }
    Verdict::Forward(fault.delay.filter(|_| delay_roll < fault.delay_percent))
}

/// The 503 an injected error answers.
pub(crate) fn injected_error(path: &str, service: &str) -> Response {
    let mut problem = mortar_sdk::Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "an error injected into {service}'s responses by `mortar chaos errors`; `mortar chaos clear` ends it"
        ),
    )
    .with_type(INJECTED_PROBLEM)
    .with_title("Injected fault")
    .with("service", service)
    .with("injected", true);
    problem.instance = Some(path.to_owned());
    let mut resp = problem.into_response();
    resp.headers_mut()
        .insert(INJECTED_HEADER, HeaderValue::from_static("abort"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolls_below_the_share_are_hit_and_others_are_not() {
        let f = UpstreamFault {
            delay: Some(Duration::from_millis(50)),
            delay_percent: 30.0,
            abort_percent: 20.0,
        };
        assert_eq!(decide(&f, 19.9, 99.0), Verdict::Abort);
        assert_eq!(
            decide(&f, 20.0, 29.9),
            Verdict::Forward(Some(Duration::from_millis(50)))
        );
        assert_eq!(decide(&f, 50.0, 30.0), Verdict::Forward(None));
    }

    #[test]
    fn setting_and_clearing_switches_the_fast_path() {
        let faults = Faults::default();
        assert_eq!(faults.verdict("catalog"), Verdict::Forward(None));
        let all = UpstreamFault {
            abort_percent: 100.0,
            ..UpstreamFault::default()
        };
        faults.set("catalog", Some(all));
        assert_eq!(faults.verdict("catalog"), Verdict::Abort);
        assert_eq!(faults.verdict("ordering"), Verdict::Forward(None));
        faults.set("catalog", None);
        assert!(!faults.any.load(Ordering::Acquire));
        assert_eq!(faults.verdict("catalog"), Verdict::Forward(None));
    }
}
