//! Users, refresh tokens and signing keys in a SQLite file.
//!
//! Rotation and refresh-token exchange run in `BEGIN IMMEDIATE`
//! transactions (the write lock taken up front), so instances sharing the
//! file never rotate twice or exchange one refresh token twice. The file
//! is readable by its owner only.

use std::path::Path;
use std::time::Duration;

use mortar_auth::SigningKey;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use shop_sqlite::SharedConnection;

use super::{Exchange, StoreError, StoredKey, User, scopes_of, to_stored};

/// A refresh token's row: user, family, expiry, used, revoked.
type RefreshRow = (String, String, i64, Option<i64>, Option<i64>);

/// The SQLite database; cheap to clone.
#[derive(Clone)]
pub(crate) struct SqliteStore {
    db: SharedConnection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash  BLOB PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    family      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    revoked_at  INTEGER
);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens(family);
CREATE TABLE IF NOT EXISTS signing_keys (
    kid         TEXT PRIMARY KEY,
    seed        BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
);";

/// WAL, full sync (an issued token's key must survive a crash), foreign
/// keys, a busy timeout, the schema.
fn setup(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.execute_batch(SCHEMA)
}

/// Owner-only permissions: the file holds password hashes and keys.
fn restrict(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        StoreError::Permissions {
            path: path.to_owned(),
            source,
        }
    })
}

fn stored_key(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Vec<u8>, i64, Option<i64>)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
}

/// Inserts a fresh signing key as the current one.
fn insert_key(tx: &rusqlite::Transaction<'_>, now: u64) -> Result<SigningKey, StoreError> {
    let key = SigningKey::generate()?;
    tx.execute(
        "INSERT INTO signing_keys (kid, seed, created_at) VALUES (?1, ?2, ?3)",
        params![key.kid(), &key.seed()[..], now as i64],
    )?;
    Ok(key)
}

impl SqliteStore {
    /// Opens (and creates) the database. Instances starting together may
    /// race to create the schema; a locked file is retried for a while.
    pub(crate) async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let db = SharedConnection::open(path, setup).await?;
        // Before any user or key is stored in it.
        restrict(path)?;
        Ok(SqliteStore { db })
    }

    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.db.with(f).await
    }

    /// A cheap query proving the database is usable.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        self.with(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    /// Adds a user; the username must be new.
    pub(crate) async fn add_user(&self, user: User, now: u64) -> Result<(), StoreError> {
        self.with(move |conn| {
            let result = conn.execute(
                "INSERT INTO users (id, username, password_hash, scopes, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![user.id, user.username, user.password_hash, user.scopes.join(" "), now as i64],
            );
            match result {
                Ok(_) => Ok(()),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
                {
                    Err(StoreError::UsernameTaken(user.username))
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn user_where(
        &self,
        column: &'static str,
        value: String,
    ) -> Result<Option<User>, StoreError> {
        self.with(move |conn| {
            let sql = format!(
                "SELECT id, username, password_hash, scopes FROM users WHERE {column} = ?1"
            );
            Ok(conn
                .query_row(&sql, [value], |row| {
                    Ok(User {
                        id: row.get(0)?,
                        username: row.get(1)?,
                        password_hash: row.get(2)?,
                        scopes: scopes_of(row.get(3)?),
                    })
                })
                .optional()?)
        })
        .await
    }

    /// The user with this (normalized) username.
    pub(crate) async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        self.user_where("username", username.to_owned()).await
    }

    /// The user with this id (token subject).
    pub(crate) async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.user_where("id", id.to_owned()).await
    }

    /// Stores a new refresh token (by its hash) starting `family`.
    pub(crate) async fn add_refresh(
        &self,
        token_hash: [u8; 32],
        user_id: &str,
        family: &str,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let (user_id, family) = (user_id.to_owned(), family.to_owned());
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![&token_hash[..], user_id, family, expires_at as i64],
            )?;
            Ok(())
        })
        .await
    }

    /// Exchanges the refresh token hashed `presented` for the one hashed
    /// `next` (same family, expiring at `next_expires_at`), once. A second
    /// exchange of one token revokes its whole family: one of the two
    /// parties holding it is not the user.
    pub(crate) async fn exchange_refresh(
        &self,
        presented: [u8; 32],
        next: [u8; 32],
        now: u64,
        next_expires_at: u64,
    ) -> Result<Exchange, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row: Option<RefreshRow> = tx
                .query_row(
                    "SELECT user_id, family, expires_at, used_at, revoked_at FROM refresh_tokens WHERE token_hash = ?1",
                    [&presented[..]],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()?;
            let Some((user_id, family, expires_at, used_at, revoked_at)) = row else {
                return Ok(Exchange::Unknown);
            };
            if used_at.is_some() || revoked_at.is_some() {
                tx.execute(
                    "UPDATE refresh_tokens SET revoked_at = ?1 WHERE family = ?2 AND revoked_at IS NULL",
                    params![now as i64, family],
                )?;
                tx.commit()?;
                return Ok(Exchange::Reused);
            }
            if (expires_at as u64) <= now {
                return Ok(Exchange::Expired);
            }
            tx.execute(
                "UPDATE refresh_tokens SET used_at = ?1 WHERE token_hash = ?2",
                params![now as i64, &presented[..]],
            )?;
            tx.execute(
                "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![&next[..], user_id, family, next_expires_at as i64],
            )?;
            // Expired rows are of no use to anyone.
            tx.execute(
                "DELETE FROM refresh_tokens WHERE expires_at < ?1",
                [now as i64],
            )?;
            tx.commit()?;
            Ok(Exchange::Done { user_id })
        })
        .await
    }

    /// The current signing key, creating the first one if there is none.
    pub(crate) async fn current_key(&self, now: u64) -> Result<SigningKey, StoreError> {
        self.with(move |conn| {
            let found = conn
                .query_row(
                    "SELECT seed, created_at, retired_at FROM signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC, rowid DESC LIMIT 1",
                    [],
                    stored_key,
                )
                .optional()?;
            if let Some(found) = found {
                return Ok(to_stored(found)?.key);
            }
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Another instance may have created it while we waited.
            let found = tx
                .query_row(
                    "SELECT seed, created_at, retired_at FROM signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC, rowid DESC LIMIT 1",
                    [],
                    stored_key,
                )
                .optional()?;
            let key = match found {
                Some(found) => to_stored(found)?.key,
                None => insert_key(&tx, now)?,
            };
            tx.commit()?;
            Ok(key)
        })
        .await
    }

    /// Makes a new key the signing key when the current one is at least
    /// `max_age` old (always, with `None`). The old one is retired but
    /// stays published for `retention`; keys retired longer ago are
    /// deleted. Returns the new key, or `None` when no rotation was due.
    pub(crate) async fn rotate(
        &self,
        max_age: Option<Duration>,
        retention: Duration,
        now: u64,
    ) -> Result<Option<SigningKey>, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(max_age) = max_age {
                let newest: Option<i64> = tx.query_row(
                    "SELECT MAX(created_at) FROM signing_keys WHERE retired_at IS NULL",
                    [],
                    |r| r.get(0),
                )?;
                if newest.is_some_and(|c| (c as u64).saturating_add(max_age.as_secs()) > now) {
                    return Ok(None);
                }
            }
            tx.execute(
                "UPDATE signing_keys SET retired_at = ?1 WHERE retired_at IS NULL",
                [now as i64],
            )?;
            let key = insert_key(&tx, now)?;
            tx.execute(
                "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at + ?1 < ?2",
                params![retention.as_secs() as i64, now as i64],
            )?;
            tx.commit()?;
            Ok(Some(key))
        })
        .await
    }

    /// The keys verifiers must know: the current one and those retired
    /// within `retention`, newest first.
    pub(crate) async fn published_keys(
        &self,
        retention: Duration,
        now: u64,
    ) -> Result<Vec<StoredKey>, StoreError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seed, created_at, retired_at FROM signing_keys WHERE retired_at IS NULL OR retired_at + ?1 >= ?2 ORDER BY created_at DESC, rowid DESC",
            )?;
            let rows = stmt.query_map(
                params![retention.as_secs() as i64, now as i64],
                stored_key,
            )?;
            rows.map(|r| to_stored(r?)).collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn the_file_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/identity.db");
        SqliteStore::open(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
