//! The command handler: load, decide, append with the loaded version, and
//! on a conflict reload and decide again (a bounded number of times).
//!
//! Why retry inside: a conflict means another command changed the aggregate
//! between our load and our append. Deciding again on the new state either
//! succeeds (the commands did not really clash) or returns the domain error
//! the rules give for the new state — never a lost update.
//!
//! An append the store reports as [`StoreError::NotCommitted`] (the
//! connection dropped before the commit) is known not to have happened, so
//! it is tried again the same way, after a short pause for the store to
//! reconnect. [`StoreError::OutcomeUnknown`] is not: the events may be
//! there, and deciding again could apply the command twice.

use std::marker::PhantomData;
use std::sync::Arc;

use mortar_eventstore::{
    AppendRequest, EventStore, ExpectedVersion, Metadata, Snapshot, StoreError, UpcastError,
    Upcasters,
};

use crate::aggregate::{Aggregate, CodecError, decode_event, encode_event};

/// Why a command did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error + 'static> {
    /// The aggregate's rules refused it.
    #[error(transparent)]
    Domain(E),
    /// Other commands kept changing the aggregate; gave up after `attempts`.
    #[error("{stream_id} kept changing under {attempts} attempts; try again")]
    Conflict {
        /// The stream.
        stream_id: String,
        /// How many times it was tried.
        attempts: u32,
    },
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An event could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A stored event could not be upcast.
    #[error(transparent)]
    Upcast(#[from] UpcastError),
}

/// What a successful command did.
#[derive(Debug)]
pub struct Executed<A: Aggregate> {
    /// The state after the command.
    pub state: A,
    /// The stream's version after the command.
    pub version: i64,
    /// The global position of its last event (0 when it appended nothing):
    /// projections have caught up with it once their checkpoint reaches it.
    pub position: i64,
    /// The events it caused (empty when it changed nothing).
    pub events: Vec<A::Event>,
    /// How many conflicts were retried.
    pub retries: u32,
}

/// The pause before retrying a command whose append was not committed,
/// times the attempt: the store's session reconnects meanwhile.
const NOT_COMMITTED_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// Runs commands against aggregates of type `A`; cheap to clone.
pub struct CommandHandler<A: Aggregate> {
    store: Arc<dyn EventStore>,
    upcasters: Upcasters,
    max_attempts: u32,
    snapshot_every: Option<i64>,
    publish_to: Option<String>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> Clone for CommandHandler<A> {
    fn clone(&self) -> Self {
        CommandHandler {
            store: self.store.clone(),
            upcasters: self.upcasters.clone(),
            max_attempts: self.max_attempts,
            snapshot_every: self.snapshot_every,
            publish_to: self.publish_to.clone(),
            _aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate> std::fmt::Debug for CommandHandler<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandHandler")
            .field("aggregate", &A::TYPE)
            .field("max_attempts", &self.max_attempts)
            .field("snapshot_every", &self.snapshot_every)
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> CommandHandler<A> {
    /// A handler over `store`: 5 attempts, no snapshots, no publishing.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        CommandHandler {
            store,
            upcasters: Upcasters::new(),
            max_attempts: 5,
            snapshot_every: None,
            publish_to: None,
            _aggregate: PhantomData,
        }
    }

    /// Migrates old event versions on load.
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// How many times a command is tried when it conflicts (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Saves a snapshot whenever a stream crosses a multiple of `n` events.
    pub fn snapshot_every(mut self, n: i64) -> Self {
        self.snapshot_every = (n > 0).then_some(n);
        self
    }

    /// Publishes every new event to `topic` through the transactional outbox.
    pub fn publish_to(mut self, topic: impl Into<String>) -> Self {
        self.publish_to = Some(topic.into());
        self
    }

    /// The store it appends to.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// The current state and version of aggregate `id` (version 0: new).
    pub async fn load(&self, id: &str) -> Result<(A, i64), CommandError<A::Error>> {
        let stream_id = A::stream_id(id);
        let (mut state, mut version) = match &self.snapshot_every {
            Some(_) => match self.store.load_snapshot(&stream_id).await? {
                Some(snapshot) => match serde_json::from_value::<A>(snapshot.state) {
                    Ok(state) => (state, snapshot.version),
                    // A snapshot of an older state shape: replay instead.
                    Err(_) => (A::default(), 0),
                },
                None => (A::default(), 0),
            },
            None => (A::default(), 0),
        };
        for recorded in self.store.read_stream(&stream_id, version).await? {
            let recorded = self.upcasters.upcast(recorded)?;
            state.apply(&decode_event::<A::Event>(&recorded)?);
            version = recorded.version;
        }
        Ok((state, version))
    }

    /// Runs `command` on aggregate `id`; see the module docs.
    pub async fn execute(
        &self,
        id: &str,
        command: &A::Command,
        metadata: &Metadata,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        let stream_id = A::stream_id(id);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (mut state, version) = self.load(id).await?;
            let events = state.decide(command).map_err(CommandError::Domain)?;
            if events.is_empty() {
                return Ok(Executed {
                    state,
                    version,
                    position: 0,
                    events,
                    retries: attempt - 1,
                });
            }
            let encoded = events
                .iter()
                .map(|e| encode_event(e, metadata))
                .collect::<Result<Vec<_>, _>>()?;
            let mut request =
                AppendRequest::new(&stream_id, ExpectedVersion::Exact(version), encoded);
            request.publish_to = self.publish_to.clone();
            match self.store.append(request).await {
                Ok(appended) => {
                    for event in &events {
                        state.apply(event);
                    }
                    self.maybe_snapshot(&stream_id, version, appended.version, &state)
                        .await;
                    return Ok(Executed {
                        state,
                        version: appended.version,
                        position: appended.position,
                        events,
                        retries: attempt - 1,
                    });
                }
                Err(e) if e.is_conflict() => {
                    if attempt >= self.max_attempts {
                        return Err(CommandError::Conflict {
                            stream_id,
                            attempts: attempt,
                        });
                    }
                    // Let the winner's neighbours through before deciding again.
                    tokio::task::yield_now().await;
                }
                Err(e @ StoreError::NotCommitted(_)) if attempt < self.max_attempts => {
                    tracing::info!(stream_id, attempt, error = %e, "append not committed; trying the command again");
                    tokio::time::sleep(NOT_COMMITTED_PAUSE * attempt).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Saves a snapshot when the append crossed a multiple of N. Best
    /// effort: a failed snapshot only makes the next load replay more.
    async fn maybe_snapshot(&self, stream_id: &str, before: i64, after: i64, state: &A) {
        let Some(n) = self.snapshot_every else {
            return;
        };
        if before / n == after / n {
            return;
        }
        let snapshot = match serde_json::to_value(state) {
            Ok(value) => Snapshot {
                stream_id: stream_id.to_owned(),
                version: after,
                state: value,
            },
            Err(e) => {
                tracing::warn!(stream_id, error = %e, "cannot serialize a snapshot");
                return;
            }
        };
        if let Err(e) = self.store.save_snapshot(snapshot).await {
            tracing::warn!(stream_id, error = %e, "cannot save a snapshot");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;
    use mortar_eventstore::{Appended, EventSource, PendingMessage, RecordedEvent};
    use serde::{Deserialize, Serialize};
    use tokio::sync::watch;

    use super::*;
    use crate::DomainEvent;

    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Counter {
        total: i64,
    }

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(tag = "type", content = "data")]
    enum Ev {
        Added { n: i64 },
    }

    impl DomainEvent for Ev {}

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    struct Never;

    impl Aggregate for Counter {
        const TYPE: &'static str = "counter";
        type Command = i64;
        type Event = Ev;
        type Error = Never;
        fn decide(&self, n: &i64) -> Result<Vec<Ev>, Never> {
            Ok(vec![Ev::Added { n: *n }])
        }
        fn apply(&mut self, Ev::Added { n }: &Ev) {
            self.total += n;
        }
    }

    /// A store whose first `failures` appends fail with `error` and
    /// write nothing.
    struct Flaky {
        inner: Arc<dyn EventStore>,
        failures: AtomicU32,
        error: fn() -> StoreError,
    }

    #[async_trait]
    impl EventSource for Flaky {
        async fn read_all(
            &self,
            after: i64,
            limit: usize,
        ) -> Result<Vec<RecordedEvent>, StoreError> {
            self.inner.read_all(after, limit).await
        }
        async fn head(&self) -> Result<i64, StoreError> {
            self.inner.head().await
        }
    }

    #[async_trait]
    impl EventStore for Flaky {
        async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError> {
            let left = self.failures.load(Ordering::SeqCst);
            if left > 0 {
                self.failures.store(left - 1, Ordering::SeqCst);
                return Err((self.error)());
            }
            self.inner.append(request).await
        }
        async fn read_stream(
            &self,
            id: &str,
            after: i64,
        ) -> Result<Vec<RecordedEvent>, StoreError> {
            self.inner.read_stream(id, after).await
        }
        async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
            self.inner.save_snapshot(snapshot).await
        }
        async fn load_snapshot(&self, id: &str) -> Result<Option<Snapshot>, StoreError> {
            self.inner.load_snapshot(id).await
        }
        async fn outbox_pending(&self, limit: usize) -> Result<Vec<PendingMessage>, StoreError> {
            self.inner.outbox_pending(limit).await
        }
        async fn outbox_mark_sent(&self, ids: &[i64]) -> Result<(), StoreError> {
            self.inner.outbox_mark_sent(ids).await
        }
        fn watch_head(&self) -> watch::Receiver<i64> {
            self.inner.watch_head()
        }
        fn backend(&self) -> &'static str {
            "flaky"
        }
    }

    async fn handler(
        dir: &std::path::Path,
        failures: u32,
        error: fn() -> StoreError,
    ) -> CommandHandler<Counter> {
        let url = format!("sqlite://{}", dir.join("store.db").display());
        let inner = mortar_eventstore::open(&url).await.unwrap();
        CommandHandler::new(Arc::new(Flaky {
            inner,
            failures: AtomicU32::new(failures),
            error,
        }))
        .max_attempts(3)
    }

    #[tokio::test]
    async fn an_append_known_not_committed_is_tried_again_and_lands_once() {
        let dir = tempfile::tempdir().unwrap();
        let h = handler(dir.path(), 2, || StoreError::NotCommitted("dropped".into())).await;
        let done = h.execute("c", &5, &Metadata::default()).await.unwrap();
        assert_eq!((done.state.total, done.version, done.retries), (5, 1, 2));
        let (state, version) = h.load("c").await.unwrap();
        assert_eq!((state.total, version), (5, 1), "applied exactly once");
    }

    #[tokio::test]
    async fn not_committed_past_the_attempts_and_an_unknown_outcome_are_returned() {
        let dir = tempfile::tempdir().unwrap();
        let h = handler(dir.path(), 3, || StoreError::NotCommitted("dropped".into())).await;
        let err = h.execute("c", &5, &Metadata::default()).await.unwrap_err();
        assert!(
            matches!(err, CommandError::Store(StoreError::NotCommitted(_))),
            "{err}"
        );
        let h = handler(dir.path(), 1, || StoreError::OutcomeUnknown("lost".into())).await;
        let err = h.execute("d", &5, &Metadata::default()).await.unwrap_err();
        assert!(
            matches!(err, CommandError::Store(StoreError::OutcomeUnknown(_))),
            "{err}"
        );
    }
}
