//! Holding a service's requests while a recreate deploy swaps its
//! instances: instead of failing while no instance is up, a request waits
//! in a bounded queue for a bounded time, then is forwarded as usual (or
//! answered 503 when the swap takes longer). A quick swap loses nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// One service's hold.
#[derive(Debug)]
struct Hold {
    /// `true` while held; released holds send `false`.
    held: watch::Sender<bool>,
    /// Requests waiting now.
    waiting: AtomicU32,
    /// The most that may wait at once.
    capacity: u32,
    /// The longest one request waits.
    timeout: Duration,
}

/// The holds of every service. Without one, requests skip the lock.
#[derive(Debug, Default)]
pub(crate) struct Holds {
    by_service: RwLock<HashMap<String, Arc<Hold>>>,
    any: AtomicBool,
}

/// Why a held request was not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HoldRefused {
    /// The queue was full when it arrived.
    QueueFull(u32),
    /// The swap did not finish within the hold time.
    TimedOut(Duration),
}

/// What the caller needs to wait for the service to be routable again.
pub(crate) struct Waiting {
    hold: Arc<Hold>,
    deadline: Instant,
}

impl Holds {
    /// Holds `service`'s requests from now until [`Holds::release`].
    pub(crate) fn hold(&self, service: &str, timeout: Duration, capacity: u32) {
        let mut map = self.by_service.write().unwrap_or_else(|p| p.into_inner());
        let hold = Arc::new(Hold {
            held: watch::channel(true).0,
            waiting: AtomicU32::new(0),
            capacity: capacity.max(1),
            timeout,
        });
        if let Some(old) = map.insert(service.to_owned(), hold) {
            old.held.send_replace(false);
        }
        self.any.store(true, Ordering::Release);
    }

    /// Lets `service`'s held requests through.
    pub(crate) fn release(&self, service: &str) {
        let mut map = self.by_service.write().unwrap_or_else(|p| p.into_inner());
        if let Some(hold) = map.remove(service) {
            hold.held.send_replace(false);
        }
        self.any.store(!map.is_empty(), Ordering::Release);
    }

    /// `None` when `service` is not held; otherwise a place in the queue
    /// (or the reason there is none).
    pub(crate) fn enter(&self, service: &str) -> Option<Result<Waiting, HoldRefused>> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let hold = self
            .by_service
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(service)?
            .clone();
        let queued = hold.waiting.fetch_add(1, Ordering::AcqRel);
        if queued >= hold.capacity {
            hold.waiting.fetch_sub(1, Ordering::AcqRel);
            return Some(Err(HoldRefused::QueueFull(hold.capacity)));
        }
        let deadline = Instant::now() + hold.timeout;
        Some(Ok(Waiting { hold, deadline }))
    }
}

impl Waiting {
    /// Waits until the hold is released and `routable()` says an instance
    /// can take the request (the forwarding client may learn of the new
    /// instances a moment after the release), or the hold time runs out.
    pub(crate) async fn wait(self, routable: impl Fn() -> bool) -> Result<(), HoldRefused> {
        let timed_out = HoldRefused::TimedOut(self.hold.timeout);
        let mut held = self.hold.held.subscribe();
        // The borrow `wait_for` returns is a lock guard: drop it at once.
        let released = tokio::time::timeout_at(self.deadline, held.wait_for(|h| !*h))
            .await
            .is_ok();
        let result = match released {
            false => Err(timed_out),
            true => loop {
                if routable() {
                    break Ok(());
                }
                if Instant::now() >= self.deadline {
                    break Err(timed_out);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            },
        };
        self.hold.waiting.fetch_sub(1, Ordering::AcqRel);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_request_goes_on_when_released_and_routable() {
        let holds = Arc::new(Holds::default());
        assert!(holds.enter("web").is_none(), "nothing is held yet");
        holds.hold("web", Duration::from_secs(5), 10);
        let waiting = holds.enter("web").unwrap().unwrap();
        let task = tokio::spawn(waiting.wait(|| true));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!task.is_finished(), "a held request waits");
        holds.release("web");
        assert_eq!(task.await.unwrap(), Ok(()));
        assert!(holds.enter("web").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_and_the_wait_are_bounded() {
        let holds = Holds::default();
        holds.hold("web", Duration::from_secs(2), 1);
        let first = holds.enter("web").unwrap().unwrap();
        assert_eq!(
            holds.enter("web").unwrap().err(),
            Some(HoldRefused::QueueFull(1))
        );
        assert_eq!(
            first.wait(|| true).await,
            Err(HoldRefused::TimedOut(Duration::from_secs(2)))
        );
        // The timed-out request left the queue.
        assert!(holds.enter("web").unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_without_instances_still_times_out() {
        let holds = Holds::default();
        holds.hold("web", Duration::from_secs(1), 5);
        let waiting = holds.enter("web").unwrap().unwrap();
        holds.release("web");
        assert_eq!(
            waiting.wait(|| false).await,
            Err(HoldRefused::TimedOut(Duration::from_secs(1)))
        );
    }
}
