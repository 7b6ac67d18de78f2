//! The catalog's products, in SQLite or PostgreSQL.
//!
//! `MORTAR_STORE_URL` picks the backend, as for every mortar store:
//! `sqlite:///path/catalog.db` on one machine, `postgres://…?schema=catalog`
//! for scale-out (the catalog's own schema, created when missing). Both
//! behave the same: the same products, keyset pages, and a duplicate SKU
//! refused without changing anything.

mod postgres;
mod sqlite;

use mortar_eventstore::StoreUrl;
use serde::{Deserialize, Serialize};

/// A product as the catalog publishes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Product {
    pub(crate) id: i64,
    pub(crate) sku: String,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) price_cents: i64,
    pub(crate) currency: String,
}

/// A product to be added.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewProduct {
    pub(crate) sku: String,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) description: String,
    pub(crate) price_cents: i64,
    #[serde(default = "default_currency")]
    pub(crate) currency: String,
}

fn default_currency() -> String {
    "EUR".to_owned()
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error(transparent)]
    Db(#[from] shop_sqlite::SqliteError),
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Postgres(#[from] mortar_eventstore::StoreError),
    #[error("a product with SKU {0:?} already exists")]
    DuplicateSku(String),
    /// PostgreSQL answered an insert without the row it made.
    #[error("the database answered without the new row: {0}")]
    NoRow(String),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        StoreError::Postgres(e.into())
    }
}

/// The sample products `CATALOG_SEED` adds: SKU, name, description, price.
const SAMPLE: &[(&str, &str, &str, i64)] = &[
    (
        "MUG-001",
        "Mortar mug",
        "A 350 ml stoneware mug that survives being dropped.",
        1290,
    ),
    (
        "TEE-001",
        "Retry tee",
        "Cotton T-shirt printed with an exponential backoff curve.",
        2490,
    ),
    (
        "HOOD-001",
        "Circuit breaker hoodie",
        "Warm when things are open, cosy when half-open.",
        5490,
    ),
    (
        "CAP-001",
        "Idempotency cap",
        "Wear it twice, it still counts once.",
        1990,
    ),
    (
        "BOOK-001",
        "Queues, a field guide",
        "How backlogs grow, and how they drain.",
        3200,
    ),
    (
        "STICK-001",
        "Sticker pack",
        "Twelve stickers for laptops that never go down.",
        490,
    ),
];

/// The catalog's database; cheap to clone.
#[derive(Clone)]
pub(crate) enum Store {
    Sqlite(sqlite::SqliteStore),
    Postgres(std::sync::Arc<postgres::PostgresStore>),
}

impl Store {
    /// Opens the store `url` names, creating its tables (and on PostgreSQL
    /// its schema) when missing.
    pub(crate) async fn open(url: &StoreUrl) -> Result<Store, StoreError> {
        Ok(match url {
            StoreUrl::Sqlite(path) => Store::Sqlite(sqlite::SqliteStore::open(path).await?),
            StoreUrl::Postgres { conninfo, schema } => Store::Postgres(std::sync::Arc::new(
                postgres::PostgresStore::connect(conninfo, schema).await?,
            )),
        })
    }

    /// Adds the sample products that are missing; returns how many were added.
    pub(crate) async fn seed(&self) -> Result<usize, StoreError> {
        match self {
            Store::Sqlite(s) => s.seed().await,
            Store::Postgres(s) => s.seed().await,
        }
    }

    /// A cheap query proving the database is usable.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.ping().await,
            Store::Postgres(s) => s.ping().await,
        }
    }

    /// Products with id greater than `after`, in id order (keyset pagination:
    /// stable while products are added, and cheap at any depth).
    pub(crate) async fn list(&self, after: i64, limit: u32) -> Result<Vec<Product>, StoreError> {
        match self {
            Store::Sqlite(s) => s.list(after, limit).await,
            Store::Postgres(s) => s.list(after, limit).await,
        }
    }

    /// One product by id.
    pub(crate) async fn get(&self, id: i64) -> Result<Option<Product>, StoreError> {
        match self {
            Store::Sqlite(s) => s.get(id).await,
            Store::Postgres(s) => s.get(id).await,
        }
    }

    /// Adds a product; the SKU must be new.
    pub(crate) async fn insert(&self, new: NewProduct) -> Result<Product, StoreError> {
        match self {
            Store::Sqlite(s) => s.insert(new).await,
            Store::Postgres(s) => s.insert(new).await,
        }
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

    async fn seed_is_idempotent_and_pages_are_keyset(stores: TestStores) {
        let store = open(&stores).await;
        assert_eq!(store.seed().await.unwrap(), SAMPLE.len());
        assert_eq!(store.seed().await.unwrap(), 0);
        let first = store.list(0, 4).await.unwrap();
        assert_eq!(first.len(), 4);
        assert_eq!(first[0].sku, "MUG-001");
        let rest = store.list(first[3].id, 100).await.unwrap();
        assert_eq!(rest.len(), SAMPLE.len() - 4);
        assert!(rest[0].id > first[3].id);
        store.ping().await.unwrap();
    }

    async fn instances_opening_and_seeding_one_store_together_all_succeed(stores: TestStores) {
        let url = StoreUrl::parse(&stores.events_url).unwrap();
        let opens: Vec<_> = (0..8)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move {
                    let store = Store::open(&url).await?;
                    store.seed().await?;
                    Ok::<_, StoreError>(store)
                })
            })
            .collect();
        let mut stores_opened = Vec::new();
        for open in opens {
            stores_opened.push(open.await.unwrap().unwrap());
        }
        assert_eq!(
            stores_opened[0].list(0, 100).await.unwrap().len(),
            SAMPLE.len()
        );
    }

    async fn duplicate_sku_is_refused_and_changes_nothing(stores: TestStores) {
        let store = open(&stores).await;
        let new = NewProduct {
            sku: "X-1".into(),
            name: "x".into(),
            description: String::new(),
            price_cents: 100,
            currency: "EUR".into(),
        };
        let p = store.insert(new.clone()).await.unwrap();
        assert_eq!(store.get(p.id).await.unwrap().unwrap(), p);
        assert!(store.get(p.id + 1).await.unwrap().is_none());
        assert!(matches!(
            store.insert(new).await,
            Err(StoreError::DuplicateSku(_))
        ));
        assert_eq!(store.list(0, 10).await.unwrap().len(), 1);
    }

    async fn a_reopened_store_keeps_its_products(stores: TestStores) {
        let store = open(&stores).await;
        store.seed().await.unwrap();
        drop(store);
        let again = open(&stores).await;
        assert_eq!(again.seed().await.unwrap(), 0);
        assert_eq!(again.list(0, 100).await.unwrap().len(), SAMPLE.len());
    }

    mortar_test_support::backend_suite!(
        seed_is_idempotent_and_pages_are_keyset,
        instances_opening_and_seeding_one_store_together_all_succeed,
        duplicate_sku_is_refused_and_changes_nothing,
        a_reopened_store_keeps_its_products,
    );
}
