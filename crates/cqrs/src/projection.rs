//! Projections: events in, read-model rows out, with a checkpoint.
//!
//! A runner reads events after its checkpoint from an [`EventSource`],
//! asks the projection for the SQL each event implies, and commits that SQL
//! together with the new checkpoint in one read-store transaction. A crash
//! anywhere leaves either both or neither, so each event takes effect once.
//! Rebuilding clears the projection's tables and checkpoint in one
//! transaction and replays from position 0 through the same code path, which
//! is why a rebuilt read model equals the live one.

use std::sync::Arc;
use std::time::Duration;

use mortar_eventstore::{EventSource, RecordedEvent, StoreError, UpcastError, Upcasters};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Sql;
use crate::readstore::{ReadStore, ReadStoreError};

/// The pause after a failed step (e.g. a dropped database session, which
/// the next step reconnects); doubles while steps keep failing.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between failing steps.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// A read model fed by events.
pub trait Projection: Send + Sync + 'static {
    /// Its name, unique in its read store (the checkpoint's key).
    fn name(&self) -> &str;
    /// Idempotent DDL creating its tables.
    fn schema(&self) -> &str;
    /// Statements emptying its tables (run before a rebuild).
    fn clear(&self) -> Vec<Sql>;
    /// The statements one event implies (none for events it ignores).
    fn handle(&self, event: &RecordedEvent) -> Result<Vec<Sql>, String>;
}

/// A projection could not make progress.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// Reading events failed.
    #[error("reading events: {0}")]
    Source(#[from] StoreError),
    /// The read store failed.
    #[error("read store: {0}")]
    ReadStore(#[from] ReadStoreError),
    /// An event could not be upcast.
    #[error(transparent)]
    Upcast(#[from] UpcastError),
    /// The projection refused an event (a bug or an unknown shape); it stays
    /// stuck before that event until fixed.
    #[error("projection {name:?} cannot handle the event at position {position}: {problem}")]
    Handler {
        /// The projection.
        name: String,
        /// The event's position.
        position: i64,
        /// What the projection reported.
        problem: String,
    },
}

/// Where a projection is, against the head of its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectionStatus {
    /// The projection.
    pub name: String,
    /// The last position applied.
    pub checkpoint: i64,
    /// The newest position in the source.
    pub head: i64,
    /// Events not yet applied (`head - checkpoint`, at least 0).
    pub lag: i64,
}

/// Runs one projection; see the module docs.
pub struct ProjectionRunner {
    source: Arc<dyn EventSource>,
    read: Arc<dyn ReadStore>,
    projection: Arc<dyn Projection>,
    upcasters: Upcasters,
    batch: usize,
    poll: Duration,
    wake: Option<watch::Receiver<i64>>,
    applied: watch::Sender<i64>,
    /// The checkpoint this runner last committed, so a step need not ask
    /// the read store first. `None` until known, and again after anything
    /// else may have moved it (a rebuild, another runner, a failure).
    known: std::sync::Mutex<Option<i64>>,
}

impl std::fmt::Debug for ProjectionRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("projection", &self.projection.name())
            .finish_non_exhaustive()
    }
}

impl ProjectionRunner {
    /// A runner feeding `projection` from `source` into `read`.
    pub fn new(
        source: Arc<dyn EventSource>,
        read: Arc<dyn ReadStore>,
        projection: Arc<dyn Projection>,
    ) -> Self {
        ProjectionRunner {
            source,
            read,
            projection,
            upcasters: Upcasters::new(),
            batch: 1000,
            poll: Duration::from_millis(250),
            wake: None,
            applied: watch::channel(0).0,
            known: std::sync::Mutex::new(None),
        }
    }

    /// Migrates old event versions before the projection sees them.
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Wakes the runner on every change of `head` (e.g.
    /// [`mortar_eventstore::EventStore::watch_head`]) instead of waiting
    /// for the next poll.
    pub fn wake_on(mut self, head: watch::Receiver<i64>) -> Self {
        self.wake = Some(head);
        self
    }

    /// How often to look for new events when not woken.
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// The most events applied in one transaction.
    pub fn batch_size(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// The projection's name.
    pub fn name(&self) -> &str {
        self.projection.name()
    }

    /// The checkpoint after every committed batch (for lag measurements).
    pub fn applied(&self) -> watch::Receiver<i64> {
        self.applied.subscribe()
    }

    /// Creates the projection's tables and checkpoint.
    pub async fn init(&self) -> Result<(), ProjectionError> {
        self.read.migrate(self.projection.schema()).await?;
        self.read.ensure_checkpoint(self.projection.name()).await?;
        Ok(())
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Option<i64>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one batch after the checkpoint; returns how many events.
    pub async fn step(&self) -> Result<usize, ProjectionError> {
        let result = self.try_step().await;
        if result.is_err() {
            // The checkpoint may have moved under us: ask next time.
            *self.known() = None;
        }
        result
    }

    async fn try_step(&self) -> Result<usize, ProjectionError> {
        let name = self.projection.name();
        let cached = *self.known();
        let from = match cached {
            Some(position) => position,
            None => self.read.checkpoint(name).await?,
        };
        let events = self.source.read_all(from, self.batch).await?;
        let Some(last) = events.last().map(|e| e.position) else {
            *self.known() = Some(from);
            return Ok(0);
        };
        let mut statements = Vec::new();
        for event in &events {
            let event = self.upcasters.upcast(event.clone())?;
            let sql =
                self.projection
                    .handle(&event)
                    .map_err(|problem| ProjectionError::Handler {
                        name: name.to_owned(),
                        position: event.position,
                        problem,
                    })?;
            statements.extend(sql);
        }
        self.read
            .commit_projection(name, from, last, statements)
            .await?;
        *self.known() = Some(last);
        self.applied.send_replace(last);
        Ok(events.len())
    }

    /// Applies batches until the source has nothing newer; returns how many events.
    pub async fn catch_up(&self) -> Result<u64, ProjectionError> {
        let mut total = 0;
        loop {
            let n = self.step().await?;
            total += n as u64;
            if n < self.batch {
                return Ok(total);
            }
        }
    }

    /// Clears the projection's tables and checkpoint in one transaction,
    /// then replays every event; returns how many.
    pub async fn rebuild(&self) -> Result<u64, ProjectionError> {
        self.init().await?;
        *self.known() = None;
        let reset = self
            .read
            .reset(self.projection.name(), self.projection.clear())
            .await;
        *self.known() = None;
        reset?;
        self.catch_up().await
    }

    /// Checkpoint, head and lag.
    pub async fn status(&self) -> Result<ProjectionStatus, ProjectionError> {
        let checkpoint = self.read.checkpoint(self.projection.name()).await?;
        let head = self.source.head().await?;
        Ok(ProjectionStatus {
            name: self.projection.name().to_owned(),
            checkpoint,
            head,
            lag: (head - checkpoint).max(0),
        })
    }

    /// Keeps the projection caught up until `shutdown`. Another runner
    /// moving the checkpoint first is not an error (it simply retries from
    /// the new checkpoint); other failures are logged and retried after a
    /// pause that grows from 100 ms to 5 s while they last.
    pub fn spawn(self: Arc<Self>, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            if let Err(e) = self.init().await {
                tracing::error!(projection = self.name(), error = %e, "cannot initialise the projection");
            }
            let mut wake = self.wake.clone();
            let mut pause = FIRST_PAUSE;
            loop {
                match self.step().await {
                    Ok(n) if n >= self.batch => {
                        pause = FIRST_PAUSE;
                        continue;
                    }
                    Ok(_) => pause = FIRST_PAUSE,
                    Err(ProjectionError::ReadStore(ReadStoreError::CheckpointMoved { .. })) => {
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(
                            projection = self.name(),
                            error = %e,
                            retry_ms = pause.as_millis() as u64,
                            "projection step failed"
                        );
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(pause) => {}
                        }
                        pause = (pause * 2).min(MAX_PAUSE);
                        continue;
                    }
                }
                let changed = async {
                    match wake.as_mut() {
                        Some(rx) => {
                            if rx.changed().await.is_err() {
                                std::future::pending::<()>().await;
                            }
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = changed => {}
                    () = tokio::time::sleep(self.poll) => {}
                }
            }
        })
    }
}
