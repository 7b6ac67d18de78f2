//! Users, refresh tokens and signing keys in a PostgreSQL schema of their own.
//!
//! Single statements run on a shared session; the transactions (refresh
//! exchange, key creation and rotation) on a session of their own, taken
//! in turn. Instances serialize through the database: an exchange locks
//! the token's row (`FOR UPDATE`: a concurrent exchange of the same token
//! waits, then sees it used), key creation and rotation lock the keys
//! table, so two instances never rotate twice. Both sessions reconnect
//! after a drop (mortar-eventstore's sessions).

use std::time::Duration;

use mortar_auth::SigningKey;
use mortar_eventstore::{PgExclusive, PgSession, PgTarget, migrate_schema};
use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Transaction};

use super::{Exchange, StoreError, StoredKey, User, scopes_of, to_stored};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash  BYTEA PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    family      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    revoked_at  BIGINT
);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens(family);
CREATE TABLE IF NOT EXISTS signing_keys (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY,
    kid         TEXT PRIMARY KEY,
    seed        BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);";

const CURRENT_KEY: &str = "SELECT seed, created_at, retired_at FROM signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC, seq DESC LIMIT 1";

/// Blocks other key creations and rotations (and itself) until commit;
/// readers of the keys are not blocked.
const LOCK_KEYS: &str = "LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE";

pub(crate) struct PostgresStore {
    /// For transactions.
    writer: Mutex<PgExclusive>,
    /// For single statements.
    session: PgSession,
}

impl PostgresStore {
    /// Connects, and creates the schema and tables when missing (instances
    /// starting together take turns: the migration holds a lock).
    pub(crate) async fn connect(conninfo: &str, schema: &str) -> Result<PostgresStore, StoreError> {
        let target = PgTarget::new(conninfo, schema, "writer")?;
        let mut writer = PgExclusive::connect(target.clone()).await?;
        migrate_schema(writer.get().await?.client_mut(), schema, SCHEMA).await?;
        Ok(PostgresStore {
            writer: Mutex::new(writer),
            session: PgSession::connect(target.with_role("reader")).await?,
        })
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        Ok(self.session.query(sql, params).await?)
    }

    /// Notes a failed transaction: a dropped session is replaced for the
    /// next call (the work itself is not retried).
    fn settle<T>(writer: &mut PgExclusive, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(StoreError::Postgres(e)) = &result {
            writer.check(e);
        }
        result
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        self.query("SELECT 1", &[]).await.map(drop)
    }

    pub(crate) async fn add_user(&self, user: User, now: u64) -> Result<(), StoreError> {
        let conn = self.session.get().await?;
        let result = conn
            .client()
            .execute(
                "INSERT INTO users (id, username, password_hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5)",
                &[&user.id, &user.username, &user.password_hash, &user.scopes.join(" "), &(now as i64)],
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                Err(StoreError::UsernameTaken(user.username))
            }
            Err(e) => {
                if mortar_eventstore::is_connection_error(&e) {
                    self.session
                        .discard(&conn, &mortar_eventstore::describe_postgres_error(&e))
                        .await;
                }
                Err(e.into())
            }
        }
    }

    async fn user_where(&self, sql: &str, value: &str) -> Result<Option<User>, StoreError> {
        let rows = self.query(sql, &[&value]).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        Ok(Some(User {
            id: row.try_get(0)?,
            username: row.try_get(1)?,
            password_hash: row.try_get(2)?,
            scopes: scopes_of(row.try_get(3)?),
        }))
    }

    pub(crate) async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        self.user_where(
            "SELECT id, username, password_hash, scopes FROM users WHERE username = $1",
            username,
        )
        .await
    }

    pub(crate) async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.user_where(
            "SELECT id, username, password_hash, scopes FROM users WHERE id = $1",
            id,
        )
        .await
    }

    pub(crate) async fn add_refresh(
        &self,
        token_hash: [u8; 32],
        user_id: &str,
        family: &str,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let conn = self.session.get().await?;
        let result = conn
            .client()
            .execute(
                "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at) VALUES ($1, $2, $3, $4)",
                &[&&token_hash[..], &user_id, &family, &(expires_at as i64)],
            )
            .await;
        if let Err(e) = &result
            && mortar_eventstore::is_connection_error(e)
        {
            self.session
                .discard(&conn, &mortar_eventstore::describe_postgres_error(e))
                .await;
        }
        result.map(drop).map_err(StoreError::from)
    }

    pub(crate) async fn exchange_refresh(
        &self,
        presented: [u8; 32],
        next: [u8; 32],
        now: u64,
        next_expires_at: u64,
    ) -> Result<Exchange, StoreError> {
        let mut writer = self.writer.lock().await;
        let result = exchange(
            &mut writer,
            presented,
            next,
            now as i64,
            next_expires_at as i64,
        )
        .await;
        Self::settle(&mut writer, result)
    }

    pub(crate) async fn current_key(&self, now: u64) -> Result<SigningKey, StoreError> {
        if let Some(row) = self.query(CURRENT_KEY, &[]).await?.first() {
            return Ok(to_stored(key_row(row)?)?.key);
        }
        let mut writer = self.writer.lock().await;
        let result = create_first_key(&mut writer, now as i64).await;
        Self::settle(&mut writer, result)
    }

    pub(crate) async fn rotate(
        &self,
        max_age: Option<Duration>,
        retention: Duration,
        now: u64,
    ) -> Result<Option<SigningKey>, StoreError> {
        let mut writer = self.writer.lock().await;
        let result = rotate(&mut writer, max_age, retention.as_secs() as i64, now as i64).await;
        Self::settle(&mut writer, result)
    }

    pub(crate) async fn published_keys(
        &self,
        retention: Duration,
        now: u64,
    ) -> Result<Vec<StoredKey>, StoreError> {
        let rows = self
            .query(
                "SELECT seed, created_at, retired_at FROM signing_keys WHERE retired_at IS NULL OR retired_at + $1 >= $2 ORDER BY created_at DESC, seq DESC",
                &[&(retention.as_secs() as i64), &(now as i64)],
            )
            .await?;
        rows.iter().map(|row| to_stored(key_row(row)?)).collect()
    }
}

fn key_row(row: &Row) -> Result<(Vec<u8>, i64, Option<i64>), StoreError> {
    Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
}

/// Inserts a fresh signing key as the current one.
async fn insert_key(tx: &Transaction<'_>, now: i64) -> Result<SigningKey, StoreError> {
    let key = SigningKey::generate()?;
    tx.execute(
        "INSERT INTO signing_keys (kid, seed, created_at) VALUES ($1, $2, $3)",
        &[&key.kid(), &&key.seed()[..], &now],
    )
    .await?;
    Ok(key)
}

/// Exchanges a refresh token in one transaction; see `Store::exchange_refresh`.
/// A transaction dropped before its commit rolls back.
async fn exchange(
    writer: &mut PgExclusive,
    presented: [u8; 32],
    next: [u8; 32],
    now: i64,
    next_expires_at: i64,
) -> Result<Exchange, StoreError> {
    let conn = writer.get().await?;
    let tx = conn.client_mut().transaction().await?;
    // The row lock makes a concurrent exchange of this token wait, then
    // read it as used.
    let row = tx
        .query_opt(
            "SELECT user_id, family, expires_at, used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
            &[&&presented[..]],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Exchange::Unknown);
    };
    let user_id: String = row.try_get(0)?;
    let family: String = row.try_get(1)?;
    let expires_at: i64 = row.try_get(2)?;
    let used_at: Option<i64> = row.try_get(3)?;
    let revoked_at: Option<i64> = row.try_get(4)?;
    if used_at.is_some() || revoked_at.is_some() {
        tx.execute(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family = $2 AND revoked_at IS NULL",
            &[&now, &family],
        )
        .await?;
        tx.commit().await?;
        return Ok(Exchange::Reused);
    }
    if expires_at <= now {
        return Ok(Exchange::Expired);
    }
    tx.execute(
        "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2",
        &[&now, &&presented[..]],
    )
    .await?;
    tx.execute(
        "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at) VALUES ($1, $2, $3, $4)",
        &[&&next[..], &user_id, &family, &next_expires_at],
    )
    .await?;
    // Expired rows are of no use to anyone.
    tx.execute("DELETE FROM refresh_tokens WHERE expires_at < $1", &[&now])
        .await?;
    tx.commit().await?;
    Ok(Exchange::Done { user_id })
}

/// Creates the first signing key unless another instance just did.
async fn create_first_key(writer: &mut PgExclusive, now: i64) -> Result<SigningKey, StoreError> {
    let conn = writer.get().await?;
    let tx = conn.client_mut().transaction().await?;
    tx.batch_execute(LOCK_KEYS).await?;
    // Another instance may have created it while we waited.
    if let Some(row) = tx.query_opt(CURRENT_KEY, &[]).await? {
        return Ok(to_stored(key_row(&row)?)?.key);
    }
    let key = insert_key(&tx, now).await?;
    tx.commit().await?;
    Ok(key)
}

/// Rotates the signing key in one transaction; see `Store::rotate`.
async fn rotate(
    writer: &mut PgExclusive,
    max_age: Option<Duration>,
    retention: i64,
    now: i64,
) -> Result<Option<SigningKey>, StoreError> {
    let conn = writer.get().await?;
    let tx = conn.client_mut().transaction().await?;
    tx.batch_execute(LOCK_KEYS).await?;
    if let Some(max_age) = max_age {
        let newest: Option<i64> = tx
            .query_one(
                "SELECT MAX(created_at) FROM signing_keys WHERE retired_at IS NULL",
                &[],
            )
            .await?
            .try_get(0)?;
        if newest.is_some_and(|c| c.saturating_add(max_age.as_secs() as i64) > now) {
            return Ok(None);
        }
    }
    tx.execute(
        "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL",
        &[&now],
    )
    .await?;
    let key = insert_key(&tx, now).await?;
    tx.execute(
        "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at + $1 < $2",
        &[&retention, &now],
    )
    .await?;
    tx.commit().await?;
    Ok(Some(key))
}
