//! The scale-out backend: PostgreSQL, each store in its own schema.
//!
//! Appends go through one writer task that group-commits like the SQLite
//! backend: every append queued at that moment shares one transaction and so
//! one WAL flush. A batch costs two round trips, whatever its size, because
//! its statements are prepared once and pipelined (sent together, answered
//! together):
//!
//! 1. `BEGIN`; the store's advisory lock (and the transaction id); the
//!    newest position and the version of every stream the batch touches
//!    (index lookups);
//! 2. the events and outbox rows (one `INSERT … UNNEST` each), snapshots,
//!    sent marks, `COMMIT`.
//!
//! The advisory lock makes writers — in this process or any other — commit
//! one at a time, so the writer numbers the events itself (newest position +
//! 1, …) and positions follow commit order without gaps: a projection
//! reading `position > checkpoint` can never skip an event committed late.
//! Knowing positions before the insert is also what lets the outbox rows
//! (which carry them) go in the same round trip.
//!
//! Sessions reconnect after a drop (see [`crate::pg`]). A batch caught by a
//! drop is answered by its real outcome: before `COMMIT` was sent it is
//! [`StoreError::NotCommitted`]; after, the writer reconnects and asks the
//! server what became of its transaction (`pg_xact_status`), answering
//! success only for a transaction that committed, and
//! [`StoreError::OutcomeUnknown`] when the server cannot tell in time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::{Client, Row};

use crate::batch::{Verdict, plan};
use crate::event::now_ms;
use crate::outbox::event_message;
use crate::pg::{PgConn, PgExclusive, PgSession, PgTarget, is_connection_error};
use crate::{
    AppendRequest, Appended, EventSource, EventStore, OutboxMessage, PendingMessage, RecordedEvent,
    Snapshot, StoreError,
};

const MAX_BATCH: usize = 2048;
const READERS: usize = 3;
/// The advisory lock migrations serialize on, server-wide.
const MIGRATE_LOCK: i64 = 0x6d6f_7274_6173;
/// How long the writer tries to learn the fate of a transaction whose
/// connection dropped during `COMMIT` before answering "unknown".
const RESOLVE_WITHIN: Duration = Duration::from_secs(3);

/// Takes the store's write lock and names the transaction: the first key
/// names mortar's lock space, the second the store (its schema, the
/// session's `search_path`), so the writers of one store commit one at a
/// time while stores in other schemas of the same server do not wait for
/// each other (two schemas whose names hash alike merely share a lock). The
/// transaction id lets the writer ask later whether it committed.
const TAKE_WRITE_LOCK: &str = "SELECT pg_advisory_xact_lock(1836020340, hashtext(current_schema())), pg_current_xact_id()::text";

/// The newest position, and the version of each stream in `$1` (0 for a
/// new one), in order. A separate statement from the lock so that its
/// snapshot is taken after the lock is held (and so sees every earlier
/// writer's commit). One index probe per stream, never a scan.
const CURRENT_VERSIONS: &str = "SELECT (SELECT COALESCE(MAX(position), 0) FROM events),
        ARRAY(SELECT COALESCE((SELECT MAX(version) FROM events WHERE stream_id = s), 0)
              FROM UNNEST($1::text[]) WITH ORDINALITY AS u(s, n) ORDER BY n)";

/// Events with the positions the writer assigned. `OVERRIDING SYSTEM VALUE`
/// keeps stores created when `position` was an identity column working.
const INSERT_EVENTS: &str = "INSERT INTO events (position, stream_id, version, event_type, schema_version, payload, metadata, recorded_at_ms)
 OVERRIDING SYSTEM VALUE
 SELECT p, s, v, t, sv, pl, m, $8 FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::text[], $5::int4[], $6::text[], $7::text[]) AS u(p, s, v, t, sv, pl, m)";

/// Outbox rows, ids in the given order.
const INSERT_OUTBOX: &str = "INSERT INTO outbox (topic, key, headers, payload, created_at_ms)
 SELECT t, k, h, p, $5 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[])
     WITH ORDINALITY AS u(t, k, h, p, n)
 ORDER BY n";

/// Snapshots (at most one per stream per statement), never replacing a newer one.
const UPSERT_SNAPSHOTS: &str = "INSERT INTO snapshots (stream_id, version, state)
 SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[])
 ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, state = EXCLUDED.state
 WHERE EXCLUDED.version > snapshots.version";

const MARK_SENT: &str = "UPDATE outbox SET sent_at_ms = $1 WHERE id = ANY($2)";

/// What became of a transaction, by id (`committed`, `aborted`, `in progress`).
const XACT_STATUS: &str = "SELECT pg_xact_status($1::text::xid8)";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    position       BIGINT  NOT NULL UNIQUE,
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
    readers: Vec<PgSession>,
    next_reader: AtomicUsize,
    head: watch::Receiver<i64>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
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
        let target = PgTarget::new(conninfo, schema, "writer")?;
        let mut writer = PgExclusive::connect(target.clone()).await?;
        let head: i64 = {
            let conn = writer.get().await?;
            migrate(conn.client_mut(), schema, SCHEMA).await?;
            conn.client()
                .query_one("SELECT COALESCE(MAX(position), 0) FROM events", &[])
                .await?
                .try_get(0)?
        };
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(PgSession::connect(target.with_role("reader")).await?);
        }
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

    fn reader(&self) -> &PgSession {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        &self.readers[i]
    }

    /// Runs a query on a reader session (reconnecting, and running it once
    /// more, if the session turns out to have dropped).
    async fn query(
        &self,
        sql: &'static str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.reader().query(sql, params).await
    }

    async fn write<T>(&self, make: impl FnOnce(Reply<T>) -> Write) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer.send(make(tx)).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

const READ_ALL: &str = "SELECT position, stream_id, version, event_type, schema_version, payload, metadata, recorded_at_ms
 FROM events WHERE position > $1 ORDER BY position LIMIT $2";
const READ_STREAM: &str = "SELECT position, stream_id, version, event_type, schema_version, payload, metadata, recorded_at_ms
 FROM events WHERE stream_id = $1 AND version > $2 ORDER BY version";
const HEAD: &str = "SELECT COALESCE(MAX(position), 0) FROM events";
const LOAD_SNAPSHOT: &str = "SELECT version, state FROM snapshots WHERE stream_id = $1";
const OUTBOX_PENDING: &str = "SELECT id, topic, key, headers, payload FROM outbox
 WHERE sent_at_ms IS NULL ORDER BY id LIMIT $1";

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
        let rows = self.query(READ_ALL, &[&after, &(limit as i64)]).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn head(&self) -> Result<i64, StoreError> {
        let rows = self.query(HEAD, &[]).await?;
        match rows.first() {
            Some(row) => Ok(row.try_get(0)?),
            None => Ok(0),
        }
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
        let rows = self.query(READ_STREAM, &[&stream_id, &after]).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.write(|reply| Write::Snapshot(snapshot, reply)).await
    }

    async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError> {
        let rows = self.query(LOAD_SNAPSHOT, &[&stream_id]).await?;
        rows.first()
            .map(|row| {
                Ok(Snapshot {
                    stream_id: stream_id.to_owned(),
                    version: row.try_get(0)?,
                    state: serde_json::from_str(row.try_get(1)?)?,
                })
            })
            .transpose()
    }

    async fn outbox_pending(&self, limit: usize) -> Result<Vec<PendingMessage>, StoreError> {
        let rows = self.query(OUTBOX_PENDING, &[&(limit as i64)]).await?;
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

/// What each write of a batch gets when the batch commits (`None` for
/// snapshots and sent marks, which have no result beyond success).
type Outcomes = Vec<Option<Result<Appended, StoreError>>>;

/// A batch that did not commit.
enum Failure {
    /// Certainly not committed: `COMMIT` was never sent, or the transaction
    /// failed on the server. `connection` says whether the session dropped.
    NotCommitted { error: StoreError, connection: bool },
    /// `COMMIT` was sent but the session dropped before its answer: the
    /// transaction `xid` (served by backend `pid`) may have committed, in
    /// which case `outcomes` is what the batch did.
    InDoubt {
        xid: String,
        pid: i32,
        outcomes: Outcomes,
        error: StoreError,
    },
}

async fn writer_loop(
    mut session: PgExclusive,
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
        let split = batch.len() > 1;
        match settle(&mut session, &batch).await {
            Settled::Done(outcomes, newest) => answer(batch, outcomes, newest, &head),
            Settled::Failed(error) => answer_error(batch, || error.again()),
            Settled::Rejected(error) if !split => answer_error(batch, || error.again()),
            Settled::Rejected(error) => {
                tracing::warn!(error = %error, writes = batch.len(), "group commit failed; retrying its writes one by one");
                for write in batch {
                    let single = [write];
                    match settle(&mut session, &single).await {
                        Settled::Done(outcomes, newest) => {
                            answer(Vec::from(single), outcomes, newest, &head);
                        }
                        Settled::Failed(e) | Settled::Rejected(e) => {
                            answer_error(Vec::from(single), || e.again());
                        }
                    }
                }
            }
        }
    }
}

/// How a batch ended, from the callers' point of view.
enum Settled {
    /// Committed: each write's outcome, and the newest position written.
    Done(Outcomes, Option<i64>),
    /// The server refused the batch (a statement failed on a healthy
    /// session): one of its writes may be at fault, the others fine.
    Rejected(Answerable),
    /// The database was unreachable, or the session dropped: every write
    /// gets the same answer.
    Failed(Answerable),
}

/// An error every write of a batch can be given a copy of.
#[derive(Debug)]
enum Answerable {
    Unavailable { problem: String, retry_in_ms: u64 },
    NotCommitted(String),
    OutcomeUnknown(String),
    Failed(String),
}

impl std::fmt::Display for Answerable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.again(), f)
    }
}

impl Answerable {
    fn from_error(error: StoreError) -> Answerable {
        match error {
            StoreError::Unavailable {
                problem,
                retry_in_ms,
            } => Answerable::Unavailable {
                problem,
                retry_in_ms,
            },
            StoreError::NotCommitted(why) => Answerable::NotCommitted(why),
            StoreError::OutcomeUnknown(why) => Answerable::OutcomeUnknown(why),
            other => Answerable::Failed(other.to_string()),
        }
    }

    fn again(&self) -> StoreError {
        match self {
            Answerable::Unavailable {
                problem,
                retry_in_ms,
            } => StoreError::Unavailable {
                problem: problem.clone(),
                retry_in_ms: *retry_in_ms,
            },
            Answerable::NotCommitted(why) => StoreError::NotCommitted(why.clone()),
            Answerable::OutcomeUnknown(why) => StoreError::OutcomeUnknown(why.clone()),
            Answerable::Failed(why) => StoreError::Invalid(format!("the write failed: {why}")),
        }
    }
}

/// Commits a batch and, when its session drops, finds out what happened.
async fn settle(session: &mut PgExclusive, batch: &[Write]) -> Settled {
    let conn = match session.get().await {
        Ok(conn) => conn,
        Err(e) => return Settled::Failed(Answerable::from_error(e)),
    };
    match commit(conn, batch).await {
        Ok((outcomes, newest)) => Settled::Done(outcomes, newest),
        Err(Failure::NotCommitted { error, connection }) => {
            if connection || session.check(&error) {
                session.discard(&error);
                Settled::Failed(Answerable::NotCommitted(error.to_string()))
            } else {
                Settled::Rejected(Answerable::from_error(error))
            }
        }
        Err(Failure::InDoubt {
            xid,
            pid,
            outcomes,
            error,
        }) => {
            session.check(&error);
            let schema = session.reconnect().target().schema().to_owned();
            tracing::warn!(schema, xid, error = %error, "the writer's session dropped with COMMIT sent; asking the server whether it committed");
            match resolve(session, &xid, pid).await {
                Ok(true) => {
                    tracing::info!(schema, xid, "the interrupted transaction had committed");
                    let newest = newest_position(&outcomes);
                    Settled::Done(outcomes, newest)
                }
                Ok(false) => {
                    tracing::info!(schema, xid, "the interrupted transaction had not committed");
                    Settled::Failed(Answerable::NotCommitted(error.to_string()))
                }
                Err(why) => {
                    tracing::warn!(
                        schema,
                        xid,
                        problem = why,
                        "cannot learn whether the interrupted transaction committed"
                    );
                    Settled::Failed(Answerable::OutcomeUnknown(format!("{error}; then: {why}")))
                }
            }
        }
    }
}

/// Whether transaction `xid` committed, asked on a fresh session; waits
/// out an old backend (`pid`) still finishing it, by terminating it.
async fn resolve(session: &mut PgExclusive, xid: &str, pid: i32) -> Result<bool, String> {
    let deadline = Instant::now() + RESOLVE_WITHIN;
    let mut terminated = false;
    let name = session
        .reconnect()
        .target()
        .application_name()
        .unwrap_or_default()
        .to_owned();
    loop {
        if session.get().await.is_err() {
            let conn = session
                .reconnect()
                .connect_by(deadline)
                .await
                .map_err(|e| e.to_string())?;
            session.install(conn);
        }
        let conn = session.get().await.map_err(|e| e.to_string())?;
        let status: Option<String> = match conn.client().query_one(XACT_STATUS, &[&xid]).await {
            Ok(row) => row.try_get(0).map_err(|e| e.to_string())?,
            Err(e) => {
                let e = StoreError::from(e);
                session.check(&e);
                if Instant::now() >= deadline {
                    return Err(e.to_string());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        match status.as_deref() {
            Some("committed") => return Ok(true),
            Some("aborted") => return Ok(false),
            Some(_) if Instant::now() < deadline => {
                // The old backend has not noticed yet: make it stop (its
                // transaction then aborts) and ask again. Only if that pid
                // is still this store's writer, never a stranger's session.
                if !terminated {
                    terminated = true;
                    let _ = conn
                        .client()
                        .execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                             WHERE pid = $1 AND application_name = $2",
                            &[&pid, &name],
                        )
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Some(other) => return Err(format!("transaction {xid} is still {other}")),
            None => return Err(format!("the server no longer knows transaction {xid}")),
        }
    }
}

fn newest_position(outcomes: &Outcomes) -> Option<i64> {
    outcomes
        .iter()
        .filter_map(|o| match o {
            Some(Ok(appended)) => Some(appended.position),
            _ => None,
        })
        .max()
}

fn answer(batch: Vec<Write>, outcomes: Outcomes, newest: Option<i64>, head: &watch::Sender<i64>) {
    for (write, outcome) in batch.into_iter().zip(outcomes) {
        match write {
            Write::Append(_, reply) => {
                let _ = reply.send(outcome.unwrap_or(Err(StoreError::Closed)));
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

fn answer_error(batch: Vec<Write>, make: impl Fn() -> StoreError) {
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

/// The batch's rows, as columns for the pipelined statements.
#[derive(Default)]
struct Rows<'a> {
    positions: Vec<i64>,
    streams: Vec<&'a str>,
    versions: Vec<i64>,
    types: Vec<&'a str>,
    schemas: Vec<i32>,
    payloads: Vec<String>,
    metas: Vec<String>,
    outbox: Vec<OutboxMessage>,
    snapshots: HashMap<&'a str, (i64, String)>,
    sent: Vec<i64>,
}

/// Decides the batch against the current versions and lays out its rows.
fn lay_out<'a>(
    batch: &'a [Write],
    head: i64,
    current: &HashMap<String, i64>,
    now: i64,
) -> Result<(Outcomes, Rows<'a>), StoreError> {
    let appends: Vec<&AppendRequest> = batch
        .iter()
        .filter_map(|w| match w {
            Write::Append(request, _) => Some(request),
            _ => None,
        })
        .collect();
    let mut verdicts = plan(&appends, current).into_iter();
    let mut rows = Rows::default();
    let mut outcomes: Outcomes = Vec::with_capacity(batch.len());
    let mut position = head;
    for write in batch {
        match write {
            Write::Append(request, _) => match verdicts.next() {
                Some(Verdict::Accept { first_version }) => {
                    let encoded: Result<Vec<(String, String)>, serde_json::Error> = request
                        .events
                        .iter()
                        .map(|e| {
                            Ok((
                                serde_json::to_string(&e.payload)?,
                                serde_json::to_string(&e.metadata)?,
                            ))
                        })
                        .collect();
                    let encoded = match encoded {
                        Ok(encoded) => encoded,
                        Err(e) => {
                            outcomes.push(Some(Err(e.into())));
                            continue;
                        }
                    };
                    for (k, (event, (payload, meta))) in
                        request.events.iter().zip(encoded).enumerate()
                    {
                        position += 1;
                        let version = first_version + k as i64;
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
                            rows.outbox.push(event_message(topic, &recorded)?);
                        }
                        rows.positions.push(position);
                        rows.streams.push(request.stream_id.as_str());
                        rows.versions.push(version);
                        rows.types.push(event.event_type.as_str());
                        rows.schemas.push(event.schema_version as i32);
                        rows.payloads.push(payload);
                        rows.metas.push(meta);
                    }
                    rows.outbox.extend(request.outbox.iter().cloned());
                    outcomes.push(Some(Ok(Appended {
                        version: first_version + request.events.len() as i64 - 1,
                        position,
                    })));
                }
                Some(Verdict::Reject(e)) => outcomes.push(Some(Err(e))),
                None => outcomes.push(Some(Err(StoreError::Closed))),
            },
            Write::Snapshot(snapshot, _) => {
                let state = serde_json::to_string(&snapshot.state)?;
                let newer = rows
                    .snapshots
                    .get(snapshot.stream_id.as_str())
                    .is_none_or(|(v, _)| snapshot.version > *v);
                if newer {
                    rows.snapshots
                        .insert(snapshot.stream_id.as_str(), (snapshot.version, state));
                }
                outcomes.push(None);
            }
            Write::MarkSent(ids, _) => {
                rows.sent.extend_from_slice(ids);
                outcomes.push(None);
            }
        }
    }
    Ok((outcomes, rows))
}

/// Ends a transaction that failed before `COMMIT` was sent; a session that
/// cannot even do that is reported as dropped.
async fn abandon(conn: &PgConn, error: StoreError) -> Failure {
    let connection = match &error {
        StoreError::Postgres(e) => is_connection_error(e),
        _ => false,
    };
    let rolled_back = connection || conn.client().batch_execute("ROLLBACK").await.is_ok();
    Failure::NotCommitted {
        error,
        connection: connection || !rolled_back,
    }
}

/// One group commit in two pipelined round trips; see the module docs.
async fn commit(conn: &PgConn, batch: &[Write]) -> Result<(Outcomes, Option<i64>), Failure> {
    let not_committed = |error: StoreError| Failure::NotCommitted {
        connection: match &error {
            StoreError::Postgres(e) => is_connection_error(e),
            _ => false,
        },
        error,
    };
    let prepared = async {
        Ok::<_, tokio_postgres::Error>((
            conn.statement(TAKE_WRITE_LOCK).await?,
            conn.statement(CURRENT_VERSIONS).await?,
            conn.statement(INSERT_EVENTS).await?,
            conn.statement(INSERT_OUTBOX).await?,
            conn.statement(UPSERT_SNAPSHOTS).await?,
            conn.statement(MARK_SENT).await?,
        ))
    };
    let (lock, versions, insert_events, insert_outbox, upsert_snapshots, mark_sent) =
        prepared.await.map_err(|e| not_committed(e.into()))?;
    let client = conn.client();

    let mut streams: Vec<&str> = batch
        .iter()
        .filter_map(|w| match w {
            Write::Append(request, _) => Some(request.stream_id.as_str()),
            _ => None,
        })
        .collect();
    streams.sort_unstable();
    streams.dedup();

    // Round trip 1: BEGIN, the lock, the current versions.
    let versions_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&streams];
    let (begun, locked, current) = futures::join!(
        client.batch_execute("BEGIN"),
        client.query_one(&lock, &[]),
        client.query_one(&versions, &versions_params),
    );
    let read = (|| -> Result<(String, i64, HashMap<String, i64>), StoreError> {
        begun?;
        let xid: String = locked?.try_get(1)?;
        let row = current?;
        let head: i64 = row.try_get(0)?;
        let found: Vec<i64> = row.try_get(1)?;
        let current = streams
            .iter()
            .zip(found)
            .map(|(s, v)| ((*s).to_owned(), v))
            .collect();
        Ok((xid, head, current))
    })();
    let (xid, head, current) = match read {
        Ok(read) => read,
        Err(e) => return Err(abandon(conn, e).await),
    };
    let now = now_ms();
    let (outcomes, rows) = match lay_out(batch, head, &current, now) {
        Ok(laid_out) => laid_out,
        Err(e) => return Err(abandon(conn, e).await),
    };
    let newest = (!rows.positions.is_empty()).then_some(head + rows.positions.len() as i64);
    let headers: Vec<String> = match rows
        .outbox
        .iter()
        .map(|m| serde_json::to_string(&m.headers))
        .collect::<Result<_, _>>()
    {
        Ok(headers) => headers,
        Err(e) => return Err(abandon(conn, e.into()).await),
    };
    let topics: Vec<&str> = rows.outbox.iter().map(|m| m.topic.as_str()).collect();
    let keys: Vec<Option<&str>> = rows.outbox.iter().map(|m| m.key.as_deref()).collect();
    let bodies: Vec<&[u8]> = rows.outbox.iter().map(|m| m.payload.as_slice()).collect();
    let (snap_streams, (snap_versions, snap_states)): (Vec<&str>, (Vec<i64>, Vec<&str>)) = rows
        .snapshots
        .iter()
        .map(|(s, (v, state))| (*s, (*v, state.as_str())))
        .unzip();

    // Round trip 2: every row, then COMMIT. A statement that fails aborts
    // the transaction, and the COMMIT behind it then only rolls back.
    let (events_done, outbox_done, snapshots_done, sent_done, committed) = futures::join!(
        async {
            if rows.positions.is_empty() {
                return Ok(0);
            }
            client
                .execute(
                    &insert_events,
                    &[
                        &rows.positions,
                        &rows.streams,
                        &rows.versions,
                        &rows.types,
                        &rows.schemas,
                        &rows.payloads,
                        &rows.metas,
                        &now,
                    ],
                )
                .await
        },
        async {
            if topics.is_empty() {
                return Ok(0);
            }
            client
                .execute(&insert_outbox, &[&topics, &keys, &headers, &bodies, &now])
                .await
        },
        async {
            if snap_streams.is_empty() {
                return Ok(0);
            }
            client
                .execute(
                    &upsert_snapshots,
                    &[&snap_streams, &snap_versions, &snap_states],
                )
                .await
        },
        async {
            if rows.sent.is_empty() {
                return Ok(0);
            }
            client.execute(&mark_sent, &[&now, &rows.sent]).await
        },
        client.batch_execute("COMMIT"),
    );
    let statements = [events_done, outbox_done, snapshots_done, sent_done];
    // A statement refused on a live session: certainly rolled back.
    if let Some(refused) = statements
        .iter()
        .filter_map(|r| r.as_ref().err())
        .find(|e| !is_connection_error(e))
    {
        let error = StoreError::Invalid(refused.to_string());
        let dropped = committed.as_ref().is_err_and(is_connection_error);
        return Err(Failure::NotCommitted {
            error,
            connection: dropped,
        });
    }
    let lost = statements.into_iter().find_map(Result::err);
    match committed {
        Ok(()) => match lost {
            None => Ok((outcomes, newest)),
            Some(e) => Err(Failure::InDoubt {
                xid,
                pid: conn.backend_pid(),
                outcomes,
                error: e.into(),
            }),
        },
        // COMMIT itself refused on a live session (e.g. a deferred check).
        Err(e) if !is_connection_error(&e) => Err(not_committed(e.into())),
        Err(e) => Err(Failure::InDoubt {
            xid,
            pid: conn.backend_pid(),
            outcomes,
            error: lost.unwrap_or(e).into(),
        }),
    }
}
