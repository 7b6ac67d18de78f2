//! A read store in its own SQLite file.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, Transaction, params_from_iter};

use super::{
    ADVANCE_CHECKPOINT, BOOKKEEPING, Checkpoint, ENSURE_CHECKPOINT, INBOX_CLEAR, INBOX_INSERT,
    RAISE_CHECKPOINT, RESET_CHECKPOINT, ReadStore, ReadStoreError, now_ms,
};
use crate::sql::to_sqlite;
use crate::{Sql, SqlValue};

/// A read store in one SQLite file (WAL, `synchronous=FULL`: an inbox entry
/// must be durable before its message is acknowledged).
#[derive(Clone)]
pub struct SqliteReadStore {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteReadStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteReadStore").finish_non_exhaustive()
    }
}

fn to_value(v: &SqlValue) -> Value {
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Int(i) => Value::Integer(*i),
        SqlValue::Real(r) => Value::Real(*r),
        SqlValue::Text(s) => Value::Text(s.clone()),
    }
}

fn from_value(v: Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Integer(i) => SqlValue::Int(i),
        Value::Real(r) => SqlValue::Real(r),
        Value::Text(s) => SqlValue::Text(s),
        Value::Blob(b) => SqlValue::Text(String::from_utf8_lossy(&b).into_owned()),
    }
}

fn exec(tx: &Transaction<'_>, sql: &str, params: &[SqlValue]) -> rusqlite::Result<usize> {
    tx.prepare_cached(&to_sqlite(sql))?
        .execute(params_from_iter(params.iter().map(to_value)))
}

fn run_all(tx: &Transaction<'_>, statements: &[Sql]) -> rusqlite::Result<()> {
    for s in statements {
        exec(tx, &s.sql, &s.params)?;
    }
    Ok(())
}

impl SqliteReadStore {
    /// Opens (creating when missing) the file at `path`.
    pub async fn open(path: &Path) -> Result<SqliteReadStore, ReadStoreError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)?;
            }
            let conn = Connection::open(&path)?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.execute_batch(BOOKKEEPING)?;
            Ok(SqliteReadStore {
                conn: Arc::new(Mutex::new(conn)),
            })
        })
        .await
        .map_err(|_| ReadStoreError::Closed)?
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, ReadStoreError> + Send + 'static,
    ) -> Result<T, ReadStoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|_| ReadStoreError::Closed)?
    }
}

#[async_trait]
impl ReadStore for SqliteReadStore {
    async fn migrate(&self, ddl: &str) -> Result<(), ReadStoreError> {
        let ddl = ddl.to_owned();
        self.with(move |conn| Ok(conn.execute_batch(&ddl)?)).await
    }

    async fn ensure_checkpoint(&self, name: &str) -> Result<(), ReadStoreError> {
        let name = name.to_owned();
        self.with(move |conn| {
            conn.execute(
                &to_sqlite(ENSURE_CHECKPOINT),
                rusqlite::params![name, now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    async fn commit_projection(
        &self,
        name: &str,
        from: i64,
        to: i64,
        statements: Vec<Sql>,
    ) -> Result<(), ReadStoreError> {
        let name = name.to_owned();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let moved = exec(
                &tx,
                ADVANCE_CHECKPOINT,
                &[to.into(), now_ms().into(), name.clone().into(), from.into()],
            )?;
            if moved != 1 {
                return Err(ReadStoreError::CheckpointMoved {
                    name,
                    expected: from,
                });
            }
            run_all(&tx, &statements)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn once(
        &self,
        consumer: &str,
        message_id: &str,
        position: Option<i64>,
        statements: Vec<Sql>,
    ) -> Result<bool, ReadStoreError> {
        let (consumer, message_id) = (consumer.to_owned(), message_id.to_owned());
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let now = now_ms();
            let fresh = exec(
                &tx,
                INBOX_INSERT,
                &[consumer.clone().into(), message_id.into(), now.into()],
            )?;
            if fresh == 0 {
                return Ok(false);
            }
            run_all(&tx, &statements)?;
            if let Some(position) = position {
                exec(
                    &tx,
                    RAISE_CHECKPOINT,
                    &[consumer.into(), position.into(), now.into()],
                )?;
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn reset(&self, name: &str, statements: Vec<Sql>) -> Result<(), ReadStoreError> {
        let name = name.to_owned();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            run_all(&tx, &statements)?;
            exec(
                &tx,
                RESET_CHECKPOINT,
                &[name.clone().into(), now_ms().into()],
            )?;
            exec(&tx, INBOX_CLEAR, &[name.into()])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, ReadStoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, position, updated_at_ms FROM mortar_checkpoints ORDER BY name",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(Checkpoint {
                    name: r.get(0)?,
                    position: r.get(1)?,
                    updated_at_ms: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn query(
        &self,
        sql: &str,
        params: Vec<SqlValue>,
    ) -> Result<Vec<Vec<SqlValue>>, ReadStoreError> {
        let sql = to_sqlite(sql);
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let columns = stmt.column_count();
            let rows = stmt.query_map(params_from_iter(params.iter().map(to_value)), |r| {
                (0..columns)
                    .map(|i| r.get::<_, Value>(i).map(from_value))
                    .collect::<Result<Vec<_>, _>>()
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}
