//! Power-of-two-choices over peak-EWMA load, shared by every caller of one
//! (service, version), without a lock or a task on the call path.
//!
//! Why not `tower::balance::p2c`: it needs `&mut self`, so callers had to
//! share it behind a mutex, and its ready cache moves the instance it just
//! called into a set of pending services and back on every call (an
//! allocation, hashing and a waker per call) — work that buys nothing here,
//! since an instance is always ready to take another request. This
//! balancer reads the current instances from an atomically swapped list
//! kept by the membership task, picks two at random and sends to the less
//! loaded. The load is tower's peak-EWMA cost: the latency estimate (which
//! jumps to any slower sample and decays toward faster ones) times the
//! requests in flight plus one.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Request};
use rand::Rng;
use tokio::time::Instant;

use crate::EndpointError;
use crate::endpoint::EndpointService;
use crate::raw::RawResponse;

/// How long a caller waits before looking for an instance again while the
/// list is empty (discovery still filling in); the per-try timeout bounds
/// the wait.
const RECHECK: Duration = Duration::from_millis(1);

/// One instance in rotation, with its load.
pub(crate) struct Member {
    endpoint: EndpointService,
    rtt: Mutex<RttEstimate>,
    pending: AtomicU32,
}

impl Member {
    /// A member whose latency is assumed to be `default_rtt` until measured.
    pub(crate) fn new(endpoint: EndpointService, default_rtt: Duration) -> Self {
        Self {
            endpoint,
            rtt: Mutex::new(RttEstimate::new(nanos(default_rtt), Instant::now())),
            pending: AtomicU32::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RttEstimate> {
        self.rtt.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Peak-EWMA cost: decayed latency estimate × (requests in flight + 1).
    fn load(&self, decay_ns: f64, now: Instant) -> f64 {
        let pending = self.pending.load(Ordering::Relaxed);
        let estimate = self.lock().decay(now, decay_ns);
        estimate * f64::from(pending + 1)
    }
}

/// The instances of one (service, version) and how to weigh them.
pub(crate) struct Members {
    list: ArcSwap<Vec<Arc<Member>>>,
    decay_ns: f64,
}

impl Members {
    /// An empty list; `decay` is how fast latency estimates forget.
    pub(crate) fn new(decay: Duration) -> Arc<Self> {
        Arc::new(Self {
            list: ArcSwap::from_pointee(Vec::new()),
            decay_ns: nanos(decay).max(1.0),
        })
    }

    /// Replaces the instances in rotation (called by the membership task).
    pub(crate) fn publish(&self, members: Vec<Arc<Member>>) {
        self.list.store(Arc::new(members));
    }

    /// The less loaded of two distinct random members at `now`.
    fn pick(&self, now: Instant) -> Option<Arc<Member>> {
        let list = self.list.load();
        match list.len() {
            0 => None,
            1 => Some(list[0].clone()),
            n => {
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                let mut b = rng.random_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                let (la, lb) = (
                    list[a].load(self.decay_ns, now),
                    list[b].load(self.decay_ns, now),
                );
                Some(list[if la <= lb { a } else { b }].clone())
            }
        }
    }
}

/// A call in flight on a member: counted as pending, and its latency is
/// recorded when the answer's head arrives (or the call is dropped).
struct InFlight {
    member: Arc<Member>,
    sent_at: Instant,
    decay_ns: f64,
}

impl InFlight {
    fn start(member: Arc<Member>, decay_ns: f64, now: Instant) -> Self {
        member.pending.fetch_add(1, Ordering::Relaxed);
        Self {
            member,
            sent_at: now,
            decay_ns,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.member.pending.fetch_sub(1, Ordering::Relaxed);
        let now = Instant::now();
        self.member.lock().update(self.sent_at, now, self.decay_ns);
    }
}

impl Members {
    /// Sends `req` (with the attempt's `deadline` field) to the less loaded
    /// of two instances at `now`, waiting while the list is empty (the
    /// caller's timeout bounds the wait).
    pub(crate) async fn send(
        &self,
        req: &Request<Bytes>,
        deadline: &HeaderValue,
        mut now: Instant,
    ) -> Result<RawResponse, EndpointError> {
        let member = loop {
            match self.pick(now) {
                Some(m) => break m,
                None => {
                    tokio::time::sleep(RECHECK).await;
                    now = Instant::now();
                }
            }
        };
        let in_flight = InFlight::start(member, self.decay_ns, now);
        let result = in_flight.member.endpoint.send(req, deadline).await;
        drop(in_flight);
        result
    }
}

/// A latency estimate that takes any slower sample at once and moves toward
/// faster ones exponentially with the time since the last update.
#[derive(Debug)]
struct RttEstimate {
    rtt_ns: f64,
    update_at: Instant,
}

impl RttEstimate {
    fn new(rtt_ns: f64, now: Instant) -> Self {
        Self {
            rtt_ns,
            update_at: now,
        }
    }

    /// Adds the sample `recv_at - sent_at` at `recv_at` and returns the new
    /// estimate.
    fn update(&mut self, sent_at: Instant, recv_at: Instant, decay_ns: f64) -> f64 {
        let rtt = nanos(recv_at.saturating_duration_since(sent_at));
        self.rtt_ns = if self.rtt_ns < rtt {
            rtt
        } else {
            let decay = self.decay_factor(recv_at, decay_ns);
            self.rtt_ns * decay + rtt * (1.0 - decay)
        };
        self.advance(recv_at);
        self.rtt_ns
    }

    /// The estimate decayed to `now` without a sample (what a zero sample
    /// would give, without measuring it): the balancer asks this twice per
    /// call.
    fn decay(&mut self, now: Instant, decay_ns: f64) -> f64 {
        self.rtt_ns *= self.decay_factor(now, decay_ns);
        self.advance(now);
        self.rtt_ns
    }

    /// How much of the estimate is left after the time since the last update.
    fn decay_factor(&self, at: Instant, decay_ns: f64) -> f64 {
        let elapsed = nanos(at.saturating_duration_since(self.update_at));
        (-elapsed / decay_ns).exp()
    }

    fn advance(&mut self, at: Instant) {
        if at > self.update_at {
            self.update_at = at;
        }
    }
}

/// Through `f64` seconds: converting the `u128` of `as_nanos` to a float
/// is a library call, and this runs several times per call.
fn nanos(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Tracker;
    use crate::pool::Pool;

    fn member(port: u16) -> Arc<Member> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let endpoint = EndpointService::new(
            Pool::new(addr, Duration::from_secs(30), 1),
            Arc::from(format!("m{port}")),
            addr,
            Arc::new(Tracker::default()),
            tokio::sync::mpsc::unbounded_channel().0,
            5,
        );
        Arc::new(Member::new(endpoint, Duration::from_millis(5)))
    }

    #[test]
    fn of_two_the_one_with_fewer_calls_in_flight_is_picked() {
        let members = Members::new(Duration::from_secs(10));
        assert!(members.pick(Instant::now()).is_none());
        let (busy, idle) = (member(1), member(2));
        members.publish(vec![busy.clone(), idle.clone()]);
        let _calls: Vec<_> = (0..3)
            .map(|_| InFlight::start(busy.clone(), members.decay_ns, Instant::now()))
            .collect();
        for _ in 0..20 {
            let picked = members.pick(Instant::now()).unwrap();
            assert!(Arc::ptr_eq(&picked, &idle));
        }
    }

    #[test]
    fn of_two_the_one_with_the_lower_latency_is_picked() {
        let members = Members::new(Duration::from_secs(10));
        let (slow, fast) = (member(1), member(2));
        let t = Instant::now();
        slow.lock()
            .update(t, t + Duration::from_millis(80), members.decay_ns);
        members.publish(vec![slow.clone(), fast.clone()]);
        for _ in 0..20 {
            assert!(Arc::ptr_eq(&members.pick(Instant::now()).unwrap(), &fast));
        }
    }

    #[test]
    fn peaks_are_taken_at_once_and_decay_slowly() {
        let t = Instant::now();
        let decay = nanos(Duration::from_secs(10));
        let mut e = RttEstimate::new(nanos(Duration::from_millis(5)), t);
        let peak = e.update(t, t + Duration::from_millis(50), decay);
        assert_eq!(peak, nanos(Duration::from_millis(50)));
        let later = t + Duration::from_secs(1);
        let after = e.update(later, later + Duration::from_millis(1), decay);
        assert!(
            after < peak && after > nanos(Duration::from_millis(40)),
            "{after}"
        );
        let much_later = t + Duration::from_secs(120);
        let decayed = e.decay(much_later, decay);
        assert!(decayed < nanos(Duration::from_millis(1)), "{decayed}");
        assert_eq!(decayed, e.update(much_later, much_later, decay));
    }
}
