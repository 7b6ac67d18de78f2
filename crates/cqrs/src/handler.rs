//! The command handler: load, decide, append with the loaded version, and
//! on a conflict reload and decide again (a bounded number of times).
//!
//! Why retry inside: a conflict means another command changed the aggregate
//! between our load and our append. Deciding again on the new state either
//! succeeds (the commands did not really clash) or returns the domain error
//! the rules give for the new state — never a lost update.

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
