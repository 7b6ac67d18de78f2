//! PostgreSQL sessions that survive a dropped connection.
//!
//! A server restart, a failover or an operator's `pg_terminate_backend`
//! closes every session. Without help, a `tokio_postgres::Client` stays
//! closed forever and every later call fails. Here each session is rebuilt
//! on demand: the next caller after a drop reconnects (with `search_path`
//! and `application_name` set again and an empty statement cache), and
//! while the server stays away attempts are spaced out by an exponential
//! backoff (100 ms doubling to 5 s) so callers get a quick, clear
//! [`StoreError::Unavailable`] instead of piling up connection attempts.
//!
//! Every session names itself `mortar/<schema>/<role>` in
//! `application_name` (unless the URL sets one), so operators — and the
//! tests — can find a store's sessions in `pg_stat_activity`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};

use crate::StoreError;

/// The first pause after a failed connection attempt; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The most statements kept prepared per session.
const MAX_STATEMENTS: usize = 512;
/// How long a connection attempt may take when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and as whom to connect: the server, the store's schema (the
/// session's `search_path`) and the session's role in the store (for
/// `application_name` and log lines).
#[derive(Clone)]
pub struct PgTarget {
    config: tokio_postgres::Config,
    schema: String,
    role: String,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("schema", &self.schema)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl PgTarget {
    /// Parses `conninfo` (a `postgres://` URL without `schema`). `role`
    /// names what the session is for (`writer`, `reader`, …).
    pub fn new(conninfo: &str, schema: &str, role: &str) -> Result<PgTarget, StoreError> {
        let mut config: tokio_postgres::Config =
            conninfo
                .parse()
                .map_err(|e: tokio_postgres::Error| StoreError::InvalidUrl {
                    url: conninfo.to_owned(),
                    problem: e.to_string(),
                })?;
        if config.get_application_name().is_none() {
            config.application_name(application_name(schema, role));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        Ok(PgTarget {
            config,
            schema: schema.to_owned(),
            role: role.to_owned(),
        })
    }

    /// The same server and schema, for another role.
    pub fn with_role(&self, role: &str) -> PgTarget {
        let mut target = self.clone();
        if target.config.get_application_name() == Some(&application_name(&self.schema, &self.role))
        {
            target
                .config
                .application_name(application_name(&self.schema, role));
        }
        target.role = role.to_owned();
        target
    }

    /// The schema the session works in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// What the session is for.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The `application_name` its sessions carry.
    pub fn application_name(&self) -> Option<&str> {
        self.config.get_application_name()
    }

    /// Opens one session with `search_path` set to the schema.
    pub async fn connect(&self) -> Result<PgConn, StoreError> {
        let (client, connection) = self.config.connect(NoTls).await?;
        let (schema, role) = (self.schema.clone(), self.role.clone());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(
                    schema,
                    role,
                    error = describe(&e),
                    "PostgreSQL connection closed"
                );
            }
        });
        client
            .batch_execute(&format!("SET search_path TO \"{}\"", self.schema))
            .await?;
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await?
            .try_get(0)?;
        Ok(PgConn {
            client,
            statements: std::sync::Mutex::new(HashMap::new()),
            pid,
        })
    }
}

/// `mortar/<schema>/<role>`, within PostgreSQL's 63-byte limit.
fn application_name(schema: &str, role: &str) -> String {
    let mut name = format!("mortar/{schema}/{role}");
    while name.len() > 63 {
        name.pop();
    }
    name
}

/// One live session and the statements prepared on it (a prepared
/// statement skips parsing and planning, and lets requests be pipelined:
/// several can be sent before the first answer comes back).
pub struct PgConn {
    client: Client,
    statements: std::sync::Mutex<HashMap<String, Statement>>,
    pid: i32,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConn")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl PgConn {
    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The client, for transactions.
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The client, for one-off work that needs no reconnection.
    pub fn into_client(self) -> Client {
        self.client
    }

    /// The server process serving this session (`pg_backend_pid()`).
    pub fn backend_pid(&self) -> i32 {
        self.pid
    }

    /// True once the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// `sql` prepared on this session, from the cache after the first time.
    pub async fn statement(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.cached(sql) {
            return Ok(statement);
        }
        let statement = self.client.prepare(sql).await?;
        let mut statements = self.statements.lock().unwrap_or_else(|p| p.into_inner());
        if statements.len() >= MAX_STATEMENTS {
            // Callers building SQL text on the fly: start over rather than grow.
            statements.clear();
        }
        statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    fn cached(&self, sql: &str) -> Option<Statement> {
        self.statements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sql)
            .cloned()
    }
}

/// A driver error in words, including what the server said (the driver's
/// own `Display` says only "db error" for every server error).
pub fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// True when `error` means the session is gone (closed, an I/O failure,
/// the server shutting down or terminating the backend), as opposed to a
/// statement failing on a healthy session.
pub fn is_connection_error(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    if let Some(code) = error.code() {
        return code.code().starts_with("08")
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW;
    }
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// True when a store error means the session is gone; see [`is_connection_error`].
pub fn is_store_connection_error(error: &StoreError) -> bool {
    match error {
        StoreError::Postgres(e) => is_connection_error(e),
        StoreError::Unavailable { .. } | StoreError::NotCommitted(_) => true,
        _ => false,
    }
}

/// Reconnection with backoff, and the log lines that go with it: one
/// warning when a session is lost, one per failed attempt (with the next
/// delay), one info line when it is back.
#[derive(Debug)]
pub struct Reconnect {
    target: PgTarget,
    failures: u32,
    not_before: Option<Instant>,
    last_error: String,
    lost_at: Option<Instant>,
}

impl Reconnect {
    /// Reconnects to `target`.
    pub fn new(target: PgTarget) -> Reconnect {
        Reconnect {
            target,
            failures: 0,
            not_before: None,
            last_error: String::new(),
            lost_at: None,
        }
    }

    /// The target.
    pub fn target(&self) -> &PgTarget {
        &self.target
    }

    /// Records that the session dropped (logged once per drop).
    pub fn lost(&mut self, why: &dyn std::fmt::Display) {
        if self.lost_at.is_none() {
            self.lost_at = Some(Instant::now());
            tracing::warn!(
                schema = self.target.schema,
                role = self.target.role,
                error = %why,
                "lost the PostgreSQL session; reconnecting"
            );
        }
    }

    /// Connects now, unless the last attempt failed less than the current
    /// backoff ago: then [`StoreError::Unavailable`] at once.
    pub async fn connect(&mut self) -> Result<PgConn, StoreError> {
        if let Some(at) = self.not_before {
            let now = Instant::now();
            if now < at {
                return Err(self.unavailable(at - now));
            }
        }
        match self.target.connect().await {
            Ok(conn) => {
                if let Some(lost) = self.lost_at.take() {
                    tracing::info!(
                        schema = self.target.schema,
                        role = self.target.role,
                        attempts = self.failures + 1,
                        down_ms = lost.elapsed().as_millis() as u64,
                        "reconnected to PostgreSQL"
                    );
                }
                self.failures = 0;
                self.not_before = None;
                Ok(conn)
            }
            Err(e) => {
                let delay = backoff(self.failures);
                self.failures = self.failures.saturating_add(1);
                self.not_before = Some(Instant::now() + delay);
                self.last_error = e.to_string();
                self.lost_at.get_or_insert_with(Instant::now);
                tracing::warn!(
                    schema = self.target.schema,
                    role = self.target.role,
                    error = %e,
                    attempt = self.failures,
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot connect to PostgreSQL"
                );
                Err(self.unavailable(delay))
            }
        }
    }

    /// Connects, waiting out the backoff between attempts, until `deadline`.
    pub async fn connect_by(&mut self, deadline: Instant) -> Result<PgConn, StoreError> {
        loop {
            if let Some(at) = self.not_before {
                if at >= deadline {
                    return Err(self.unavailable(at.saturating_duration_since(Instant::now())));
                }
                tokio::time::sleep_until(at.into()).await;
            }
            match self.connect().await {
                Ok(conn) => return Ok(conn),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => {}
            }
        }
    }

    fn unavailable(&self, retry_in: Duration) -> StoreError {
        StoreError::Unavailable {
            problem: self.last_error.clone(),
            retry_in_ms: retry_in.as_millis() as u64,
        }
    }
}

/// The pause after `failures` failed attempts in a row.
fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << failures.min(16))
        .min(MAX_BACKOFF)
}

/// A session shared by concurrent callers (queries only; transactions need
/// a session of their own): reconnected by whichever caller first finds it
/// closed.
#[derive(Debug)]
pub struct PgSession {
    state: tokio::sync::Mutex<SessionState>,
}

#[derive(Debug)]
struct SessionState {
    conn: Option<Arc<PgConn>>,
    reconnect: Reconnect,
}

impl PgSession {
    /// Connects once (failing at once if the server is unreachable, so a
    /// wrong URL is reported at start-up), then reconnects as needed.
    pub async fn connect(target: PgTarget) -> Result<PgSession, StoreError> {
        let conn = target.connect().await?;
        Ok(PgSession {
            state: tokio::sync::Mutex::new(SessionState {
                conn: Some(Arc::new(conn)),
                reconnect: Reconnect::new(target),
            }),
        })
    }

    /// The live session, reconnecting first if it has closed.
    pub async fn get(&self) -> Result<Arc<PgConn>, StoreError> {
        let mut state = self.state.lock().await;
        if let Some(conn) = &state.conn {
            if !conn.is_closed() {
                return Ok(conn.clone());
            }
            state.conn = None;
            state.reconnect.lost(&"the connection closed");
        }
        let conn = Arc::new(state.reconnect.connect().await?);
        state.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Runs an idempotent read on the session; if the session turns out to
    /// be gone, runs it once more on a fresh one (a dropped connection then
    /// costs the caller nothing but latency).
    pub async fn read<T, F, Fut>(&self, read: F) -> Result<T, StoreError>
    where
        F: Fn(Arc<PgConn>) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let conn = self.get().await?;
        match read(conn.clone()).await {
            Err(e) if is_store_connection_error(&e) => {
                self.discard(&conn, &e).await;
                read(self.get().await?).await
            }
            other => other,
        }
    }

    /// One idempotent query as a prepared (cached) statement, through
    /// [`PgSession::read`]: once more on a fresh session if this one dropped.
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.read(|conn| async move {
            let statement = conn.statement(sql).await?;
            Ok(conn.client().query(&statement, params).await?)
        })
        .await
    }

    /// Drops `conn` (if it is still the current session) after `error`.
    pub async fn discard(&self, conn: &Arc<PgConn>, error: &(dyn std::fmt::Display + Sync)) {
        let mut state = self.state.lock().await;
        if state.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            state.conn = None;
            state.reconnect.lost(error);
        }
    }
}

/// A session owned by one user at a time (a writer task, or callers
/// holding a lock around it): reconnected on the next use after a drop.
#[derive(Debug)]
pub struct PgExclusive {
    conn: Option<PgConn>,
    reconnect: Reconnect,
}

impl PgExclusive {
    /// Connects once (failing at once if the server is unreachable).
    pub async fn connect(target: PgTarget) -> Result<PgExclusive, StoreError> {
        let conn = target.connect().await?;
        Ok(PgExclusive {
            conn: Some(conn),
            reconnect: Reconnect::new(target),
        })
    }

    /// The live session, reconnecting first if it has closed.
    pub async fn get(&mut self) -> Result<&mut PgConn, StoreError> {
        if self.conn.as_ref().is_some_and(PgConn::is_closed) {
            self.conn = None;
            self.reconnect.lost(&"the connection closed");
        }
        if self.conn.is_none() {
            self.conn = Some(self.reconnect.connect().await?);
        }
        match self.conn.as_mut() {
            Some(conn) => Ok(conn),
            None => Err(StoreError::Closed),
        }
    }

    /// After a failure: drops the session if the failure says it is gone
    /// (or it has closed), so the next use reconnects. Returns whether it did.
    pub fn check(&mut self, error: &StoreError) -> bool {
        let gone =
            is_store_connection_error(error) || self.conn.as_ref().is_some_and(PgConn::is_closed);
        if gone && self.conn.take().is_some() {
            self.reconnect.lost(error);
        }
        gone
    }

    /// [`PgExclusive::check`] for a driver error.
    pub fn check_postgres(&mut self, error: &tokio_postgres::Error) -> bool {
        let gone = is_connection_error(error) || self.conn.as_ref().is_some_and(PgConn::is_closed);
        if gone && self.conn.take().is_some() {
            self.reconnect.lost(error);
        }
        gone
    }

    /// Drops the session whatever the failure was (e.g. a transaction that
    /// could not even be rolled back), so the next use reconnects.
    pub fn discard(&mut self, why: &dyn std::fmt::Display) {
        if self.conn.take().is_some() {
            self.reconnect.lost(why);
        }
    }

    /// The reconnection state (for waiting on the server to come back).
    pub fn reconnect(&mut self) -> &mut Reconnect {
        &mut self.reconnect
    }

    /// Installs a session obtained through [`PgExclusive::reconnect`].
    pub fn install(&mut self, conn: PgConn) -> &mut PgConn {
        self.conn.insert(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_seconds() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(3200));
        assert_eq!(backoff(6), MAX_BACKOFF);
        assert_eq!(backoff(60), MAX_BACKOFF);
    }

    #[test]
    fn application_name_names_schema_and_role_within_63_bytes() {
        assert_eq!(application_name("shop", "writer"), "mortar/shop/writer");
        let long = application_name(&"s".repeat(80), "writer");
        assert_eq!(long.len(), 63);
    }

    #[test]
    fn a_url_application_name_is_kept() {
        let t = PgTarget::new("postgres://u@h/db?application_name=mine", "s", "writer").unwrap();
        assert_eq!(t.config.get_application_name(), Some("mine"));
        let t = t.with_role("reader");
        assert_eq!(t.config.get_application_name(), Some("mine"));
        let t = PgTarget::new("postgres://u@h/db", "s", "writer").unwrap();
        assert_eq!(
            t.with_role("reader").config.get_application_name(),
            Some("mortar/s/reader")
        );
        assert_eq!(t.config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
    }

    #[tokio::test]
    async fn an_unreachable_server_is_reported_quickly_during_backoff() {
        // Port 1 on loopback: nothing listens there; refused at once.
        let target = PgTarget::new("postgres://u@127.0.0.1:1/db", "s", "writer").unwrap();
        let mut reconnect = Reconnect::new(target);
        let first = reconnect.connect().await.unwrap_err();
        assert!(matches!(
            first,
            StoreError::Unavailable {
                retry_in_ms: 100,
                ..
            }
        ));
        // Inside the backoff window: no attempt, the same clear error.
        let second = reconnect.connect().await.unwrap_err();
        assert!(
            matches!(second, StoreError::Unavailable { retry_in_ms, .. } if retry_in_ms <= 100)
        );
        assert!(second.to_string().contains("unreachable"), "{second}");
    }
}
