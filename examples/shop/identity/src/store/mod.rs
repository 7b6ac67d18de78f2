//! Users, refresh tokens and signing keys, in SQLite or PostgreSQL.
//!
//! `MORTAR_STORE_URL` picks the backend, as for every mortar store:
//! `sqlite:///path/identity.db` on one machine, `postgres://…?schema=identity`
//! for scale-out (identity's own schema, created when missing).
//!
//! The database is the one truth every identity instance shares: the
//! current signing key is the newest unretired row, so a rotation made by
//! one instance is used by all of them from their next token on. Rotation
//! and refresh-token exchange are serialized by the database (SQLite's
//! `BEGIN IMMEDIATE`, PostgreSQL's row and table locks), so two instances
//! never rotate twice or exchange one refresh token twice.
//!
//! Secrets at rest: passwords only as argon2id hashes, refresh tokens only
//! as SHA-256 hashes (a stolen database yields no usable refresh token);
//! a SQLite file is readable by its owner only, a PostgreSQL schema by the
//! roles granted it. Private signing keys are stored as they are; the
//! secrets work (CMS) will encrypt them.

mod postgres;
mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mortar_auth::{KeyError, SigningKey};
use mortar_eventstore::StoreUrl;

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error(transparent)]
    Db(#[from] shop_sqlite::SqliteError),
    #[error("cannot restrict the permissions of {path}: {source}")]
    Permissions {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Postgres(#[from] mortar_eventstore::StoreError),
    #[error("signing key: {0}")]
    Key(#[from] KeyError),
    #[error("the username {0:?} is taken")]
    UsernameTaken(String),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        StoreError::Postgres(e.into())
    }
}

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    /// The stable subject of the user's tokens.
    pub(crate) id: String,
    pub(crate) username: String,
    /// The argon2id hash in PHC string form.
    pub(crate) password_hash: String,
    /// Granted scopes.
    pub(crate) scopes: Vec<String>,
}

/// A signing key as stored, with its lifecycle.
#[derive(Debug, Clone)]
pub(crate) struct StoredKey {
    pub(crate) key: SigningKey,
    pub(crate) created_at: u64,
    /// `None` while it is the current signing key.
    pub(crate) retired_at: Option<u64>,
}

/// What exchanging a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Exchange {
    /// Exchanged: the token is used up, its successor stored.
    Done { user_id: String },
    /// No such token.
    Unknown,
    /// Past its expiry.
    Expired,
    /// Already exchanged (or its family revoked): presumably stolen, so
    /// the whole family is revoked now.
    Reused,
}

fn scopes_of(text: String) -> Vec<String> {
    text.split_ascii_whitespace().map(str::to_owned).collect()
}

fn to_stored(
    (seed, created, retired): (Vec<u8>, i64, Option<i64>),
) -> Result<StoredKey, StoreError> {
    Ok(StoredKey {
        key: SigningKey::from_seed_slice(&seed)?,
        created_at: created as u64,
        retired_at: retired.map(|r| r as u64),
    })
}

/// Identity's database; cheap to clone.
#[derive(Clone)]
pub(crate) enum Store {
    Sqlite(sqlite::SqliteStore),
    Postgres(Arc<postgres::PostgresStore>),
}

/// Calls the same method on whichever backend the store is.
macro_rules! dispatch {
    ($self:ident.$method:ident($($arg:expr),*)) => {
        match $self {
            Store::Sqlite(s) => s.$method($($arg),*).await,
            Store::Postgres(s) => s.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// Opens the store `url` names, creating its tables (and on PostgreSQL
    /// its schema) when missing.
    pub(crate) async fn open(url: &StoreUrl) -> Result<Store, StoreError> {
        Ok(match url {
            StoreUrl::Sqlite(path) => Store::Sqlite(sqlite::SqliteStore::open(path).await?),
            StoreUrl::Postgres { conninfo, schema } => Store::Postgres(Arc::new(
                postgres::PostgresStore::connect(conninfo, schema).await?,
            )),
        })
    }

    /// A cheap query proving the database is usable.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self.ping())
    }

    /// Adds a user; the username must be new.
    pub(crate) async fn add_user(&self, user: User, now: u64) -> Result<(), StoreError> {
        dispatch!(self.add_user(user, now))
    }

    /// The user with this (normalized) username.
    pub(crate) async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        dispatch!(self.user_by_name(username))
    }

    /// The user with this id (token subject).
    pub(crate) async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        dispatch!(self.user_by_id(id))
    }

    /// Stores a new refresh token (by its hash) starting `family`.
    pub(crate) async fn add_refresh(
        &self,
        token_hash: [u8; 32],
        user_id: &str,
        family: &str,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        dispatch!(self.add_refresh(token_hash, user_id, family, expires_at))
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
        dispatch!(self.exchange_refresh(presented, next, now, next_expires_at))
    }

    /// The current signing key, creating the first one if there is none.
    pub(crate) async fn current_key(&self, now: u64) -> Result<SigningKey, StoreError> {
        dispatch!(self.current_key(now))
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
        dispatch!(self.rotate(max_age, retention, now))
    }

    /// The keys verifiers must know: the current one and those retired
    /// within `retention`, newest first.
    pub(crate) async fn published_keys(
        &self,
        retention: Duration,
        now: u64,
    ) -> Result<Vec<StoredKey>, StoreError> {
        dispatch!(self.published_keys(retention, now))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use mortar_test_support::stores::TestStores;

    use super::*;

    async fn open(stores: &TestStores) -> Store {
        Store::open(&StoreUrl::parse(&stores.events_url).unwrap())
            .await
            .unwrap()
    }

    fn user(id: &str, name: &str) -> User {
        User {
            id: id.into(),
            username: name.into(),
            password_hash: "$argon2id$x".into(),
            scopes: vec!["orders".into()],
        }
    }

    async fn usernames_are_unique_and_a_duplicate_changes_nothing(stores: TestStores) {
        let s = open(&stores).await;
        s.ping().await.unwrap();
        s.add_user(user("u1", "ann"), 1).await.unwrap();
        assert!(matches!(
            s.add_user(user("u2", "ann"), 2).await,
            Err(StoreError::UsernameTaken(_))
        ));
        assert_eq!(s.user_by_name("ann").await.unwrap().unwrap().id, "u1");
        assert!(s.user_by_id("u2").await.unwrap().is_none());
        assert_eq!(
            s.user_by_id("u1").await.unwrap().unwrap().scopes,
            ["orders"]
        );
    }

    async fn a_refresh_token_is_exchanged_once_and_reuse_revokes_its_family(stores: TestStores) {
        let s = open(&stores).await;
        s.add_user(user("u1", "ann"), 1).await.unwrap();
        s.add_refresh([1; 32], "u1", "f1", 100).await.unwrap();
        assert_eq!(
            s.exchange_refresh([1; 32], [2; 32], 10, 200).await.unwrap(),
            Exchange::Done {
                user_id: "u1".into()
            }
        );
        // The old one again: theft assumed, the family (incl. [2]) revoked.
        assert_eq!(
            s.exchange_refresh([1; 32], [3; 32], 11, 200).await.unwrap(),
            Exchange::Reused
        );
        assert_eq!(
            s.exchange_refresh([2; 32], [4; 32], 12, 200).await.unwrap(),
            Exchange::Reused
        );
        assert_eq!(
            s.exchange_refresh([9; 32], [5; 32], 12, 200).await.unwrap(),
            Exchange::Unknown
        );
        s.add_refresh([6; 32], "u1", "f2", 100).await.unwrap();
        assert_eq!(
            s.exchange_refresh([6; 32], [7; 32], 100, 200)
                .await
                .unwrap(),
            Exchange::Expired
        );
    }

    async fn concurrent_exchanges_of_one_refresh_token_succeed_once(stores: TestStores) {
        let url = StoreUrl::parse(&stores.events_url).unwrap();
        let s = Store::open(&url).await.unwrap();
        s.add_user(user("u1", "ann"), 1).await.unwrap();
        s.add_refresh([1; 32], "u1", "f1", 100).await.unwrap();
        // Separate instances (separate sessions), the same token at once.
        let tasks: Vec<_> = (0..4u8)
            .map(|i| {
                let url = url.clone();
                tokio::spawn(async move {
                    let s = Store::open(&url).await.unwrap();
                    s.exchange_refresh([1; 32], [10 + i; 32], 10, 200)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap());
        }
        let done = outcomes
            .iter()
            .filter(|o| matches!(o, Exchange::Done { .. }))
            .count();
        assert_eq!(done, 1, "{outcomes:?}");
        assert_eq!(
            outcomes.len() - done,
            outcomes.iter().filter(|o| **o == Exchange::Reused).count()
        );
    }

    async fn rotation_keeps_retired_keys_published_for_the_retention(stores: TestStores) {
        let s = open(&stores).await;
        let hour = Duration::from_secs(3600);
        let first = s.current_key(1000).await.unwrap();
        assert_eq!(s.current_key(1001).await.unwrap().kid(), first.kid());
        // Not due yet.
        assert!(s.rotate(Some(hour), hour, 2000).await.unwrap().is_none());
        let second = s
            .rotate(Some(hour), hour, 1000 + 3600)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.current_key(4700).await.unwrap().kid(), second.kid());
        let published = s.published_keys(hour, 4700).await.unwrap();
        let kids: Vec<&str> = published.iter().map(|k| k.key.kid()).collect();
        assert_eq!(kids, [second.kid(), first.kid()]);
        assert_eq!(published[1].retired_at, Some(4600));
        assert_eq!(published[1].created_at, 1000);
        // Past the retention the old key is no longer published, then gone.
        let published = s.published_keys(hour, 4600 + 3601).await.unwrap();
        assert_eq!(published.len(), 1);
        let third = s.rotate(None, hour, 4600 + 3601).await.unwrap().unwrap();
        let all = s
            .published_keys(Duration::from_secs(1 << 40), 8202)
            .await
            .unwrap();
        let kids: Vec<&str> = all.iter().map(|k| k.key.kid()).collect();
        assert_eq!(
            kids,
            [third.kid(), second.kid()],
            "the first key was deleted"
        );
    }

    async fn instances_starting_together_agree_on_one_key(stores: TestStores) {
        let url = StoreUrl::parse(&stores.events_url).unwrap();
        let mut kids = Vec::new();
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move {
                    let s = Store::open(&url).await?;
                    s.current_key(1).await.map(|k| k.kid().to_owned())
                })
            })
            .collect();
        for t in tasks {
            kids.push(t.await.unwrap().unwrap());
        }
        kids.dedup();
        assert_eq!(kids.len(), 1);
    }

    async fn instances_rotating_together_rotate_once(stores: TestStores) {
        let url = StoreUrl::parse(&stores.events_url).unwrap();
        let s = Store::open(&url).await.unwrap();
        s.current_key(1000).await.unwrap();
        let hour = Duration::from_secs(3600);
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move {
                    let s = Store::open(&url).await.unwrap();
                    s.rotate(Some(hour), hour, 5000).await.unwrap()
                })
            })
            .collect();
        let mut rotated = 0;
        for t in tasks {
            rotated += usize::from(t.await.unwrap().is_some());
        }
        assert_eq!(rotated, 1);
        assert_eq!(s.published_keys(hour, 5000).await.unwrap().len(), 2);
    }

    mortar_test_support::backend_suite!(
        usernames_are_unique_and_a_duplicate_changes_nothing,
        a_refresh_token_is_exchanged_once_and_reuse_revokes_its_family,
        concurrent_exchanges_of_one_refresh_token_succeed_once,
        rotation_keeps_retired_keys_published_for_the_retention,
        instances_starting_together_agree_on_one_key,
        instances_rotating_together_rotate_once,
    );
}
