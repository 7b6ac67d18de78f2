//! The replay check: rebuild a projection from its events into a fresh read
//! store and compare it row for row with an existing read model (e.g. one
//! restored from a backup). A read model that disagrees with its events —
//! edited by hand, corrupted, or written by a buggy projection version — is
//! caught, naming the table and the rows.
//!
//! Only the events the existing read model had applied are replayed, so a
//! read model that was merely behind its event store (a backup copies read
//! stores before event stores) compares equal:
//! - a projection fed through the [`Inbox`](crate::Inbox) replays exactly
//!   the events whose ids its inbox holds (handlers may apply them out of
//!   order, so its checkpoint is only the highest position seen);
//! - a projection run by a [`ProjectionRunner`](crate::ProjectionRunner)
//!   replays every event up to its checkpoint.

use std::collections::BTreeSet;

use mortar_eventstore::{EventSource, Upcasters};
use serde::{Deserialize, Serialize};

use crate::compare::{self, TableComparison};
use crate::projection::{Projection, ProjectionError};
use crate::readstore::ReadStore;
use crate::{Sql, SqlValue};

/// Events read from the source per batch.
const BATCH: usize = 1000;

/// How a projection's applied events were recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplayBasis {
    /// Every event up to the read model's checkpoint.
    Checkpoint,
    /// The events whose ids are in the read model's inbox.
    Inbox,
}

/// The outcome of one projection's replay check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayCheck {
    /// The projection.
    pub projection: String,
    /// Which events were replayed.
    pub basis: ReplayBasis,
    /// The read model's checkpoint: no event after it was replayed.
    pub checkpoint: i64,
    /// Events replayed into the fresh read store.
    pub replayed: u64,
    /// Each of the projection's tables, compared.
    pub tables: Vec<TableComparison>,
    /// Problems that are not about rows: events the read model applied that
    /// the source does not have, a checkpoint past the source's head.
    pub problems: Vec<String>,
}

impl ReplayCheck {
    /// Whether the read model equals its replay.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.tables.iter().all(TableComparison::equal)
    }
}

/// Rebuilds `projection` from `source` into `fresh` (an empty read store)
/// from the events `existing` had applied, and compares every table the
/// projection creates. `existing` is only read.
pub async fn replay_check(
    source: &dyn EventSource,
    existing: &dyn ReadStore,
    fresh: &dyn ReadStore,
    projection: &dyn Projection,
    upcasters: &Upcasters,
) -> Result<ReplayCheck, ProjectionError> {
    let name = projection.name();
    let checkpoint = existing.checkpoint(name).await?;
    let inbox: BTreeSet<String> = existing
        .query(
            "SELECT message_id FROM mortar_inbox WHERE consumer = $1",
            vec![SqlValue::from(name)],
        )
        .await?
        .into_iter()
        .filter_map(|row| row.into_iter().next())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let basis = if inbox.is_empty() {
        ReplayBasis::Checkpoint
    } else {
        ReplayBasis::Inbox
    };
    let mut problems = Vec::new();
    let head = source.head().await?;
    if checkpoint > head {
        problems.push(format!(
            "the read model's checkpoint {checkpoint} is past the event store's head {head}"
        ));
    }

    let before: BTreeSet<String> = compare::tables(fresh).await?.into_iter().collect();
    fresh.migrate(projection.schema()).await?;
    fresh.ensure_checkpoint(name).await?;
    let tables: Vec<String> = compare::tables(fresh)
        .await?
        .into_iter()
        .filter(|t| !before.contains(t))
        .collect();

    let mut seen = BTreeSet::new();
    let mut replayed = 0u64;
    let mut committed = fresh.checkpoint(name).await?;
    let mut after = 0;
    while after < checkpoint {
        let events = source.read_all(after, BATCH).await?;
        let Some(last) = events.last().map(|e| e.position) else {
            break;
        };
        let mut statements: Vec<Sql> = Vec::new();
        let mut upto = committed;
        for event in events.into_iter().filter(|e| e.position <= checkpoint) {
            let id = event.event_id();
            if basis == ReplayBasis::Inbox && !inbox.contains(&id) {
                continue;
            }
            seen.insert(id);
            let event = upcasters.upcast(event)?;
            let sql = projection
                .handle(&event)
                .map_err(|problem| ProjectionError::Handler {
                    name: name.to_owned(),
                    position: event.position,
                    problem,
                })?;
            statements.extend(sql);
            upto = event.position;
            replayed += 1;
        }
        if upto > committed {
            fresh
                .commit_projection(name, committed, upto, statements)
                .await?;
            committed = upto;
        }
        after = last;
    }
    if basis == ReplayBasis::Inbox {
        let unknown: Vec<&String> = inbox.difference(&seen).collect();
        if let Some(first) = unknown.first() {
            problems.push(format!(
                "the read model applied {} event(s) the event store does not have up to position {checkpoint}, e.g. {first}",
                unknown.len()
            ));
        }
    }

    let mut compared = Vec::new();
    for table in &tables {
        compared.push(
            compare::compare_table(existing, fresh, table, ("the read model", "replayed")).await?,
        );
    }
    Ok(ReplayCheck {
        projection: name.to_owned(),
        basis,
        checkpoint,
        replayed,
        tables: compared,
        problems,
    })
}

/// The environment variable that puts a service built on `mortar-sdk` into
/// replay-check mode: instead of serving, it runs [`replay_check`] for each
/// projection it declares, prints one [`ReplayReport`] as JSON on stdout
/// and exits (0: all equal, 1: differences, other: could not check). Its
/// value is a [`ReplaySpec`] as JSON.
pub const REPLAY_CHECK_ENV: &str = "MORTAR_REPLAY_CHECK";

/// What a replay check runs against (set by `mortar backup verify`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaySpec {
    /// The existing read model's store URL (e.g. in a restored backup).
    pub read_store: String,
    /// An empty read store to rebuild into.
    pub fresh_store: String,
    /// Each service's event store URL, by service name: a projection reads
    /// the one of the service whose events feed it.
    pub event_stores: std::collections::BTreeMap<String, String>,
}

/// What a service in replay-check mode prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayReport {
    /// The service.
    pub service: String,
    /// One check per declared projection found in the read store.
    pub projections: Vec<ReplayCheck>,
    /// Declared projections the read store has no checkpoint for (kept
    /// in another read store, or never started).
    pub skipped: Vec<String>,
}

impl ReplayReport {
    /// Whether every projection equals its replay.
    pub fn ok(&self) -> bool {
        self.projections.iter().all(ReplayCheck::ok)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use mortar_eventstore::{
        AppendRequest, EventStore, ExpectedVersion, NewEvent, RecordedEvent, SqliteStore,
    };

    use super::*;
    use crate::{Inbox, ProjectionRunner, SqliteReadStore};

    /// One row per stream: how many events it had.
    struct Counts;

    impl Projection for Counts {
        fn name(&self) -> &str {
            "counts"
        }
        fn schema(&self) -> &str {
            "CREATE TABLE IF NOT EXISTS counts (stream TEXT PRIMARY KEY, n BIGINT NOT NULL)"
        }
        fn clear(&self) -> Vec<Sql> {
            vec![Sql::new("DELETE FROM counts")]
        }
        fn handle(&self, event: &RecordedEvent) -> Result<Vec<Sql>, String> {
            Ok(vec![
                Sql::new(
                    "INSERT INTO counts (stream, n) VALUES ($1, 1)
                     ON CONFLICT (stream) DO UPDATE SET n = counts.n + 1",
                )
                .bind(event.stream_id.as_str()),
            ])
        }
    }

    async fn events(dir: &std::path::Path) -> Arc<SqliteStore> {
        let store = Arc::new(SqliteStore::open(&dir.join("events.db")).await.unwrap());
        for stream in ["a", "b", "a"] {
            store
                .append(AppendRequest::new(
                    stream,
                    ExpectedVersion::Any,
                    vec![NewEvent::new("Counted", serde_json::json!({}))],
                ))
                .await
                .unwrap();
        }
        store
    }

    #[tokio::test]
    async fn a_runner_fed_read_model_equals_its_replay_until_a_row_is_changed() {
        let dir = tempfile::tempdir().unwrap();
        let source = events(dir.path()).await;
        let read = Arc::new(
            SqliteReadStore::open(&dir.path().join("read.db"))
                .await
                .unwrap(),
        );
        let runner = ProjectionRunner::new(source.clone(), read.clone(), Arc::new(Counts));
        runner.init().await.unwrap();
        assert_eq!(runner.catch_up().await.unwrap(), 3);
        // An event after the read model's checkpoint is not replayed.
        source
            .append(AppendRequest::new(
                "c",
                ExpectedVersion::Any,
                vec![NewEvent::new("Counted", serde_json::json!({}))],
            ))
            .await
            .unwrap();

        let fresh = SqliteReadStore::open(&dir.path().join("fresh1.db"))
            .await
            .unwrap();
        let check = replay_check(&*source, &*read, &fresh, &Counts, &Upcasters::new())
            .await
            .unwrap();
        assert!(check.ok(), "{check:?}");
        assert_eq!(
            (check.basis, check.checkpoint, check.replayed),
            (ReplayBasis::Checkpoint, 3, 3)
        );

        read.migrate("UPDATE counts SET n = 5 WHERE stream = 'b'")
            .await
            .unwrap();
        let fresh = SqliteReadStore::open(&dir.path().join("fresh2.db"))
            .await
            .unwrap();
        let check = replay_check(&*source, &*read, &fresh, &Counts, &Upcasters::new())
            .await
            .unwrap();
        assert!(!check.ok());
        assert_eq!(
            check.tables[0].differences,
            vec!["stream='b': n is 5 in the read model, 1 replayed".to_owned()]
        );
    }

    #[tokio::test]
    async fn an_inbox_fed_read_model_replays_only_the_events_it_applied() {
        let dir = tempfile::tempdir().unwrap();
        let source = events(dir.path()).await;
        let read: Arc<SqliteReadStore> = Arc::new(
            SqliteReadStore::open(&dir.path().join("read.db"))
                .await
                .unwrap(),
        );
        read.migrate(Counts.schema()).await.unwrap();
        let inbox = Inbox::new(read.clone(), "counts");
        // Applied out of order, and the second event of all never arrived.
        let all = source.read_all(0, 10).await.unwrap();
        inbox.project(&Counts, all[2].clone()).await.unwrap();
        inbox.project(&Counts, all[0].clone()).await.unwrap();

        let fresh = SqliteReadStore::open(&dir.path().join("fresh.db"))
            .await
            .unwrap();
        let check = replay_check(&*source, &*read, &fresh, &Counts, &Upcasters::new())
            .await
            .unwrap();
        assert!(check.ok(), "{check:?}");
        assert_eq!(
            (check.basis, check.checkpoint, check.replayed),
            (ReplayBasis::Inbox, 3, 2)
        );
    }
}
