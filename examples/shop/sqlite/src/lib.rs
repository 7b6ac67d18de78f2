//! One SQLite connection shared by a shop service's store (catalog,
//! identity): opened with retries, used from blocking threads.
//!
//! Why retries: instances of a service start together and race to switch
//! the file to WAL and create the schema; SQLite answers such a race with
//! "database is locked" at once (its busy handler does not cover it), so
//! opening is retried for a few seconds before giving up.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

/// How long opening keeps retrying a locked database.
const OPEN_RETRY_LIMIT: Duration = Duration::from_secs(5);

/// Longest pause between two attempts to open.
const MAX_OPEN_BACKOFF: Duration = Duration::from_millis(200);

/// What can go wrong opening or using the connection.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    /// The database's directory cannot be created.
    #[error("cannot create the directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite refused.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The blocking task running the statement failed (a panic, or a
    /// poisoned lock after one).
    #[error("the database task failed: {0}")]
    Task(String),
}

/// The connection; cheap to clone.
#[derive(Clone)]
pub struct SharedConnection {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SharedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConnection").finish_non_exhaustive()
    }
}

impl SharedConnection {
    /// Opens (and creates) the database at `path`, creating its directory,
    /// then runs `setup` on it (pragmas, schema); both are retried while
    /// the file is locked by another instance doing the same.
    pub async fn open(
        path: &Path,
        setup: fn(&Connection) -> rusqlite::Result<()>,
    ) -> Result<SharedConnection, SqliteError> {
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, SqliteError> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| SqliteError::Dir {
                    path: dir.to_owned(),
                    source,
                })?;
            }
            let mut delay = Duration::from_millis(5);
            let mut waited = Duration::ZERO;
            loop {
                let opened = Connection::open(&path).and_then(|conn| setup(&conn).map(|()| conn));
                match opened {
                    Err(e) if is_busy(&e) && waited < OPEN_RETRY_LIMIT => {
                        std::thread::sleep(delay);
                        waited += delay;
                        delay = (delay * 2).min(MAX_OPEN_BACKOFF);
                    }
                    other => return Ok(other?),
                }
            }
        })
        .await
        .map_err(|e| SqliteError::Task(e.to_string()))??;
        Ok(SharedConnection {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection in a blocking thread.
    pub async fn with<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<SqliteError> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| SqliteError::Task("connection lock poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| E::from(SqliteError::Task(e.to_string())))?
    }
}

/// SQLite's "busy" and "locked": another connection holds the file.
fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(conn: &Connection) -> rusqlite::Result<()> {
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch("CREATE TABLE IF NOT EXISTS t (n INTEGER NOT NULL)")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn instances_opening_together_all_get_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/db.sqlite");
        let opens: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(async move { SharedConnection::open(&path, setup).await })
            })
            .collect();
        for open in opens {
            let db = open.await.unwrap().unwrap();
            db.with(|conn| {
                conn.execute("INSERT INTO t (n) VALUES (1)", [])
                    .map_err(SqliteError::from)
            })
            .await
            .unwrap();
        }
        let db = SharedConnection::open(&path, setup).await.unwrap();
        let count: i64 = db
            .with(|conn| {
                conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                    .map_err(SqliteError::from)
            })
            .await
            .unwrap();
        assert_eq!(count, 8);
    }

    #[tokio::test]
    async fn a_directory_that_cannot_be_created_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"not a directory").unwrap();
        let err = SharedConnection::open(&file.join("db.sqlite"), setup)
            .await
            .unwrap_err();
        assert!(matches!(err, SqliteError::Dir { .. }), "{err}");
    }
}
