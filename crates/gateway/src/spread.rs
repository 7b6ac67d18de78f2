//! Spreading connections evenly over the serving threads.
//!
//! Every serving thread accepts from the same listener, and whichever wakes
//! first takes a whole burst of new connections: in `mortar bench http` one
//! thread held 40 of 41 client connections, could use no more than its fair
//! share of a core, and the gateway carried 0.89× nginx's requests
//! (docs/benchmarks.md). So a thread that accepts a connection hands it to
//! the thread serving the fewest (Envoy's "exact balance"), keeping it when
//! it is itself one of the least busy. A connection stays on the thread it
//! was dealt to for its whole life, with that thread's upstream pools.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

/// Added to a retired thread's count: far above any real count, so it is
/// never the fewest, with room left for counting.
const RETIRED: usize = usize::MAX / 2;

/// The open connections of each serving thread, and where to hand a
/// connection to another thread.
pub(crate) struct Spread {
    open: Box<[AtomicUsize]>,
    inboxes: Box<[mpsc::UnboundedSender<Handoff>]>,
}

/// A connection accepted by one thread for another to serve.
pub(crate) struct Handoff {
    pub(crate) stream: std::net::TcpStream,
    pub(crate) remote: SocketAddr,
    /// Counts it as open on the receiving thread from the moment it was
    /// dealt, so a burst of accepts does not deal every connection of the
    /// burst to the same thread.
    pub(crate) slot: Slot,
}

/// One open connection counted on a thread; dropping it (the connection
/// closed, or a handoff was never received) uncounts it.
pub(crate) struct Slot {
    spread: Arc<Spread>,
    thread: usize,
}

impl Slot {
    /// The thread this connection is counted on.
    pub(crate) fn thread(&self) -> usize {
        self.thread
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.spread.open[self.thread].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Spread {
    /// Room for `threads` serving threads (at least one), and each
    /// thread's inbox of connections handed to it, in thread order.
    pub(crate) fn new(threads: usize) -> (Arc<Spread>, Vec<mpsc::UnboundedReceiver<Handoff>>) {
        let (inboxes, receivers): (Vec<_>, Vec<_>) = (0..threads.max(1))
            .map(|_| mpsc::unbounded_channel())
            .unzip();
        let spread = Spread {
            open: inboxes.iter().map(|_| AtomicUsize::new(0)).collect(),
            inboxes: inboxes.into(),
        };
        (Arc::new(spread), receivers)
    }

    /// Counts a connection accepted by thread `me` on the thread with the
    /// fewest open connections (`me` on a tie), which should serve it.
    pub(crate) fn deal(self: &Arc<Self>, me: usize) -> Slot {
        let mut thread = me.min(self.open.len() - 1);
        let mut fewest = self.open[thread].load(Ordering::Relaxed);
        for (i, open) in self.open.iter().enumerate() {
            let n = open.load(Ordering::Relaxed);
            if n < fewest {
                (thread, fewest) = (i, n);
            }
        }
        self.open[thread].fetch_add(1, Ordering::Relaxed);
        Slot {
            spread: self.clone(),
            thread,
        }
    }

    /// Hands `handoff` to the thread its slot counts it on. If that thread
    /// has stopped serving, the connection is closed: the gateway is
    /// shutting down, and the connection had not been served yet.
    pub(crate) fn hand(&self, handoff: Handoff) {
        let to = handoff.slot.thread;
        if self.inboxes[to].send(handoff).is_err() {
            tracing::debug!(
                thread = to,
                "serving thread stopped; closing a connection dealt to it"
            );
        }
    }

    /// Thread `thread` cannot serve: it is never dealt a connection again.
    pub(crate) fn retire(&self, thread: usize) {
        self.open[thread].fetch_add(RETIRED, Ordering::Relaxed);
    }

    /// Open connections per serving thread.
    pub(crate) fn open_connections(&self) -> Vec<usize> {
        self.open
            .iter()
            .map(|n| n.load(Ordering::Relaxed) % RETIRED)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_go_to_the_thread_serving_fewest() {
        let (spread, _inboxes) = Spread::new(3);
        // Thread 0 accepts a burst of six: two land on each thread.
        let slots: Vec<Slot> = (0..6).map(|_| spread.deal(0)).collect();
        assert_eq!(spread.open_connections(), vec![2, 2, 2]);
        assert_eq!(
            slots[0].thread(),
            0,
            "on a tie the accepting thread keeps it"
        );
        drop(slots);
        assert_eq!(spread.open_connections(), vec![0, 0, 0]);
    }

    #[test]
    fn a_closed_connection_frees_its_place() {
        let (spread, _inboxes) = Spread::new(2);
        let a = spread.deal(1);
        let b = spread.deal(1);
        assert_eq!((a.thread(), b.thread()), (1, 0));
        drop(a);
        assert_eq!(spread.deal(0).thread(), 1, "thread 1 now serves fewer");
    }

    #[test]
    fn a_retired_thread_is_never_dealt_to_and_counts_nothing() {
        let (spread, _inboxes) = Spread::new(2);
        spread.retire(1);
        let slots: Vec<Slot> = (0..3).map(|_| spread.deal(1)).collect();
        assert!(slots.iter().all(|s| s.thread() == 0));
        assert_eq!(spread.open_connections(), vec![3, 0]);
    }

    #[test]
    fn a_handoff_to_a_stopped_thread_is_uncounted() {
        let (spread, inboxes) = Spread::new(2);
        drop(inboxes);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, remote) = listener.accept().unwrap();
        let _kept = spread.deal(0);
        let slot = spread.deal(0);
        assert_eq!(slot.thread(), 1);
        spread.hand(Handoff {
            stream,
            remote,
            slot,
        });
        assert_eq!(spread.open_connections(), vec![1, 0]);
        drop(client);
    }
}
