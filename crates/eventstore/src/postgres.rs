//! The scale-out backend: PostgreSQL, each store in its own schema.
//!
//! Appends go through one writer task that group-commits like the SQLite
//! backend: every append queued at that moment shares one transaction and so
//! one WAL flush, with a handful of round trips per batch (versions are read
//! for all streams at once, events and outbox rows inserted with `UNNEST`).
//! Each transaction first takes a transaction-scoped advisory lock, so
//! writers — in this process or any other — commit one at a time and global
//! positions are assigned in commit order: a projection reading
//! `position > checkpoint` can never skip an event committed late.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::{Client, NoTls, Row};

use crate::batch::{Verdict, plan};
use crate::event::now_ms;
use crate::outbox::event_message;
use crate::{
    AppendRequest, Appended, EventSource, EventStore, OutboxMessage, PendingMessage, RecordedEvent,
    Snapshot, StoreError,
};

const MAX_BATCH: usize = 2048;
const READERS: usize = 3;
/// The advisory lock migrations serialize on, server-wide.
const MIGRATE_LOCK: i64 = 0x6d6f_7274_6173;

/// Takes the store's write lock: the first key names mortar's lock space,
/// the second the store (its schema, the session's `search_path`), so the
/// writers of one store commit one at a time while stores in other schemas
/// of the same server do not wait for each other. Two schemas whose names
/// hash alike merely share a lock.
const TAKE_WRITE_LOCK: &str =
    "SELECT pg_advisory_xact_lock(1836020340, hashtext(current_schema()))";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    position       BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    stream_id      TEXT    NOT NULL,
    version        BIGINT  NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INT     NOT NULL,
    payload        TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    recorded_at_ms BIGINT  NOT NULL,
    PRIMARY KEY (stream_id, version)
);
CREATE TABLE IF NOT EXISTS snapshots (
    stream_id TEXT PRIMARY KEY,
    version   BIGINT NOT NULL,
    state     TEXT   NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic         TEXT   NOT NULL,
    key           TEXT,
    headers       TEXT   NOT NULL,
    payload       BYTEA  NOT NULL,
    created_at_ms BIGINT NOT NULL,
    sent_at_ms    BIGINT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id) WHERE sent_at_ms IS NULL;
";

use crate::batch::{Reply, Write};

/// An event store in a PostgreSQL schema.
pub struct PostgresStore {
    writer: mpsc::UnboundedSender<Write>,
    readers: Vec<Client>,
    next_reader: AtomicUsize,
    head: watch::Receiver<i64>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

/// Connects one session with `search_path` set to `schema`.
pub async fn connect_session(conninfo: &str, schema: &str) -> Result<Client, StoreError> {
    let config: tokio_postgres::Config =
        conninfo
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::InvalidUrl {
                url: conninfo.to_owned(),
                problem: e.to_string(),
            })?;
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed");
        }
    });
    client
        .batch_execute(&format!("SET search_path TO \"{schema}\""))
        .await?;
    Ok(client)
}

/// Creates `schema` and runs `ddl` in it, serialized with any other process
/// doing the same (so concurrent starts do not trip over each other).
pub async fn migrate(client: &mut Client, schema: &str, ddl: &str) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
        .await?;
    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"; {ddl}"))
        .await?;
    tx.commit().await?;
    Ok(())
}

impl PostgresStore {
    /// Connects, creates the schema and tables when missing, starts the writer.
    pub async fn connect(conninfo: &str, schema: &str) -> Result<PostgresStore, StoreError> {
        let mut writer = connect_session(conninfo, schema).await?;
        migrate(&mut writer, schema, SCHEMA).await?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(connect_session(conninfo, schema).await?);
        }
        let head: i64 = writer
            .query_one("SELECT COALESCE(MAX(position), 0) FROM events", &[])
            .await?
            .get(0);
        let (head_tx, head_rx) = watch::channel(head);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer_loop(writer, rx, head_tx));
        Ok(PostgresStore {
            writer: tx,
            readers,
            next_reader: AtomicUsize::new(0),
            head: head_rx,
        })
    }

    fn reader(&self) -> &Client {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        &self.readers[i]
    }

    async fn write<T>(&self, make: impl FnOnce(Reply<T>) -> Write) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer.send(make(tx)).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

const EVENT_COLUMNS: &str =
    "position, stream_id, version, event_type, schema_version, payload, metadata, recorded_at_ms";

fn event_from_row(row: &Row) -> Result<RecordedEvent, StoreError> {
    Ok(RecordedEvent {
        position: row.try_get(0)?,
        stream_id: row.try_get(1)?,
        version: row.try_get(2)?,
        event_type: row.try_get(3)?,
        schema_version: row.try_get::<_, i32>(4)? as u32,
        payload: serde_json::from_str(row.try_get(5)?)?,
        metadata: serde_json::from_str(row.try_get(6)?)?,
        recorded_at_ms: row.try_get(7)?,
    })
}

#[async_trait]
impl EventSource for PostgresStore {
    async fn read_all(&self, after: i64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = self
            .reader()
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2"
                ),
                &[&after, &(limit as i64)],
            )
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn head(&self) -> Result<i64, StoreError> {
        Ok(self
            .reader()
            .query_one("SELECT COALESCE(MAX(position), 0) FROM events", &[])
            .await?
            .try_get(0)?)
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        self.write(|reply| Write::Append(request, reply)).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        after: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = self
            .reader()
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND version > $2 ORDER BY version"
                ),
                &[&stream_id, &after],
            )
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.write(|reply| Write::Snapshot(snapshot, reply)).await
    }

    async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError> {
        let row = self
            .reader()
            .query_opt(
                "SELECT version, state FROM snapshots WHERE stream_id = $1",
                &[&stream_id],
            )
            .await?;
        row.map(|row| {
            Ok(Snapshot {
                stream_id: stream_id.to_owned(),
                version: row.try_get(0)?,
                state: serde_json::from_str(row.try_get(1)?)?,
            })
        })
        .transpose()
    }

    async fn outbox_pending(&self, limit: usize) -> Result<Vec<PendingMessage>, StoreError> {
        let rows = self
            .reader()
            .query(
                "SELECT id, topic, key, headers, payload FROM outbox
                 WHERE sent_at_ms IS NULL ORDER BY id LIMIT $1",
                &[&(limit as i64)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(PendingMessage {
                    id: row.try_get(0)?,
                    message: OutboxMessage {
                        topic: row.try_get(1)?,
                        key: row.try_get(2)?,
                        headers: serde_json::from_str(row.try_get(3)?)?,
                        payload: row.try_get(4)?,
                    },
                })
            })
            .collect()
    }

    async fn outbox_mark_sent(&self, ids: &[i64]) -> Result<(), StoreError> {
        let ids = ids.to_vec();
        self.write(|reply| Write::MarkSent(ids, reply)).await
    }

    fn watch_head(&self) -> watch::Receiver<i64> {
        self.head.clone()
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}

async fn writer_loop(
    mut client: Client,
    mut rx: mpsc::UnboundedReceiver<Write>,
    head: watch::Sender<i64>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        match commit(&mut client, &batch).await {
            Ok(outcomes) => answer(batch, outcomes, &head),
            Err(e) if batch.len() == 1 => answer_error(batch, &e),
            Err(e) => {
                tracing::warn!(error = %e, writes = batch.len(), "group commit failed; retrying its writes one by one");
                for write in batch {
                    let single = vec![write];
                    match commit(&mut client, &single).await {
                        Ok(outcomes) => answer(single, outcomes, &head),
                        Err(e) => answer_error(single, &e),
                    }
                }
            }
        }
    }
}

fn answer(
    batch: Vec<Write>,
    outcomes: Vec<Option<Result<Appended, StoreError>>>,
    head: &watch::Sender<i64>,
) {
    let mut newest = None;
    for (write, outcome) in batch.into_iter().zip(outcomes) {
        match write {
            Write::Append(_, reply) => {
                let result = outcome.unwrap_or(Err(StoreError::Closed));
                if let Ok(appended) = &result {
                    newest = newest.max(Some(appended.position));
                }
                let _ = reply.send(result);
            }
            Write::Snapshot(_, reply) | Write::MarkSent(_, reply) => {
                let _ = reply.send(Ok(()));
            }
        }
    }
    if let Some(position) = newest {
        head.send_if_modified(|h| {
            let newer = position > *h;
            *h = (*h).max(position);
            newer
        });
    }
}

fn answer_error(batch: Vec<Write>, error: &StoreError) {
    let make = || StoreError::Invalid(format!("the write failed: {error}"));
    for write in batch {
        match write {
            Write::Append(_, reply) => {
                let _ = reply.send(Err(make()));
            }
            Write::Snapshot(_, reply) | Write::MarkSent(_, reply) => {
                let _ = reply.send(Err(make()));
            }
        }
    }
}

async fn commit(
    client: &mut Client,
    batch: &[Write],
) -> Result<Vec<Option<Result<Appended, StoreError>>>, StoreError> {
    let tx = client.transaction().await?;
    tx.execute(TAKE_WRITE_LOCK, &[]).await?;
    let appends: Vec<&AppendRequest> = batch
        .iter()
        .filter_map(|w| match w {
            Write::Append(request, _) => Some(request),
            _ => None,
        })
        .collect();
    let mut current = HashMap::new();
    if !appends.is_empty() {
        let mut streams: Vec<&str> = appends.iter().map(|a| a.stream_id.as_str()).collect();
        streams.sort_unstable();
        streams.dedup();
        for row in tx
            .query(
                "SELECT stream_id, MAX(version) FROM events WHERE stream_id = ANY($1) GROUP BY stream_id",
                &[&streams],
            )
            .await?
        {
            current.insert(row.try_get::<_, String>(0)?, row.try_get::<_, i64>(1)?);
        }
    }
    let verdicts = plan(&appends, &current);
    let now = now_ms();

    // Every accepted event, as columns for one INSERT … SELECT FROM UNNEST.
    let (mut streams, mut versions, mut types, mut schemas, mut payloads, mut metas) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let mut results: Vec<Option<Result<Appended, StoreError>>> = Vec::with_capacity(batch.len());
    let mut accepted: Vec<(usize, &AppendRequest, i64)> = Vec::new();
    let mut verdicts = verdicts.into_iter();
    for (i, write) in batch.iter().enumerate() {
        let Write::Append(request, _) = write else {
            results.push(None);
            continue;
        };
        match verdicts.next() {
            Some(Verdict::Accept { first_version }) => {
                let mut encoded = Vec::with_capacity(request.events.len());
                let mut failed = None;
                for event in &request.events {
                    match (
                        serde_json::to_string(&event.payload),
                        serde_json::to_string(&event.metadata),
                    ) {
                        (Ok(p), Ok(m)) => encoded.push((p, m)),
                        (Err(e), _) | (_, Err(e)) => failed = Some(e),
                    }
                }
                if let Some(e) = failed {
                    results.push(Some(Err(e.into())));
                    continue;
                }
                for (k, (event, (payload, meta))) in request.events.iter().zip(encoded).enumerate()
                {
                    streams.push(request.stream_id.as_str());
                    versions.push(first_version + k as i64);
                    types.push(event.event_type.as_str());
                    schemas.push(event.schema_version as i32);
                    payloads.push(payload);
                    metas.push(meta);
                }
                accepted.push((i, request, first_version));
                results.push(None);
            }
            Some(Verdict::Reject(e)) => results.push(Some(Err(e))),
            None => results.push(Some(Err(StoreError::Closed))),
        }
    }
    let mut positions: HashMap<(String, i64), i64> = HashMap::new();
    if !streams.is_empty() {
        let rows = tx
            .query(
                "INSERT INTO events (stream_id, version, event_type, schema_version, payload, metadata, recorded_at_ms)
                 SELECT s, v, t, sv, p, m, $7 FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::int4[], $5::text[], $6::text[])
                     WITH ORDINALITY AS u(s, v, t, sv, p, m, n)
                 ORDER BY n
                 RETURNING stream_id, version, position",
                &[&streams, &versions, &types, &schemas, &payloads, &metas, &now],
            )
            .await?;
        for row in rows {
            positions.insert((row.try_get(0)?, row.try_get(1)?), row.try_get(2)?);
        }
    }

    // Outbox rows: the event messages (now that positions are known) and extras.
    let mut outbox: Vec<OutboxMessage> = Vec::new();
    for (i, request, first_version) in &accepted {
        let mut last_position = 0;
        for (k, event) in request.events.iter().enumerate() {
            let version = first_version + k as i64;
            let position = positions
                .get(&(request.stream_id.clone(), version))
                .copied()
                .unwrap_or_default();
            last_position = position;
            if let Some(topic) = &request.publish_to {
                let recorded = RecordedEvent {
                    position,
                    stream_id: request.stream_id.clone(),
                    version,
                    event_type: event.event_type.clone(),
                    schema_version: event.schema_version,
                    payload: event.payload.clone(),
                    metadata: event.metadata.clone(),
                    recorded_at_ms: now,
                };
                outbox.push(event_message(topic, &recorded)?);
            }
        }
        outbox.extend(request.outbox.iter().cloned());
        results[*i] = Some(Ok(Appended {
            version: first_version + request.events.len() as i64 - 1,
            position: last_position,
        }));
    }
    if !outbox.is_empty() {
        let topics: Vec<&str> = outbox.iter().map(|m| m.topic.as_str()).collect();
        let keys: Vec<Option<&str>> = outbox.iter().map(|m| m.key.as_deref()).collect();
        let headers: Vec<String> = outbox
            .iter()
            .map(|m| serde_json::to_string(&m.headers))
            .collect::<Result<_, _>>()?;
        let bodies: Vec<&[u8]> = outbox.iter().map(|m| m.payload.as_slice()).collect();
        tx.execute(
            "INSERT INTO outbox (topic, key, headers, payload, created_at_ms)
             SELECT t, k, h, p, $5 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[])
                 WITH ORDINALITY AS u(t, k, h, p, n)
             ORDER BY n",
            &[&topics, &keys, &headers, &bodies, &now],
        )
        .await?;
    }
    for write in batch {
        match write {
            Write::Snapshot(snapshot, _) => {
                let state = serde_json::to_string(&snapshot.state)?;
                tx.execute(
                    "INSERT INTO snapshots (stream_id, version, state) VALUES ($1, $2, $3)
                     ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, state = EXCLUDED.state
                     WHERE EXCLUDED.version > snapshots.version",
                    &[&snapshot.stream_id, &snapshot.version, &state],
                )
                .await?;
            }
            Write::MarkSent(ids, _) => {
                tx.execute(
                    "UPDATE outbox SET sent_at_ms = $1 WHERE id = ANY($2)",
                    &[&now, ids],
                )
                .await?;
            }
            Write::Append(..) => {}
        }
    }
    tx.commit().await?;
    Ok(results)
}
