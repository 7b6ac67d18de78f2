//! A read store in its own PostgreSQL schema.

use async_trait::async_trait;
use bytes::BytesMut;
use std::collections::HashMap;
use tokio::sync::Mutex;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Row, Statement, Transaction};

use super::{
    ADVANCE_CHECKPOINT, BOOKKEEPING, Checkpoint, ENSURE_CHECKPOINT, INBOX_CLEAR, INBOX_INSERT,
    RAISE_CHECKPOINT, RESET_CHECKPOINT, ReadStore, ReadStoreError, now_ms,
};
use crate::{Sql, SqlValue};

/// A read store in a PostgreSQL schema: one session for transactions, one
/// for queries (so the read API never waits behind a projection batch).
pub struct PostgresReadStore {
    writer: Mutex<Writer>,
    reader: Client,
}

/// The transaction session and its prepared statements (projections run the
/// same few statements over and over).
struct Writer {
    client: Client,
    prepared: HashMap<String, Statement>,
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

async fn exec(
    tx: &Transaction<'_>,
    prepared: &mut HashMap<String, Statement>,
    sql: &str,
    params: &[SqlValue],
) -> Result<u64, tokio_postgres::Error> {
    let stmt = match prepared.get(sql) {
        Some(stmt) => stmt.clone(),
        None => {
            let stmt = tx.prepare(sql).await?;
            prepared.insert(sql.to_owned(), stmt.clone());
            stmt
        }
    };
    tx.execute(&stmt, &refs(params)).await
}

async fn run_all(
    tx: &Transaction<'_>,
    prepared: &mut HashMap<String, Statement>,
    statements: &[Sql],
) -> Result<(), tokio_postgres::Error> {
    for s in statements {
        exec(tx, prepared, &s.sql, &s.params).await?;
    }
    Ok(())
}

impl PostgresReadStore {
    /// Connects, creating the schema and the bookkeeping tables.
    pub async fn connect(
        conninfo: &str,
        schema: &str,
    ) -> Result<PostgresReadStore, ReadStoreError> {
        let mut writer = mortar_eventstore::connect_session(conninfo, schema).await?;
        mortar_eventstore::migrate_schema(&mut writer, schema, BOOKKEEPING).await?;
        let reader = mortar_eventstore::connect_session(conninfo, schema).await?;
        Ok(PostgresReadStore {
            writer: Mutex::new(Writer {
                client: writer,
                prepared: HashMap::new(),
            }),
            reader,
        })
    }
}

#[async_trait]
impl ReadStore for PostgresReadStore {
    async fn migrate(&self, ddl: &str) -> Result<(), ReadStoreError> {
        Ok(self.writer.lock().await.client.batch_execute(ddl).await?)
    }

    async fn ensure_checkpoint(&self, name: &str) -> Result<(), ReadStoreError> {
        self.writer
            .lock()
            .await
            .client
            .execute(ENSURE_CHECKPOINT, &[&name, &now_ms()])
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
        let mut writer = self.writer.lock().await;
        let Writer { client, prepared } = &mut *writer;
        let tx = client.transaction().await?;
        let moved = exec(
            &tx,
            prepared,
            ADVANCE_CHECKPOINT,
            &[to.into(), now_ms().into(), name.into(), from.into()],
        )
        .await?;
        if moved != 1 {
            return Err(ReadStoreError::CheckpointMoved {
                name: name.to_owned(),
                expected: from,
            });
        }
        run_all(&tx, prepared, &statements).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn once(
        &self,
        consumer: &str,
        message_id: &str,
        position: Option<i64>,
        statements: Vec<Sql>,
    ) -> Result<bool, ReadStoreError> {
        let mut writer = self.writer.lock().await;
        let Writer { client, prepared } = &mut *writer;
        let tx = client.transaction().await?;
        let now = now_ms();
        let fresh = exec(
            &tx,
            prepared,
            INBOX_INSERT,
            &[consumer.into(), message_id.into(), now.into()],
        )
        .await?;
        if fresh == 0 {
            return Ok(false);
        }
        run_all(&tx, prepared, &statements).await?;
        if let Some(position) = position {
            exec(
                &tx,
                prepared,
                RAISE_CHECKPOINT,
                &[consumer.into(), position.into(), now.into()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn reset(&self, name: &str, statements: Vec<Sql>) -> Result<(), ReadStoreError> {
        let mut writer = self.writer.lock().await;
        let Writer { client, prepared } = &mut *writer;
        let tx = client.transaction().await?;
        run_all(&tx, prepared, &statements).await?;
        exec(
            &tx,
            prepared,
            RESET_CHECKPOINT,
            &[name.into(), now_ms().into()],
        )
        .await?;
        exec(&tx, prepared, INBOX_CLEAR, &[name.into()]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, ReadStoreError> {
        let rows = self
            .reader
            .query(
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
        let rows = self.reader.query(sql, &refs(&params)).await?;
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
