//! Products in a SQLite file.
//!
//! Several catalog instances share one database file; WAL mode lets them read
//! while one writes, and a busy timeout turns write contention into a short
//! wait instead of an error.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use shop_sqlite::SharedConnection;

use super::{NewProduct, Product, SAMPLE, StoreError};

/// The SQLite database; cheap to clone.
#[derive(Clone)]
pub(crate) struct SqliteStore {
    db: SharedConnection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS products (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    sku         TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents > 0),
    currency    TEXT NOT NULL
);";

impl SqliteStore {
    /// Opens (and creates) the database; instances racing to create it
    /// take turns (`shop_sqlite`).
    pub(crate) async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let db = SharedConnection::open(path, setup).await?;
        Ok(SqliteStore { db })
    }

    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.db.with(f).await
    }

    /// Adds the sample products that are missing; returns how many were added.
    pub(crate) async fn seed(&self) -> Result<usize, StoreError> {
        self.with(|conn| {
            // IMMEDIATE takes the write lock up front, so a concurrent seed
            // waits in the busy handler instead of failing on lock upgrade.
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut added = 0;
            for (sku, name, description, price) in SAMPLE {
                added += tx.execute(
                    "INSERT OR IGNORE INTO products (sku, name, description, price_cents, currency) VALUES (?1, ?2, ?3, ?4, 'EUR')",
                    params![sku, name, description, price],
                )?;
            }
            tx.commit()?;
            Ok(added)
        })
        .await
    }

    /// A cheap query proving the database is usable.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        self.with(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    /// Products with id greater than `after`, in id order (keyset pagination:
    /// stable while products are added, and cheap at any depth).
    pub(crate) async fn list(&self, after: i64, limit: u32) -> Result<Vec<Product>, StoreError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, sku, name, description, price_cents, currency FROM products WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit], row_to_product)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// One product by id.
    pub(crate) async fn get(&self, id: i64) -> Result<Option<Product>, StoreError> {
        self.with(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT id, sku, name, description, price_cents, currency FROM products WHERE id = ?1",
                    [id],
                    row_to_product,
                )
                .optional()?)
        })
        .await
    }

    /// Adds a product; the SKU must be new.
    pub(crate) async fn insert(&self, new: NewProduct) -> Result<Product, StoreError> {
        self.with(move |conn| {
            let result = conn.execute(
                "INSERT INTO products (sku, name, description, price_cents, currency) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![new.sku, new.name, new.description, new.price_cents, new.currency],
            );
            match result {
                Ok(_) => {}
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
                {
                    return Err(StoreError::DuplicateSku(new.sku));
                }
                Err(e) => return Err(e.into()),
            }
            let id = conn.last_insert_rowid();
            Ok(Product {
                id,
                sku: new.sku,
                name: new.name,
                description: new.description,
                price_cents: new.price_cents,
                currency: new.currency,
            })
        })
        .await
    }
}

/// WAL (readers beside one writer), a busy timeout, the schema.
fn setup(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)
}

fn row_to_product(row: &rusqlite::Row<'_>) -> rusqlite::Result<Product> {
    Ok(Product {
        id: row.get(0)?,
        sku: row.get(1)?,
        name: row.get(2)?,
        description: row.get(3)?,
        price_cents: row.get(4)?,
        currency: row.get(5)?,
    })
}
