//! A read store in its own PostgreSQL schema.

use async_trait::async_trait;
use bytes::BytesMut;
use mortar_eventstore::{PgConn, PgExclusive, PgSession, PgTarget, is_connection_error};
use tokio::sync::Mutex;
use tokio_postgres::Row;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use super::{
    ADVANCE_CHECKPOINT, BOOKKEEPING, Checkpoint, ENSURE_CHECKPOINT, INBOX_CLEAR, INBOX_INSERT,
    RAISE_CHECKPOINT, RESET_CHECKPOINT, ReadStore, ReadStoreError, now_ms,
};
use crate::{Sql, SqlValue};

/// A read store in a PostgreSQL schema: one session for transactions, one
/// for queries (so the read API never waits behind a projection batch).
/// Both reconnect after a drop; statements are prepared once per session
/// (projections run the same few over and over) and pipelined.
pub struct PostgresReadStore {
    writer: Mutex<PgExclusive>,
    reader: PgSession,
}

impl std::fmt::Debug for PostgresReadStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresReadStore").finish_non_exhaustive()
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

/// Binds portable values to whatever type the server inferred for the
/// placeholder (an `Int` can fill an INT4 column, a `Null` anything).
impl ToSql for SqlValue {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            SqlValue::Null => Ok(IsNull::Yes),
            SqlValue::Int(v) => match *ty {
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::FLOAT8 => (*v as f64).to_sql(ty, out),
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => v.to_string().to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            SqlValue::Real(v) => match *ty {
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            SqlValue::Text(s) => s.as_str().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn refs(params: &[SqlValue]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

fn column(row: &Row, i: usize) -> Result<SqlValue, tokio_postgres::Error> {
    let ty = row.columns()[i].type_().clone();
    Ok(match ty {
        Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map(i64::from).into(),
        Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map(i64::from).into(),
        Type::INT8 => row.try_get::<_, Option<i64>>(i)?.into(),
        Type::FLOAT4 => row.try_get::<_, Option<f32>>(i)?.map(f64::from).into(),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.into(),
        Type::BOOL => row.try_get::<_, Option<bool>>(i)?.map(i64::from).into(),
        _ => row.try_get::<_, Option<String>>(i)?.into(),
    })
}

/// Runs `statements` in order, pipelined: all are sent before the first
/// answer is awaited, so a projection batch of N statements costs one round
/// trip, not N. Returns each statement's row count, or the first error.
async fn pipeline(
    conn: &PgConn,
    statements: &[(&str, &[SqlValue])],
) -> Result<Vec<u64>, tokio_postgres::Error> {
    let mut prepared = Vec::with_capacity(statements.len());
    for (sql, _) in statements {
        prepared.push(conn.statement(sql).await?);
    }
    let client = conn.client();
    let params: Vec<Vec<&(dyn ToSql + Sync)>> =
        statements.iter().map(|(_, params)| refs(params)).collect();
    let results = futures::future::join_all(
        prepared
            .iter()
            .zip(&params)
            .map(|(statement, params)| client.execute(statement, params)),
    )
    .await;
    results.into_iter().collect()
}

/// A transaction on the writer session in two round trips: `BEGIN` and
/// every statement pipelined, then `COMMIT` — or `ROLLBACK` when a statement
/// failed or `keep` (given each statement's row count) says no. Returns
/// whether it committed.
async fn transaction(
    writer: &mut PgExclusive,
    statements: &[(&str, &[SqlValue])],
    keep: impl FnOnce(&[u64]) -> bool,
) -> Result<bool, ReadStoreError> {
    let conn = writer.get().await?;
    let (begun, done) = futures::join!(
        conn.client().batch_execute("BEGIN"),
        pipeline(conn, statements)
    );
    let result = match (begun, done) {
        (Ok(()), Ok(counts)) if keep(&counts) => {
            conn.client().batch_execute("COMMIT").await.map(|()| true)
        }
        (Ok(()), Ok(_)) => conn
            .client()
            .batch_execute("ROLLBACK")
            .await
            .map(|()| false),
        (Err(e), _) | (_, Err(e)) => {
            if !is_connection_error(&e) && conn.client().batch_execute("ROLLBACK").await.is_err() {
                writer.discard(&"the session could not roll back");
            }
            Err(e)
        }
    };
    result.map_err(|e| {
        writer.check_postgres(&e);
        ReadStoreError::Postgres(e)
    })
}

impl PostgresReadStore {
    /// Connects, creating the schema and the bookkeeping tables.
    pub async fn connect(
        conninfo: &str,
        schema: &str,
    ) -> Result<PostgresReadStore, ReadStoreError> {
        let target = PgTarget::new(conninfo, schema, "read-writer")?;
        let mut writer = PgExclusive::connect(target.clone()).await?;
        mortar_eventstore::migrate_schema(writer.get().await?.client_mut(), schema, BOOKKEEPING)
            .await?;
        let reader = PgSession::connect(target.with_role("read-reader")).await?;
        Ok(PostgresReadStore {
            writer: Mutex::new(writer),
            reader,
        })
    }

    /// Runs one statement on the writer session, outside a transaction.
    async fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64, ReadStoreError> {
        let mut writer = self.writer.lock().await;
        let conn = writer.get().await?;
        let result = async {
            let statement = conn.statement(sql).await?;
            conn.client().execute(&statement, &refs(params)).await
        }
        .await;
        result.map_err(|e| {
            writer.check_postgres(&e);
            ReadStoreError::Postgres(e)
        })
    }

    /// Runs a query on the reader session (once more on a fresh session if
    /// the first one turns out to have dropped).
    async fn rows(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, ReadStoreError> {
        Ok(self.reader.query(sql, &refs(params)).await?)
    }
}

#[async_trait]
impl ReadStore for PostgresReadStore {
    async fn migrate(&self, ddl: &str) -> Result<(), ReadStoreError> {
        let mut writer = self.writer.lock().await;
        let conn = writer.get().await?;
        let result = conn.client().batch_execute(ddl).await;
        result.map_err(|e| {
            writer.check_postgres(&e);
            ReadStoreError::Postgres(e)
        })
    }

    async fn ensure_checkpoint(&self, name: &str) -> Result<(), ReadStoreError> {
        self.execute(ENSURE_CHECKPOINT, &[name.into(), now_ms().into()])
            .await?;
        Ok(())
    }

    async fn commit_projection(
        &self,
        name: &str,
        from: i64,
        to: i64,
        statements: Vec<Sql>,
    ) -> Result<(), ReadStoreError> {
        let advance = [to.into(), now_ms().into(), name.into(), from.into()];
        let mut all: Vec<(&str, &[SqlValue])> = Vec::with_capacity(statements.len() + 1);
        all.push((ADVANCE_CHECKPOINT, &advance));
        all.extend(
            statements
                .iter()
                .map(|s| (s.sql.as_str(), s.params.as_slice())),
        );
        let mut writer = self.writer.lock().await;
        let moved = transaction(&mut writer, &all, |counts| counts.first() == Some(&1)).await?;
        if !moved {
            return Err(ReadStoreError::CheckpointMoved {
                name: name.to_owned(),
                expected: from,
            });
        }
        Ok(())
    }

    async fn once(
        &self,
        consumer: &str,
        message_id: &str,
        position: Option<i64>,
        statements: Vec<Sql>,
    ) -> Result<bool, ReadStoreError> {
        let now = now_ms();
        let inbox = [consumer.into(), message_id.into(), now.into()];
        let raise = position.map(|p| [consumer.into(), p.into(), now.into()]);
        let mut all: Vec<(&str, &[SqlValue])> = Vec::with_capacity(statements.len() + 2);
        all.push((INBOX_INSERT, &inbox));
        all.extend(
            statements
                .iter()
                .map(|s| (s.sql.as_str(), s.params.as_slice())),
        );
        if let Some(raise) = &raise {
            all.push((RAISE_CHECKPOINT, raise));
        }
        let mut writer = self.writer.lock().await;
        // A message seen before inserts no inbox row: roll its effects back.
        transaction(&mut writer, &all, |counts| counts.first() == Some(&1)).await
    }

    async fn reset(&self, name: &str, statements: Vec<Sql>) -> Result<(), ReadStoreError> {
        let reset = [name.into(), now_ms().into()];
        let clear = [name.into()];
        let mut all: Vec<(&str, &[SqlValue])> = Vec::with_capacity(statements.len() + 2);
        all.extend(
            statements
                .iter()
                .map(|s| (s.sql.as_str(), s.params.as_slice())),
        );
        all.push((RESET_CHECKPOINT, &reset));
        all.push((INBOX_CLEAR, &clear));
        let mut writer = self.writer.lock().await;
        transaction(&mut writer, &all, |_| true).await?;
        Ok(())
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, ReadStoreError> {
        let rows = self
            .rows(
                "SELECT name, position, updated_at_ms FROM mortar_checkpoints ORDER BY name",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Checkpoint {
                    name: r.try_get(0)?,
                    position: r.try_get(1)?,
                    updated_at_ms: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn query(
        &self,
        sql: &str,
        params: Vec<SqlValue>,
    ) -> Result<Vec<Vec<SqlValue>>, ReadStoreError> {
        let rows = self.rows(sql, &params).await?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| column(row, i).map_err(ReadStoreError::from))
                    .collect()
            })
            .collect()
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}
