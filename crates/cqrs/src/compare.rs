//! Comparing tables of two read stores row for row, so a read model can be
//! checked against one rebuilt from its events (e.g. in a backup).
//!
//! Rows are paired by their first column (a read model's key by
//! convention); a pair that differs is reported column by column, an
//! unpaired row as missing on one side. Works across both backends by
//! asking each store's catalogue through [`ReadStore::query`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::readstore::{ReadStore, ReadStoreError};
use crate::{SqlValue, readstore};

/// How many differences a comparison keeps per table (the first ones by key).
pub const MAX_DIFFERENCES: usize = 10;

/// One table compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableComparison {
    /// The table.
    pub table: String,
    /// Rows in the expected store (e.g. the backed-up read model).
    pub expected_rows: usize,
    /// Rows in the actual store (e.g. the replayed one).
    pub actual_rows: usize,
    /// The first [`MAX_DIFFERENCES`] differences, by key.
    pub differences: Vec<String>,
    /// How many rows differ in all.
    pub total_differences: usize,
}

impl TableComparison {
    /// Whether both sides hold the same rows.
    pub fn equal(&self) -> bool {
        self.total_differences == 0
    }
}

struct Shown<'a>(&'a SqlValue);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            SqlValue::Null => f.write_str("NULL"),
            SqlValue::Int(i) => write!(f, "{i}"),
            SqlValue::Real(r) => write!(f, "{r}"),
            SqlValue::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
        }
    }
}

/// The tables of a read store other than mortar's own bookkeeping, sorted.
pub async fn tables(store: &dyn ReadStore) -> Result<Vec<String>, ReadStoreError> {
    let sql = match store.backend() {
        "postgres" => {
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        }
        _ => "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    };
    let mut names: Vec<String> = store
        .query(sql, Vec::new())
        .await?
        .into_iter()
        .filter_map(|row| row.into_iter().next())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .filter(|name| !readstore::is_bookkeeping(name))
        .collect();
    names.sort();
    Ok(names)
}

/// The columns of `table`, in their defined order (empty when there is no
/// such table).
pub async fn columns(store: &dyn ReadStore, table: &str) -> Result<Vec<String>, ReadStoreError> {
    let sql = match store.backend() {
        "postgres" => {
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position"
        }
        _ => "SELECT name FROM pragma_table_info($1) ORDER BY cid",
    };
    Ok(store
        .query(sql, vec![table.into()])
        .await?
        .into_iter()
        .filter_map(|row| row.into_iter().next())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect())
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Every row of `table` with `columns`, keyed by the first column's value.
async fn rows(
    store: &dyn ReadStore,
    table: &str,
    columns: &[String],
) -> Result<BTreeMap<String, Vec<Vec<SqlValue>>>, ReadStoreError> {
    let list = columns
        .iter()
        .map(|c| quote(c))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("SELECT {list} FROM {}", quote(table));
    let mut keyed: BTreeMap<String, Vec<Vec<SqlValue>>> = BTreeMap::new();
    for row in store.query(&sql, Vec::new()).await? {
        let key = row
            .first()
            .map(|v| Shown(v).to_string())
            .unwrap_or_default();
        keyed.entry(key).or_default().push(row);
    }
    Ok(keyed)
}

fn describe(columns: &[String], row: &[SqlValue]) -> String {
    columns
        .iter()
        .zip(row)
        .map(|(c, v)| format!("{c}={}", Shown(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Compares `table` in `expected` with `table` in `actual`, using the
/// columns `actual` has. `expected_name` and `actual_name` say what each
/// side is in the differences (e.g. "the backup", "replayed").
pub async fn compare_table(
    expected: &dyn ReadStore,
    actual: &dyn ReadStore,
    table: &str,
    names: (&str, &str),
) -> Result<TableComparison, ReadStoreError> {
    let (expected_name, actual_name) = names;
    let columns = columns(actual, table).await?;
    let expected_columns = self::columns(expected, table).await?;
    if expected_columns.is_empty() {
        let actual_rows = rows(actual, table, &columns).await?;
        let count = actual_rows.values().map(Vec::len).sum();
        return Ok(TableComparison {
            table: table.to_owned(),
            expected_rows: 0,
            actual_rows: count,
            differences: vec![format!(
                "the table is missing from {expected_name} ({count} row(s) {actual_name})"
            )],
            total_differences: count.max(1),
        });
    }
    if let Some(missing) = columns.iter().find(|c| !expected_columns.contains(c)) {
        return Ok(TableComparison {
            table: table.to_owned(),
            expected_rows: 0,
            actual_rows: 0,
            differences: vec![format!("column {missing} is missing from {expected_name}")],
            total_differences: 1,
        });
    }
    let left = rows(expected, table, &columns).await?;
    let right = rows(actual, table, &columns).await?;
    let mut comparison = TableComparison {
        table: table.to_owned(),
        expected_rows: left.values().map(Vec::len).sum(),
        actual_rows: right.values().map(Vec::len).sum(),
        differences: Vec::new(),
        total_differences: 0,
    };
    let key_column = columns.first().map(String::as_str).unwrap_or("row");
    let keys: std::collections::BTreeSet<&String> = left.keys().chain(right.keys()).collect();
    for key in keys {
        let empty = Vec::new();
        let mut l = left.get(key).unwrap_or(&empty).clone();
        let mut r = right.get(key).unwrap_or(&empty).clone();
        // Rows equal on both sides pair off whatever their order.
        l.retain(|row| match r.iter().position(|other| other == row) {
            Some(i) => {
                r.remove(i);
                false
            }
            None => true,
        });
        if l.is_empty() && r.is_empty() {
            continue;
        }
        comparison.total_differences += l.len().max(r.len());
        if comparison.differences.len() >= MAX_DIFFERENCES {
            continue;
        }
        let detail = match (l.first(), r.first()) {
            (Some(a), Some(b)) => {
                let changed = columns
                    .iter()
                    .zip(a.iter().zip(b))
                    .filter(|(_, (x, y))| x != y)
                    .map(|(c, (x, y))| {
                        format!(
                            "{c} is {} in {expected_name}, {} {actual_name}",
                            Shown(x),
                            Shown(y)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                format!("{key_column}={key}: {changed}")
            }
            (Some(a), None) => format!(
                "{key_column}={key}: only in {expected_name} ({})",
                describe(&columns, a)
            ),
            (None, Some(b)) => format!(
                "{key_column}={key}: missing from {expected_name} ({} {actual_name})",
                describe(&columns, b)
            ),
            (None, None) => continue,
        };
        comparison.differences.push(detail);
    }
    Ok(comparison)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Sql, SqliteReadStore};

    async fn store(
        dir: &std::path::Path,
        name: &str,
        rows: &[(&str, &str, i64)],
    ) -> SqliteReadStore {
        let store = SqliteReadStore::open(&dir.join(name)).await.unwrap();
        store
            .migrate("CREATE TABLE IF NOT EXISTS t (id TEXT PRIMARY KEY, status TEXT, n BIGINT)")
            .await
            .unwrap();
        store.ensure_checkpoint("p").await.unwrap();
        let statements = rows
            .iter()
            .map(|(id, status, n)| {
                Sql::new("INSERT INTO t (id, status, n) VALUES ($1, $2, $3)")
                    .bind(*id)
                    .bind(*status)
                    .bind(*n)
            })
            .collect();
        store
            .commit_projection("p", 0, 1, statements)
            .await
            .unwrap();
        store
    }

    #[tokio::test]
    async fn equal_tables_compare_equal_and_differences_name_key_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let a = store(dir.path(), "a.db", &[("x", "paid", 1), ("y", "placed", 2)]).await;
        let b = store(dir.path(), "b.db", &[("y", "placed", 2), ("x", "paid", 1)]).await;
        assert_eq!(tables(&a).await.unwrap(), vec!["t".to_owned()]);
        let same = compare_table(&a, &b, "t", ("the backup", "replayed"))
            .await
            .unwrap();
        assert!(same.equal(), "{same:?}");
        assert_eq!((same.expected_rows, same.actual_rows), (2, 2));

        let c = store(dir.path(), "c.db", &[("x", "placed", 1), ("z", "paid", 3)]).await;
        let diff = compare_table(&a, &c, "t", ("the backup", "replayed"))
            .await
            .unwrap();
        assert_eq!(diff.total_differences, 3, "{diff:?}");
        assert_eq!(
            diff.differences,
            vec![
                "id='x': status is 'paid' in the backup, 'placed' replayed".to_owned(),
                "id='y': only in the backup (id='y', status='placed', n=2)".to_owned(),
                "id='z': missing from the backup (id='z', status='paid', n=3 replayed)".to_owned(),
            ]
        );
    }

    #[tokio::test]
    async fn a_table_missing_on_the_expected_side_is_a_difference() {
        let dir = tempfile::tempdir().unwrap();
        let a = SqliteReadStore::open(&dir.path().join("a.db"))
            .await
            .unwrap();
        let b = store(dir.path(), "b.db", &[("x", "paid", 1)]).await;
        let diff = compare_table(&a, &b, "t", ("the backup", "replayed"))
            .await
            .unwrap();
        assert!(!diff.equal());
        assert!(
            diff.differences[0].contains("missing from the backup"),
            "{diff:?}"
        );
    }
}
