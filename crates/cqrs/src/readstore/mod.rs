//! The read side's own database: a separate SQLite file or PostgreSQL
//! schema, never the event store's. Projections and inbox handlers change it
//! only through [`ReadStore`], which commits their statements together with
//! a checkpoint or an inbox row — that pairing is the once-only guarantee.

mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use mortar_eventstore::StoreUrl;
use serde::Serialize;

use crate::{Sql, SqlValue};

pub use postgres::PostgresReadStore;
pub use sqlite::SqliteReadStore;

/// Tables every read store has: projection checkpoints and the inbox.
pub(crate) const BOOKKEEPING: &str = "
CREATE TABLE IF NOT EXISTS mortar_checkpoints (
    name          TEXT PRIMARY KEY,
    position      BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS mortar_inbox (
    consumer       TEXT   NOT NULL,
    message_id     TEXT   NOT NULL,
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (consumer, message_id)
);
";

/// Whether `table` is one of the bookkeeping tables above, not a read model's.
pub(crate) fn is_bookkeeping(table: &str) -> bool {
    table == "mortar_checkpoints" || table == "mortar_inbox"
}

pub(crate) const ADVANCE_CHECKPOINT: &str = "UPDATE mortar_checkpoints SET position = $1, updated_at_ms = $2 WHERE name = $3 AND position = $4";
pub(crate) const ENSURE_CHECKPOINT: &str = "INSERT INTO mortar_checkpoints (name, position, updated_at_ms) VALUES ($1, 0, $2) ON CONFLICT (name) DO NOTHING";
pub(crate) const RAISE_CHECKPOINT: &str = "INSERT INTO mortar_checkpoints (name, position, updated_at_ms) VALUES ($1, $2, $3)
 ON CONFLICT (name) DO UPDATE SET
   position = CASE WHEN excluded.position > mortar_checkpoints.position THEN excluded.position ELSE mortar_checkpoints.position END,
   updated_at_ms = excluded.updated_at_ms";
pub(crate) const RESET_CHECKPOINT: &str =
    "INSERT INTO mortar_checkpoints (name, position, updated_at_ms) VALUES ($1, 0, $2)
 ON CONFLICT (name) DO UPDATE SET position = 0, updated_at_ms = excluded.updated_at_ms";
pub(crate) const INBOX_INSERT: &str = "INSERT INTO mortar_inbox (consumer, message_id, received_at_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
pub(crate) const INBOX_CLEAR: &str = "DELETE FROM mortar_inbox WHERE consumer = $1";

/// A read store failure.
#[derive(Debug, thiserror::Error)]
pub enum ReadStoreError {
    /// The URL cannot be used, or the database is unreachable.
    #[error(transparent)]
    Store(#[from] mortar_eventstore::StoreError),
    /// SQLite failed.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("PostgreSQL: {}", mortar_eventstore::describe_postgres_error(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// Another runner moved the checkpoint first: nothing was applied.
    #[error(
        "projection {name:?} is no longer at position {expected}; another runner got there first"
    )]
    CheckpointMoved {
        /// The projection.
        name: String,
        /// The position this runner started from.
        expected: i64,
    },
    /// A file system operation failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The database task stopped.
    #[error("the read store's database task stopped")]
    Closed,
}

/// A projection's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checkpoint {
    /// The projection (or inbox consumer).
    pub name: String,
    /// The position of the last event applied.
    pub position: i64,
    /// When it last moved, in milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
}

/// A read store; see the module docs.
#[async_trait]
pub trait ReadStore: Send + Sync + 'static {
    /// Runs idempotent DDL (`CREATE TABLE IF NOT EXISTS …`).
    async fn migrate(&self, ddl: &str) -> Result<(), ReadStoreError>;

    /// Makes sure projection `name` has a checkpoint (at 0 when new).
    async fn ensure_checkpoint(&self, name: &str) -> Result<(), ReadStoreError>;

    /// In one transaction: moves `name`'s checkpoint from `from` to `to`
    /// and runs `statements`. [`ReadStoreError::CheckpointMoved`] (and
    /// nothing applied) if the checkpoint is not at `from`.
    async fn commit_projection(
        &self,
        name: &str,
        from: i64,
        to: i64,
        statements: Vec<Sql>,
    ) -> Result<(), ReadStoreError>;

    /// In one transaction: records `message_id` in `consumer`'s inbox and
    /// runs `statements` — or does nothing and returns `false` when the
    /// message was seen before. With `position`, also raises `consumer`'s
    /// checkpoint to it (for lag reporting).
    async fn once(
        &self,
        consumer: &str,
        message_id: &str,
        position: Option<i64>,
        statements: Vec<Sql>,
    ) -> Result<bool, ReadStoreError>;

    /// In one transaction: runs `statements` (clearing the tables), sets
    /// `name`'s checkpoint to 0 and forgets its inbox entries.
    async fn reset(&self, name: &str, statements: Vec<Sql>) -> Result<(), ReadStoreError>;

    /// Every checkpoint.
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, ReadStoreError>;

    /// A query's rows.
    async fn query(
        &self,
        sql: &str,
        params: Vec<SqlValue>,
    ) -> Result<Vec<Vec<SqlValue>>, ReadStoreError>;

    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// `name`'s checkpoint (0 when it has none).
    async fn checkpoint(&self, name: &str) -> Result<i64, ReadStoreError> {
        Ok(self
            .checkpoints()
            .await?
            .into_iter()
            .find(|c| c.name == name)
            .map_or(0, |c| c.position))
    }
}

/// Opens the read store a URL names (`sqlite:///file` or
/// `postgres://…?schema=name`), creating its bookkeeping tables.
pub async fn open_read_store(url: &str) -> Result<Arc<dyn ReadStore>, ReadStoreError> {
    match StoreUrl::parse(url)? {
        StoreUrl::Sqlite(path) => Ok(Arc::new(SqliteReadStore::open(&path).await?)),
        StoreUrl::Postgres { conninfo, schema } => Ok(Arc::new(
            PostgresReadStore::connect(&conninfo, &schema).await?,
        )),
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
