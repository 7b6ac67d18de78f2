//! The read model's life: live updates from the bus through the inbox,
//! status against ordering's head, and rebuilds from ordering's feed.
//!
//! Live updates and a rebuild never interleave: each bus message is
//! applied under a shared gate that a rebuild holds exclusively. A rebuild
//! clears the table, the checkpoint and the inbox in one transaction, then
//! replays the feed through the same inbox, so every event it replays is
//! known to the inbox afterwards: a bus delivery of one of them (waiting at
//! the gate, or redelivered later) changes nothing, and anything newer is
//! applied once the gate opens again — the read model resumes where the
//! replay ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use mortar_cqrs::eventstore::RecordedEvent;
use mortar_cqrs::{Inbox, Projection, ProjectionError, ReadStore, ReadStoreError, SqlValue};
use serde::Serialize;
use tokio::sync::RwLock;

use crate::feed::{Feed, FeedError, SOURCE};
use crate::projection::{BY_CUSTOMER, NAME, OrderHistory};

/// Events asked of the feed per page during a rebuild.
const PAGE: usize = 500;

/// Why a message, a status or a rebuild failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HistoryError {
    /// The message is not a recorded event.
    #[error("the message is not an order event: {0}")]
    Malformed(serde_json::Error),
    /// The projection or the read store failed.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// The read store failed.
    #[error("read store: {0}")]
    ReadStore(#[from] ReadStoreError),
    /// ordering's feed could not be read.
    #[error(transparent)]
    Feed(#[from] FeedError),
    /// The service has no way to reach ordering (no `MORTAR_NODE_URL`).
    #[error(
        "{SOURCE} cannot be called: MORTAR_NODE_URL is not set, so services cannot be found by name"
    )]
    NoFeed,
    /// Another rebuild is running.
    #[error("a rebuild of {NAME} is already running")]
    Busy,
    /// A rebuild stopped half-way: the read model is incomplete until the
    /// next successful rebuild.
    #[error(
        "the rebuild stopped after {replayed} event(s): {source}; the read model is incomplete, run the rebuild again"
    )]
    Interrupted {
        /// Events replayed before the failure.
        replayed: u64,
        /// The failure.
        source: Box<HistoryError>,
    },
}

/// One row of "my orders".
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct OrderRow {
    pub(crate) id: String,
    pub(crate) status: String,
    pub(crate) total_cents: Option<i64>,
    pub(crate) placed_at: Option<String>,
    pub(crate) updated_at: Option<String>,
}

/// The projection as `GET /v1/projections` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Status {
    pub(crate) name: &'static str,
    /// The service whose events feed it.
    pub(crate) source: &'static str,
    /// The highest event position applied.
    pub(crate) position: i64,
    /// ordering's newest position, when it answered.
    pub(crate) head: Option<i64>,
    /// `head - position`, when the head is known.
    pub(crate) lag: Option<i64>,
    /// Why the head is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) head_error: Option<String>,
    /// `live` or `rebuilding`.
    pub(crate) state: &'static str,
    /// Messages applied since this instance started.
    pub(crate) applied: u64,
    /// Messages the inbox recognised as already applied.
    pub(crate) duplicates: u64,
}

/// The outcome of a rebuild.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Rebuilt {
    pub(crate) name: &'static str,
    /// Events replayed from the feed.
    pub(crate) replayed: u64,
    /// The position the read model stands at afterwards.
    pub(crate) position: i64,
    pub(crate) took_ms: u64,
}

/// The read model and what feeds it.
pub(crate) struct History {
    read: Arc<dyn ReadStore>,
    inbox: Inbox,
    feed: Option<Feed>,
    gate: RwLock<()>,
    rebuilding: AtomicBool,
    applied: AtomicU64,
    duplicates: AtomicU64,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("backend", &self.read.backend())
            .finish_non_exhaustive()
    }
}

/// Clears the `rebuilding` flag however the rebuild ends.
struct Rebuilding<'a>(&'a AtomicBool);

impl Drop for Rebuilding<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// RFC 3339 in UTC with exactly three fractional digits, so the strings
/// sort as the instants do.
fn rfc3339(ms: Option<i64>) -> Option<String> {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms?) * 1_000_000).ok()?;
    at.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .ok()
}

impl History {
    /// Creates the table and checkpoint when missing.
    pub(crate) async fn open(
        read: Arc<dyn ReadStore>,
        feed: Option<Feed>,
    ) -> Result<History, ReadStoreError> {
        read.migrate(OrderHistory.schema()).await?;
        read.ensure_checkpoint(NAME).await?;
        Ok(History {
            inbox: Inbox::new(read.clone(), NAME),
            read,
            feed,
            gate: RwLock::new(()),
            rebuilding: AtomicBool::new(false),
            applied: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
        })
    }

    /// The read store (for the readiness check).
    pub(crate) fn read_store(&self) -> &Arc<dyn ReadStore> {
        &self.read
    }

    /// Applies one event from the bus, once; returns whether it changed
    /// anything (false for a duplicate).
    pub(crate) async fn apply_message(&self, payload: &[u8]) -> Result<bool, HistoryError> {
        let event: RecordedEvent =
            serde_json::from_slice(payload).map_err(HistoryError::Malformed)?;
        let _live = self.gate.read().await;
        let event_id = event.event_id();
        let fresh = self.inbox.project(&OrderHistory, event).await?;
        tracing::debug!(event = %event_id, fresh, "order event projected");
        let counter = if fresh {
            &self.applied
        } else {
            &self.duplicates
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(fresh)
    }

    /// Where the projection is, and its lag behind ordering when reachable.
    pub(crate) async fn status(&self) -> Result<Status, HistoryError> {
        let position = self.read.checkpoint(NAME).await?;
        let (head, head_error) = match &self.feed {
            None => (None, Some(HistoryError::NoFeed.to_string())),
            Some(feed) => match feed.head().await {
                Ok(head) => (Some(head), None),
                Err(e) => (None, Some(e.to_string())),
            },
        };
        Ok(Status {
            name: NAME,
            source: SOURCE,
            position,
            head,
            lag: head.map(|h| (h - position).max(0)),
            head_error,
            state: if self.rebuilding.load(Ordering::SeqCst) {
                "rebuilding"
            } else {
                "live"
            },
            applied: self.applied.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
        })
    }

    /// Resets the read model and replays ordering's feed; see the module docs.
    pub(crate) async fn rebuild(&self) -> Result<Rebuilt, HistoryError> {
        let feed = self.feed.as_ref().ok_or(HistoryError::NoFeed)?;
        if self.rebuilding.swap(true, Ordering::SeqCst) {
            return Err(HistoryError::Busy);
        }
        let _flag = Rebuilding(&self.rebuilding);
        let started = Instant::now();
        let _exclusive = self.gate.write().await;
        // Nothing is touched unless ordering answers now.
        feed.head().await?;
        self.read.reset(NAME, OrderHistory.clear()).await?;
        let mut replayed = 0u64;
        let mut after = 0;
        let outcome: Result<(), HistoryError> = async {
            loop {
                let events = feed.events(after, PAGE).await?;
                let Some(last) = events.last() else {
                    return Ok(());
                };
                after = last.position;
                for event in events {
                    if self.inbox.project(&OrderHistory, event).await? {
                        replayed += 1;
                    }
                }
            }
        }
        .await;
        if let Err(e) = outcome {
            return Err(HistoryError::Interrupted {
                replayed,
                source: Box::new(e),
            });
        }
        let position = self.read.checkpoint(NAME).await?;
        tracing::info!(
            projection = NAME,
            replayed,
            position,
            "rebuilt; resuming live updates"
        );
        Ok(Rebuilt {
            name: NAME,
            replayed,
            position,
            took_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// A customer's orders, newest first.
    pub(crate) async fn orders(
        &self,
        customer: &str,
        limit: i64,
    ) -> Result<Vec<OrderRow>, ReadStoreError> {
        let rows = self
            .read
            .query(BY_CUSTOMER, vec![customer.into(), limit.into()])
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let text = |i: usize| row.get(i).and_then(SqlValue::as_str).map(str::to_owned);
                let int = |i: usize| row.get(i).and_then(SqlValue::as_i64);
                OrderRow {
                    id: text(0).unwrap_or_default(),
                    status: text(1).unwrap_or_default(),
                    total_cents: int(2),
                    placed_at: rfc3339(int(3)),
                    updated_at: rfc3339(int(4)),
                }
            })
            .collect())
    }
}
