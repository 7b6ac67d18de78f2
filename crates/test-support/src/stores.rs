//! Stores for backend-generic tests: a scratch SQLite directory, or fresh
//! PostgreSQL schemas on the local server (dropped afterwards).
//!
//! PostgreSQL is `postgres://postgres@127.0.0.1:5432/test` (trust auth),
//! overridable with `MORTAR_TEST_POSTGRES`. When it is unreachable the
//! PostgreSQL half of a suite is skipped with a printed reason — except
//! under `CI=true`, where it must run and the test fails instead.

use std::time::Duration;

/// The server PostgreSQL tests use.
pub fn postgres_base() -> String {
    std::env::var("MORTAR_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Which backend a suite instance runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite files in a temporary directory.
    Sqlite,
    /// Schemas on the local PostgreSQL server.
    Postgres,
}

/// Store URLs for one test: an event store and a separate read store.
/// Dropping it removes the files or drops the schemas.
#[derive(Debug)]
pub struct TestStores {
    /// The event store's URL.
    pub events_url: String,
    /// The read store's URL (another file or schema).
    pub read_url: String,
    /// More URLs of the same backend on demand (e.g. a second read store).
    scratch: Option<tempfile::TempDir>,
    schemas: Vec<String>,
    backend: Backend,
}

impl TestStores {
    /// Fresh stores for `backend`, or `None` (after printing why) when
    /// PostgreSQL is unreachable outside CI.
    pub async fn new(backend: Backend) -> Option<TestStores> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let url = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
                Some(TestStores {
                    events_url: url("events.db"),
                    read_url: url("read.db"),
                    scratch: Some(dir),
                    schemas: Vec::new(),
                    backend,
                })
            }
            Backend::Postgres => {
                if let Err(reason) = postgres_reachable().await {
                    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
                    assert!(
                        !ci,
                        "CI=true but PostgreSQL at {} is unreachable: {reason}",
                        postgres_base()
                    );
                    eprintln!(
                        "skipped: PostgreSQL at {} is unreachable ({reason}); set CI=true to make this a failure",
                        postgres_base()
                    );
                    return None;
                }
                let mut stores = TestStores {
                    events_url: String::new(),
                    read_url: String::new(),
                    scratch: None,
                    schemas: Vec::new(),
                    backend,
                };
                stores.events_url = stores.another("events");
                stores.read_url = stores.another("read");
                Some(stores)
            }
        }
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Another store URL of the same backend (a new file or schema).
    pub fn another(&mut self, name: &str) -> String {
        match &self.scratch {
            Some(dir) => format!(
                "sqlite://{}",
                dir.path().join(format!("{name}.db")).display()
            ),
            None => {
                let schema = format!("t_{name}_{:016x}", rand::random::<u64>());
                self.schemas.push(schema.clone());
                format!("{}?schema={schema}", postgres_base())
            }
        }
    }
}

impl Drop for TestStores {
    fn drop(&mut self) {
        if self.schemas.is_empty() {
            return;
        }
        let schemas = std::mem::take(&mut self.schemas);
        // Drop may run inside a runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let Ok((client, conn)) =
                    tokio_postgres::connect(&postgres_base(), tokio_postgres::NoTls).await
                else {
                    return;
                };
                tokio::spawn(conn);
                for schema in schemas {
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// The schema a PostgreSQL store URL names (`…?schema=name`).
pub fn schema_of(url: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("schema="))
        .map(str::to_owned)
}

/// A session on the test server, for poking at it from a test.
pub async fn admin_session() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&postgres_base(), tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(conn);
    client
}

/// Terminates (`pg_terminate_backend`) every server session whose
/// `application_name` matches the SQL `LIKE` pattern — mortar names its
/// sessions `mortar/<schema>/<role>` — and returns how many it ended.
pub async fn terminate_sessions(application_name_like: &str) -> usize {
    let admin = admin_session().await;
    let rows = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name LIKE $1 AND pid <> pg_backend_pid()",
            &[&application_name_like],
        )
        .await
        .expect("pg_terminate_backend");
    rows.iter().filter(|r| r.get::<_, bool>(0)).count()
}

async fn postgres_reachable() -> Result<(), String> {
    let base = postgres_base();
    let connect = tokio_postgres::connect(&base, tokio_postgres::NoTls);
    match tokio::time::timeout(Duration::from_secs(3), connect).await {
        Ok(Ok((client, conn))) => {
            tokio::spawn(conn);
            client
                .simple_query("SELECT 1")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 3 s".to_owned()),
    }
}

/// Instantiates a backend-generic async test suite for SQLite and
/// PostgreSQL: `backend_suite!(conflicts, rebuild_equals_live);` makes
/// `sqlite::conflicts`, `postgres::conflicts`, … each calling
/// `conflicts(TestStores)` with fresh stores.
#[macro_export]
macro_rules! backend_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let stores = $crate::stores::TestStores::new($crate::stores::Backend::Sqlite)
                        .await
                        .expect("SQLite stores");
                    super::$test(stores).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(stores) =
                        $crate::stores::TestStores::new($crate::stores::Backend::Postgres).await
                    else {
                        return;
                    };
                    super::$test(stores).await;
                }
            )*
        }
    };
}

/// A fresh database on the test server, dropped (with its sessions) on
/// drop: for running whole apps on PostgreSQL without touching others'
/// schemas.
pub struct ScratchDatabase {
    /// Its URL, `postgres://…/<name>`.
    pub url: String,
    name: String,
}

impl ScratchDatabase {
    /// Creates one, or returns `None` (after printing why) when PostgreSQL
    /// is unreachable outside CI; under `CI=true` that fails the test.
    pub fn create(test: &str) -> Option<ScratchDatabase> {
        let rt = tokio::runtime::Runtime::new().expect("a runtime");
        if let Err(reason) = rt.block_on(postgres_reachable()) {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test}: PostgreSQL is not reachable at {}: {reason}, and CI=true requires the PostgreSQL tests to run",
                postgres_base()
            );
            eprintln!(
                "SKIPPED {test}: PostgreSQL is not reachable at {}: {reason}",
                postgres_base()
            );
            return None;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("mortar_scratch_{}_{nanos}", std::process::id());
        rt.block_on(async {
            admin_session()
                .await
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create a scratch database");
        });
        let base = postgres_base();
        let server = base.rsplit_once('/').map_or(base.as_str(), |(s, _)| s);
        Some(ScratchDatabase {
            url: format!("{server}/{name}"),
            name,
        })
    }
}

impl ScratchDatabase {
    /// The schemas in it besides PostgreSQL's own and `public`, sorted.
    pub fn schemas(&self) -> Vec<String> {
        let rt = tokio::runtime::Runtime::new().expect("a runtime");
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
                .await
                .expect("connect to the scratch database");
            tokio::spawn(conn);
            client
                .query(
                    "SELECT schema_name::text FROM information_schema.schemata \
                     WHERE schema_name NOT LIKE 'pg\\_%' \
                     AND schema_name NOT IN ('information_schema', 'public') ORDER BY 1",
                    &[],
                )
                .await
                .expect("list schemas")
                .iter()
                .map(|row| row.get(0))
                .collect()
        })
    }
}

impl ScratchDatabase {
    /// The single number `sql` answers (e.g. `SELECT count(*) FROM s.t`),
    /// for checking what a service stored.
    pub fn count(&self, sql: &str) -> i64 {
        let rt = tokio::runtime::Runtime::new().expect("a runtime");
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
                .await
                .expect("connect to the scratch database");
            tokio::spawn(conn);
            client
                .query_one(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get(0)
        })
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let Ok(rt) = tokio::runtime::Runtime::new() else {
            return;
        };
        rt.block_on(async {
            let _ = admin_session()
                .await
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .await;
        });
    }
}
