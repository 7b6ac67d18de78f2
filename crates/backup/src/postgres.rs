//! PostgreSQL stores (`mortar up --store-url`): backed up, checked and
//! restored with PostgreSQL's own tools, `pg_dump` and `pg_restore`.
//!
//! - Create: one `pg_dump --format=custom` of every service schema, in one
//!   snapshot (`pg_export_snapshot()` in a repeatable-read transaction,
//!   handed to `pg_dump --snapshot`), so the services' stores are
//!   consistent with each other; the row count of every table is taken in
//!   that same snapshot and recorded in the manifest.
//! - Verify: `pg_restore` into a scratch database (created and dropped by
//!   verify), then the row counts, then the replay check against it.
//! - Restore: the target's schemas of the same names are renamed aside
//!   (`<schema>_before_restore_<time>`, never dropped), then `pg_restore
//!   --single-transaction`; on failure they are renamed back.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, NoTls};

use crate::BackupError;

/// Where a dump lives inside a backup's data tree.
pub(crate) const DUMP_DIR: &str = "postgres";

/// The PostgreSQL part of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostgresDump {
    /// The dump's path in the backup (`data/postgres/<database>.dump`).
    pub file: String,
    /// The database it was taken from (name only, no credentials).
    pub database: String,
    /// The schemas in it, one per service.
    pub schemas: Vec<String>,
    /// Rows per table (`schema.table`) at the snapshot.
    pub rows: BTreeMap<String, i64>,
    /// `pg_dump --version`.
    pub tool: String,
}

fn pg_error(context: &str) -> impl FnOnce(tokio_postgres::Error) -> BackupError + '_ {
    move |e| BackupError::Postgres(format!("{context}: {}", describe(&e)))
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => e.to_string(),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, BackupError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BackupError::Postgres(format!("cannot start a runtime: {e}")))
}

async fn connect(url: &str) -> Result<Client, BackupError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(pg_error("cannot connect to PostgreSQL"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// The database a URL names.
pub(crate) fn database_of(url: &str) -> String {
    let path = url.split_once('?').map_or(url, |(p, _)| p);
    path.rsplit_once('/')
        .map(|(_, db)| db.to_owned())
        .unwrap_or_default()
}

/// `url` naming database `name` instead (query parameters kept).
pub(crate) fn with_database(url: &str, name: &str) -> String {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    let server = path.rsplit_once('/').map_or(path, |(s, _)| s);
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

/// `url` with `schema=` added, as services open their stores.
pub(crate) fn with_schema(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}schema={schema}")
}

fn tool(program: &str) -> Result<String, BackupError> {
    let out = Command::new(program)
        .arg("--version")
        .output()
        .map_err(|e| {
            BackupError::Postgres(format!(
                "cannot run {program} ({e}); install PostgreSQL's client tools in the server's version (apt-get install -y postgresql-client)"
            ))
        })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn run_tool(mut command: Command, what: &str) -> Result<(), BackupError> {
    let out = command
        .output()
        .map_err(|e| BackupError::Postgres(format!("cannot run {what}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(BackupError::Postgres(format!(
        "{what} failed: {}",
        stderr.trim().lines().take(5).collect::<Vec<_>>().join("; ")
    )))
}

/// Rows per `schema.table` of `schemas`, in the client's current snapshot.
async fn count_rows(
    client: &Client,
    schemas: &[String],
) -> Result<BTreeMap<String, i64>, BackupError> {
    let tables = client
        .query(
            "SELECT table_schema::text, table_name::text FROM information_schema.tables
             WHERE table_schema = ANY($1) AND table_type = 'BASE TABLE'",
            &[&schemas],
        )
        .await
        .map_err(pg_error("cannot list tables"))?;
    let mut rows = BTreeMap::new();
    for table in tables {
        let (schema, name): (String, String) = (table.get(0), table.get(1));
        let count: i64 = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM \"{}\".\"{}\"",
                    schema.replace('"', "\"\""),
                    name.replace('"', "\"\"")
                ),
                &[],
            )
            .await
            .map_err(pg_error("cannot count rows"))?
            .get(0);
        rows.insert(format!("{schema}.{name}"), count);
    }
    Ok(rows)
}

/// Dumps the `schemas` of the database at `url` that exist into `file`,
/// in one snapshot; see the module docs.
pub(crate) fn dump(
    url: &str,
    schemas: &[String],
    file: &Path,
    manifest_path: &str,
) -> Result<PostgresDump, BackupError> {
    let version = tool("pg_dump")?;
    runtime()?.block_on(async {
        let client = connect(url).await?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(pg_error("cannot begin the snapshot"))?;
        let snapshot: String = client
            .query_one("SELECT pg_export_snapshot()", &[])
            .await
            .map_err(pg_error("cannot export the snapshot"))?
            .get(0);
        let present: Vec<String> = client
            .query(
                "SELECT nspname::text FROM pg_namespace WHERE nspname = ANY($1) ORDER BY 1",
                &[&schemas],
            )
            .await
            .map_err(pg_error("cannot list schemas"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if present.is_empty() {
            return Err(BackupError::Input(format!(
                "none of the services' schemas ({}) is in database {}; is --store-url the one the node runs with?",
                schemas.join(", "),
                database_of(url)
            )));
        }
        let rows = count_rows(&client, &present).await?;
        let mut command = Command::new("pg_dump");
        command
            .arg("--format=custom")
            .arg(format!("--snapshot={snapshot}"))
            .arg("--file")
            .arg(file)
            .arg(format!("--dbname={url}"));
        for schema in &present {
            command.arg(format!("--schema={schema}"));
        }
        // pg_dump runs while this transaction holds the snapshot open.
        let dumped = tokio::task::spawn_blocking(move || run_tool(command, "pg_dump"))
            .await
            .map_err(|e| BackupError::Postgres(format!("pg_dump task: {e}")))?;
        let _ = client.batch_execute("COMMIT").await;
        dumped?;
        Ok(PostgresDump {
            file: manifest_path.to_owned(),
            database: database_of(url),
            schemas: present,
            rows,
            tool: version,
        })
    })
}

/// A database created for a check and dropped (with its sessions) when
/// this is dropped.
pub(crate) struct ScratchDatabase {
    server: String,
    name: String,
    /// Its URL.
    pub(crate) url: String,
}

impl ScratchDatabase {
    /// Creates an empty database on the server `url` names.
    pub(crate) fn create(url: &str, id: &str) -> Result<ScratchDatabase, BackupError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let clean: String = id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_lowercase();
        let name = format!("mortar_verify_{clean}_{}_{nanos}", std::process::id());
        runtime()?.block_on(async {
            connect(url)
                .await?
                .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .await
                .map_err(pg_error("cannot create a scratch database"))
        })?;
        Ok(ScratchDatabase {
            server: url.to_owned(),
            url: with_database(url, &name),
            name,
        })
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let Ok(rt) = runtime() else { return };
        rt.block_on(async {
            if let Ok(client) = connect(&self.server).await {
                let _ = client
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                        self.name
                    ))
                    .await;
            }
        });
    }
}

/// `pg_restore` of `file` into the database at `url`; `single` makes it
/// all or nothing.
fn pg_restore(file: &Path, url: &str, single: bool) -> Result<(), BackupError> {
    tool("pg_restore")?;
    let mut command = Command::new("pg_restore");
    command
        .arg("--no-owner")
        .arg("--exit-on-error")
        .arg(format!("--dbname={url}"));
    if single {
        command.arg("--single-transaction");
    }
    command.arg(file);
    run_tool(command, "pg_restore")
}

/// Restores the dump `file` into the scratch database and compares every
/// table's rows with the counts taken at the snapshot; returns the
/// differences.
pub(crate) fn check_restored(
    file: &Path,
    dump: &PostgresDump,
    scratch: &ScratchDatabase,
) -> Result<Vec<String>, BackupError> {
    pg_restore(file, &scratch.url, false)?;
    let counted = runtime()?.block_on(async {
        let client = connect(&scratch.url).await?;
        count_rows(&client, &dump.schemas).await
    })?;
    let mut differences = Vec::new();
    for (table, rows) in &dump.rows {
        match counted.get(table) {
            Some(found) if found == rows => {}
            Some(found) => differences.push(format!(
                "table {table}: {found} row(s) restored, the snapshot had {rows}"
            )),
            None => differences.push(format!("table {table} is missing after pg_restore")),
        }
    }
    Ok(differences)
}

/// Restores the dump into the database at `url`: existing schemas of the
/// same names are renamed aside first (and back on failure). Returns the
/// names they were renamed to.
pub(crate) fn restore_into(
    file: &Path,
    dump: &PostgresDump,
    url: &str,
    stamp: i64,
) -> Result<Vec<String>, BackupError> {
    let rt = runtime()?;
    let moved = rt.block_on(async {
        let client = connect(url).await?;
        let existing: Vec<String> = client
            .query(
                "SELECT nspname::text FROM pg_namespace WHERE nspname = ANY($1) ORDER BY 1",
                &[&dump.schemas],
            )
            .await
            .map_err(pg_error("cannot list schemas"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut sql = String::from("BEGIN;");
        let mut moved = Vec::new();
        for schema in existing {
            let aside = format!("{schema}_before_restore_{stamp}");
            sql.push_str(&format!("ALTER SCHEMA \"{schema}\" RENAME TO \"{aside}\";"));
            moved.push((schema, aside));
        }
        sql.push_str("COMMIT;");
        client
            .batch_execute(&sql)
            .await
            .map_err(pg_error("cannot move the current schemas aside"))?;
        Ok::<_, BackupError>(moved)
    })?;
    if let Err(e) = pg_restore(file, url, true) {
        let _ = rt.block_on(async {
            let client = connect(url).await?;
            let mut sql = String::from("BEGIN;");
            for (schema, aside) in &moved {
                sql.push_str(&format!("ALTER SCHEMA \"{aside}\" RENAME TO \"{schema}\";"));
            }
            sql.push_str("COMMIT;");
            client
                .batch_execute(&sql)
                .await
                .map_err(pg_error("cannot move the schemas back"))
        });
        return Err(e);
    }
    Ok(moved.into_iter().map(|(_, aside)| aside).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_databases_and_schemas() {
        let url = "postgres://postgres@127.0.0.1:5432/shop?connect_timeout=3";
        assert_eq!(database_of(url), "shop");
        assert_eq!(
            with_database(url, "scratch"),
            "postgres://postgres@127.0.0.1:5432/scratch?connect_timeout=3"
        );
        assert_eq!(
            with_schema("postgres://h/db", "order_history"),
            "postgres://h/db?schema=order_history"
        );
    }
}
