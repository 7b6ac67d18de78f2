//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! Why one writer thread: SQLite allows one writer at a time, and every
//! commit costs an fsync. The writer takes every write queued at that moment,
//! runs them in one transaction (each append's version check inside it),
//! commits once and then answers each caller — so N concurrent appends cost
//! one fsync, and each is still durable when its caller hears back.
//! Reads go to a few separate connections and never wait for the writer.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{oneshot, watch};

use crate::batch::{Verdict, plan};
use crate::event::now_ms;
use crate::outbox::event_message;
use crate::{
    AppendRequest, Appended, EventSource, EventStore, Metadata, OutboxMessage, PendingMessage,
    RecordedEvent, Snapshot, StoreError,
};

/// The most writes one group commit takes.
const MAX_BATCH: usize = 2048;
/// Read connections (each serves one blocking read at a time).
const READERS: usize = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE TABLE IF NOT EXISTS snapshots (
    stream_id TEXT PRIMARY KEY,
    version   INTEGER NOT NULL,
    state     TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id            INTEGER PRIMARY KEY,
    topic         TEXT    NOT NULL,
    key           TEXT,
    headers       TEXT    NOT NULL,
    payload       BLOB    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    sent_at_ms    INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id) WHERE sent_at_ms IS NULL;
";

use crate::batch::{Reply, Write};

/// An event store in one SQLite file; cheap to share behind an `Arc`.
pub struct SqliteStore {
    writer: mpsc::Sender<Write>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: AtomicUsize,
    head: watch::Receiver<i64>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating when missing) the store at `path` and starts its writer.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(&path))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    fn open_blocking(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let conn = open_connection(path)?;
        conn.execute_batch(SCHEMA)?;
        let head: i64 =
            conn.query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |r| {
                r.get(0)
            })?;
        let readers = (0..READERS)
            .map(|_| open_connection(path).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let (head_tx, head_rx) = watch::channel(head);
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("eventstore-writer".into())
            .spawn(move || writer_loop(conn, rx, head_tx))?;
        Ok(SqliteStore {
            writer: tx,
            readers: Arc::new(readers),
            next_reader: AtomicUsize::new(0),
            head: head_rx,
        })
    }

    async fn write<T>(&self, make: impl FnOnce(Reply<T>) -> Write) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer.send(make(tx)).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = self.readers.clone();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            // Any idle connection will do; wait on one only when all are busy.
            for i in 0..readers.len() {
                if let Ok(conn) = readers[(start + i) % readers.len()].try_lock() {
                    return f(&conn);
                }
            }
            let conn = readers[start % readers.len()]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            f(&conn)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

const EVENT_COLUMNS: &str =
    "position, stream_id, version, event_type, schema_version, payload, metadata, recorded_at_ms";

fn event_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(RecordedEvent, String, String)> {
    Ok((
        RecordedEvent {
            position: row.get(0)?,
            stream_id: row.get(1)?,
            version: row.get(2)?,
            event_type: row.get(3)?,
            schema_version: row.get(4)?,
            payload: serde_json::Value::Null,
            metadata: Metadata::default(),
            recorded_at_ms: row.get(7)?,
        },
        row.get(5)?,
        row.get(6)?,
    ))
}

fn decode_events(
    rows: impl Iterator<Item = rusqlite::Result<(RecordedEvent, String, String)>>,
) -> Result<Vec<RecordedEvent>, StoreError> {
    rows.map(|row| {
        let (mut event, payload, metadata) = row?;
        event.payload = serde_json::from_str(&payload)?;
        event.metadata = serde_json::from_str(&metadata)?;
        Ok(event)
    })
    .collect()
}

#[async_trait]
impl EventSource for SqliteStore {
    async fn read_all(&self, after: i64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE position > ?1 ORDER BY position LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![after, limit as i64], event_from_row)?;
            decode_events(rows)
        })
        .await
    }

    async fn head(&self) -> Result<i64, StoreError> {
        self.read(|conn| {
            Ok(
                conn.query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |r| {
                    r.get(0)
                })?,
            )
        })
        .await
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        self.write(|reply| Write::Append(request, reply)).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        after: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let stream_id = stream_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ?1 AND version > ?2 ORDER BY version"
            ))?;
            let rows = stmt.query_map(params![stream_id, after], event_from_row)?;
            decode_events(rows)
        })
        .await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.write(|reply| Write::Snapshot(snapshot, reply)).await
    }

    async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError> {
        let stream_id = stream_id.to_owned();
        self.read(move |conn| {
            let row: Option<(i64, String)> = conn
                .prepare_cached("SELECT version, state FROM snapshots WHERE stream_id = ?1")?
                .query_row([&stream_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            row.map(|(version, state)| {
                Ok(Snapshot {
                    stream_id: stream_id.clone(),
                    version,
                    state: serde_json::from_str(&state)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn outbox_pending(&self, limit: usize) -> Result<Vec<PendingMessage>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, topic, key, headers, payload FROM outbox
                 WHERE sent_at_ms IS NULL ORDER BY id LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get::<_, String>(3)?,
                    r.get(4)?,
                ))
            })?;
            rows.map(|row| {
                let (id, topic, key, headers, payload) = row?;
                Ok(PendingMessage {
                    id,
                    message: OutboxMessage {
                        topic,
                        key,
                        headers: serde_json::from_str(&headers)?,
                        payload,
                    },
                })
            })
            .collect()
        })
        .await
    }

    async fn outbox_mark_sent(&self, ids: &[i64]) -> Result<(), StoreError> {
        let ids = ids.to_vec();
        self.write(|reply| Write::MarkSent(ids, reply)).await
    }

    fn watch_head(&self) -> watch::Receiver<i64> {
        self.head.clone()
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Write>, head: watch::Sender<i64>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        match commit(&mut conn, &batch) {
            Ok(outcomes) => answer(batch, outcomes, &head),
            Err(e) if batch.len() == 1 => answer_error(batch, &e),
            Err(e) => {
                // One bad write must not fail its neighbours: redo each alone.
                tracing::warn!(error = %e, writes = batch.len(), "group commit failed; retrying its writes one by one");
                for write in batch {
                    let single = [write];
                    match commit(&mut conn, &single) {
                        Ok(outcomes) => answer(single.into(), outcomes, &head),
                        Err(e) => answer_error(single.into(), &e),
                    }
                }
            }
        }
    }
}

/// What one write of a committed batch answers.
enum Outcome {
    Appended(Result<Appended, StoreError>),
    Done,
}

fn answer(batch: Vec<Write>, outcomes: Vec<Outcome>, head: &watch::Sender<i64>) {
    let mut newest = None;
    for (write, outcome) in batch.into_iter().zip(outcomes) {
        match (write, outcome) {
            (Write::Append(_, reply), Outcome::Appended(result)) => {
                if let Ok(appended) = &result {
                    newest = newest.max(Some(appended.position));
                }
                let _ = reply.send(result);
            }
            (Write::Snapshot(_, reply) | Write::MarkSent(_, reply), _) => {
                let _ = reply.send(Ok(()));
            }
            (Write::Append(_, reply), Outcome::Done) => {
                let _ = reply.send(Err(StoreError::Closed));
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

fn answer_error(batch: Vec<Write>, error: &rusqlite::Error) {
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

/// An append's rows, serialized before the transaction so nothing can fail
/// halfway through one append.
struct Encoded {
    events: Vec<(String, String)>,
}

fn encode(request: &AppendRequest) -> Result<Encoded, StoreError> {
    let events = request
        .events
        .iter()
        .map(|e| {
            Ok((
                serde_json::to_string(&e.payload)?,
                serde_json::to_string(&e.metadata)?,
            ))
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Encoded { events })
}

fn commit(conn: &mut Connection, batch: &[Write]) -> rusqlite::Result<Vec<Outcome>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let appends: Vec<&AppendRequest> = batch
        .iter()
        .filter_map(|w| match w {
            Write::Append(request, _) => Some(request),
            _ => None,
        })
        .collect();
    let mut current = HashMap::new();
    {
        let mut stmt =
            tx.prepare_cached("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?1")?;
        for request in &appends {
            if !current.contains_key(&request.stream_id) {
                let version: i64 = stmt.query_row([&request.stream_id], |r| r.get(0))?;
                current.insert(request.stream_id.clone(), version);
            }
        }
    }
    let mut verdicts = plan(&appends, &current).into_iter();
    let now = now_ms();
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        let mut insert_event = tx.prepare_cached(
            "INSERT INTO events (stream_id, version, event_type, schema_version, payload, metadata, recorded_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut insert_outbox = tx.prepare_cached(
            "INSERT INTO outbox (topic, key, headers, payload, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut upsert_snapshot = tx.prepare_cached(
            "INSERT INTO snapshots (stream_id, version, state) VALUES (?1, ?2, ?3)
             ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, state = excluded.state
             WHERE excluded.version > snapshots.version",
        )?;
        let mut mark_sent = tx.prepare_cached("UPDATE outbox SET sent_at_ms = ?1 WHERE id = ?2")?;
        let mut put_outbox = |m: &OutboxMessage| -> rusqlite::Result<()> {
            let headers = serde_json::to_string(&m.headers).unwrap_or_else(|_| "[]".into());
            insert_outbox.execute(params![m.topic, m.key, headers, m.payload, now])?;
            Ok(())
        };
        for write in batch {
            match write {
                Write::Append(request, _) => {
                    let verdict = verdicts.next();
                    let first_version = match verdict {
                        Some(Verdict::Accept { first_version }) => first_version,
                        Some(Verdict::Reject(e)) => {
                            outcomes.push(Outcome::Appended(Err(e)));
                            continue;
                        }
                        None => {
                            outcomes.push(Outcome::Done);
                            continue;
                        }
                    };
                    let encoded = match encode(request) {
                        Ok(encoded) => encoded,
                        Err(e) => {
                            outcomes.push(Outcome::Appended(Err(e)));
                            continue;
                        }
                    };
                    let mut position = 0;
                    let mut version = first_version;
                    for (event, (payload, metadata)) in request.events.iter().zip(&encoded.events) {
                        insert_event.execute(params![
                            request.stream_id,
                            version,
                            event.event_type,
                            event.schema_version,
                            payload,
                            metadata,
                            now
                        ])?;
                        position = tx.last_insert_rowid();
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
                            match event_message(topic, &recorded) {
                                Ok(message) => put_outbox(&message)?,
                                Err(e) => {
                                    return Err(rusqlite::Error::ToSqlConversionFailure(Box::new(
                                        e,
                                    )));
                                }
                            }
                        }
                        version += 1;
                    }
                    for message in &request.outbox {
                        put_outbox(message)?;
                    }
                    outcomes.push(Outcome::Appended(Ok(Appended {
                        version: version - 1,
                        position,
                    })));
                }
                Write::Snapshot(snapshot, _) => {
                    let state = serde_json::to_string(&snapshot.state)
                        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                    upsert_snapshot.execute(params![
                        snapshot.stream_id,
                        snapshot.version,
                        state
                    ])?;
                    outcomes.push(Outcome::Done);
                }
                Write::MarkSent(ids, _) => {
                    for id in ids {
                        mark_sent.execute(params![now, id])?;
                    }
                    outcomes.push(Outcome::Done);
                }
            }
        }
    }
    tx.commit()?;
    Ok(outcomes)
}
