//! A consumer group's delivery state for one topic: what is acked, what is in flight
//! with which consumer until when, and what waits for redelivery.
//!
//! Offsets below `floor` are all acked; `acked` holds acks above it. `next` is the
//! first offset never handed out since the broker started. The in-flight and retry
//! tables only hold what consumers fetched, so memory is bounded by consumption,
//! not by backlog.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::nack_delay;

/// One delivery awaiting ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InFlight {
    /// Shared by every message of one fetch.
    pub(crate) consumer: Arc<str>,
    pub(crate) deadline: Instant,
    pub(crate) attempt: u32,
}

/// A message waiting to be delivered again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retry {
    /// Deliveries so far.
    pub(crate) attempts: u32,
    pub(crate) not_before: Instant,
}

/// A message that used up its deliveries and must go to the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exhausted {
    pub(crate) id: u64,
    pub(crate) attempts: u32,
}

/// The delivery state of one group on one topic.
#[derive(Debug)]
pub(crate) struct GroupState {
    pub(crate) floor: u64,
    pub(crate) acked: BTreeSet<u64>,
    pub(crate) next: u64,
    pub(crate) in_flight: HashMap<u64, InFlight>,
    /// No in-flight deadline is earlier than this: a lower bound, exact after
    /// each expiry scan, so fetches do not scan every delivery to find none due.
    pub(crate) earliest_deadline: Option<Instant>,
    pub(crate) retry: BTreeMap<u64, Retry>,
    /// Acks applied but not yet written to the ack file.
    pub(crate) unsynced: Vec<u64>,
    pub(crate) dead_lettered: u64,
    pub(crate) redelivered: u64,
    /// Messages handed out (reservations taken back are not counted).
    pub(crate) delivered: u64,
}

impl GroupState {
    /// State restored from persisted acks (or a new group at `floor`).
    pub(crate) fn new(floor: u64, acked: BTreeSet<u64>) -> Self {
        let mut state = Self {
            floor,
            acked,
            next: floor,
            in_flight: HashMap::new(),
            earliest_deadline: None,
            retry: BTreeMap::new(),
            unsynced: Vec::new(),
            dead_lettered: 0,
            redelivered: 0,
            delivered: 0,
        };
        state.advance_floor();
        state.next = state.floor;
        state
    }

    /// Hands out up to `max` messages to `consumer`: due redeliveries first, then new
    /// offsets below `log_end`. Returns `(id, attempt)` pairs, in flight from now on.
    pub(crate) fn reserve(
        &mut self,
        consumer: &str,
        max: usize,
        log_end: u64,
        now: Instant,
        ack_deadline: Duration,
    ) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        let due: Vec<(u64, u32)> = self
            .retry
            .iter()
            .filter(|(_, r)| r.not_before <= now)
            .take(max)
            .map(|(id, r)| (*id, r.attempts + 1))
            .collect();
        for (id, attempt) in due {
            self.retry.remove(&id);
            out.push((id, attempt));
        }
        while out.len() < max && self.next < log_end {
            let id = self.next;
            self.next += 1;
            if !self.is_acked(id) {
                out.push((id, 1));
            }
        }
        if out.is_empty() {
            return out;
        }
        self.delivered += out.len() as u64;
        let deadline = now + ack_deadline;
        let consumer: Arc<str> = Arc::from(consumer);
        for (id, attempt) in &out {
            self.in_flight.insert(
                *id,
                InFlight {
                    consumer: Arc::clone(&consumer),
                    deadline,
                    attempt: *attempt,
                },
            );
        }
        self.earliest_deadline = Some(self.earliest_deadline.map_or(deadline, |d| d.min(deadline)));
        out
    }

    /// Takes back a reservation that was not handed out (the fetch ran out of room):
    /// the message is deliverable again now with the same attempt number.
    pub(crate) fn unreserve(&mut self, id: u64, attempt: u32, now: Instant) {
        if self.in_flight.remove(&id).is_some() {
            self.delivered = self.delivered.saturating_sub(1);
            let attempts = attempt.saturating_sub(1);
            self.retry.insert(
                id,
                Retry {
                    attempts,
                    not_before: now,
                },
            );
        }
    }

    /// Acks `id`. Returns false if it already was.
    pub(crate) fn ack(&mut self, id: u64) -> bool {
        self.in_flight.remove(&id);
        self.retry.remove(&id);
        if self.is_acked(id) {
            return false;
        }
        self.acked.insert(id);
        self.unsynced.push(id);
        self.advance_floor();
        true
    }

    /// Nacks in-flight messages: each waits `delay` (or the exponential backoff) before
    /// redelivery, unless it used up its deliveries. Ids not in flight are ignored (they
    /// were acked or already redelivered).
    pub(crate) fn nack(
        &mut self,
        ids: &[u64],
        now: Instant,
        delay: Option<Duration>,
        base_delay: Duration,
        max_deliveries: u32,
    ) -> Vec<Exhausted> {
        let mut exhausted = Vec::new();
        for id in ids {
            if let Some(flight) = self.in_flight.remove(id) {
                let wait = delay.unwrap_or_else(|| nack_delay(base_delay, flight.attempt));
                self.requeue(
                    *id,
                    flight.attempt,
                    now + wait,
                    max_deliveries,
                    &mut exhausted,
                );
            }
        }
        exhausted
    }

    /// Moves deliveries past their deadline back to the queue.
    pub(crate) fn expire(&mut self, now: Instant, max_deliveries: u32) -> Vec<Exhausted> {
        if self.in_flight.is_empty() || self.earliest_deadline.is_some_and(|d| d > now) {
            return Vec::new();
        }
        let mut expired = Vec::new();
        let mut earliest: Option<Instant> = None;
        for (id, flight) in &self.in_flight {
            if flight.deadline <= now {
                expired.push(*id);
            } else {
                earliest = Some(earliest.map_or(flight.deadline, |d| d.min(flight.deadline)));
            }
        }
        self.earliest_deadline = earliest;
        self.requeue_all(expired, now, max_deliveries)
    }

    /// Makes everything in flight with `consumer` deliverable now.
    pub(crate) fn release(
        &mut self,
        consumer: &str,
        now: Instant,
        max_deliveries: u32,
    ) -> Vec<Exhausted> {
        let held: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| &*f.consumer == consumer)
            .map(|(id, _)| *id)
            .collect();
        self.requeue_all(held, now, max_deliveries)
    }

    fn requeue_all(&mut self, ids: Vec<u64>, now: Instant, max_deliveries: u32) -> Vec<Exhausted> {
        let mut exhausted = Vec::new();
        for id in ids {
            if let Some(flight) = self.in_flight.remove(&id) {
                self.requeue(id, flight.attempt, now, max_deliveries, &mut exhausted);
            }
        }
        exhausted
    }

    fn requeue(
        &mut self,
        id: u64,
        attempts: u32,
        not_before: Instant,
        max: u32,
        exhausted: &mut Vec<Exhausted>,
    ) {
        if attempts >= max {
            exhausted.push(Exhausted { id, attempts });
        } else {
            self.redelivered += 1;
            self.retry.insert(
                id,
                Retry {
                    attempts,
                    not_before,
                },
            );
        }
    }

    /// The earliest moment something becomes deliverable again without a new publish.
    pub(crate) fn next_wake(&mut self) -> Option<Instant> {
        let retry = self.retry.values().map(|r| r.not_before).min();
        // Exact (a scan) rather than the lower bound: this decides how long
        // an idle fetch sleeps. It also tightens the bound for `expire`.
        let deadline = self.in_flight.values().map(|f| f.deadline).min();
        self.earliest_deadline = deadline;
        retry.into_iter().chain(deadline).min()
    }

    /// Forgets offsets below `first`, which retention removed.
    pub(crate) fn clamp_to(&mut self, first: u64) {
        if self.floor < first {
            self.floor = first;
            self.acked = self.acked.split_off(&first);
            self.in_flight.retain(|id, _| *id >= first);
            self.retry = self.retry.split_off(&first);
            self.advance_floor();
        }
        self.next = self.next.max(self.floor);
    }

    /// Forgets acks at or past `end`: the log lost those records (a damaged tail was
    /// truncated), so the offsets will be reused by new messages that must be delivered.
    pub(crate) fn forget_from(&mut self, end: u64) {
        self.floor = self.floor.min(end);
        self.next = self.next.min(end);
        self.acked = self.acked.split_off(&self.floor);
        self.acked.retain(|id| *id < end);
    }

    /// Undelivered plus unacked messages below `log_end`.
    pub(crate) fn backlog(&self, log_end: u64) -> u64 {
        log_end
            .saturating_sub(self.floor)
            .saturating_sub(self.acked.len() as u64)
    }

    /// Distance from the lowest unacked offset to the end of the log.
    pub(crate) fn lag(&self, log_end: u64) -> u64 {
        log_end.saturating_sub(self.floor)
    }

    fn is_acked(&self, id: u64) -> bool {
        id < self.floor || self.acked.contains(&id)
    }

    fn advance_floor(&mut self) {
        while self.acked.remove(&self.floor) {
            self.floor += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(30);

    #[test]
    fn each_offset_goes_to_one_consumer_and_acks_advance_the_floor() {
        let now = Instant::now();
        let mut g = GroupState::new(0, BTreeSet::new());
        let a = g.reserve("a", 2, 5, now, DEADLINE);
        let b = g.reserve("b", 10, 5, now, DEADLINE);
        assert_eq!(a, vec![(0, 1), (1, 1)]);
        assert_eq!(b, vec![(2, 1), (3, 1), (4, 1)]);
        assert_eq!(g.delivered, 5);
        assert!(g.ack(1));
        assert_eq!(g.floor, 0);
        assert!(g.ack(0));
        assert!(!g.ack(0));
        assert_eq!(g.floor, 2);
        assert_eq!(g.backlog(5), 3);
        assert_eq!(g.lag(5), 3);
    }

    #[test]
    fn expired_and_nacked_deliveries_come_back_with_a_higher_attempt() {
        let now = Instant::now();
        let mut g = GroupState::new(0, BTreeSet::new());
        g.reserve("a", 2, 2, now, DEADLINE);
        assert!(g.expire(now + DEADLINE, 5).is_empty());
        assert_eq!(g.redelivered, 2);
        let again = g.reserve("b", 1, 2, now + DEADLINE, DEADLINE);
        assert_eq!(again, vec![(0, 2)]);
        // A redelivery is a delivery too.
        assert_eq!(g.delivered, 3);
        let later = now + Duration::from_secs(100);
        assert!(
            g.nack(&[0], later, Some(Duration::from_secs(10)), DEADLINE, 5)
                .is_empty()
        );
        assert_eq!(g.reserve("b", 5, 2, later, DEADLINE), vec![(1, 2)]);
        assert_eq!(g.next_wake(), Some(later + Duration::from_secs(10)));
        assert_eq!(
            g.reserve("b", 5, 2, later + Duration::from_secs(10), DEADLINE),
            vec![(0, 3)]
        );
    }

    #[test]
    fn a_message_out_of_deliveries_is_exhausted() {
        let now = Instant::now();
        let mut g = GroupState::new(0, BTreeSet::new());
        g.reserve("a", 1, 1, now, DEADLINE);
        assert!(
            g.nack(&[0], now, Some(Duration::ZERO), DEADLINE, 2)
                .is_empty()
        );
        g.reserve("a", 1, 1, now, DEADLINE);
        assert_eq!(
            g.release("a", now, 2),
            vec![Exhausted { id: 0, attempts: 2 }]
        );
        assert!(g.in_flight.is_empty() && g.retry.is_empty());
    }

    #[test]
    fn restored_state_skips_acked_offsets() {
        let now = Instant::now();
        let mut g = GroupState::new(3, BTreeSet::from([3, 5]));
        assert_eq!(g.floor, 4);
        assert_eq!(g.reserve("a", 10, 7, now, DEADLINE), vec![(4, 1), (6, 1)]);
        let mut shrunk = GroupState::new(3, BTreeSet::from([3, 5, 9]));
        shrunk.forget_from(5);
        assert_eq!((shrunk.floor, shrunk.acked.len()), (4, 0));
        shrunk.forget_from(2);
        assert_eq!(shrunk.floor, 2);
        g.unreserve(6, 1, now);
        assert_eq!(g.reserve("b", 10, 7, now, DEADLINE), vec![(6, 1)]);
        g.clamp_to(6);
        assert_eq!(g.floor, 6);
        assert_eq!(g.in_flight.keys().copied().collect::<Vec<_>>(), vec![6]);
    }
}
