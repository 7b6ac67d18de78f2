//! The replay check of a restored backup: each service that keeps a read
//! store is started in replay-check mode (`MORTAR_REPLAY_CHECK`, handled by
//! `mortar-sdk`) against the scratch restore. It rebuilds its declared
//! projections from the restored event stores into a fresh read store and
//! compares them row for row with the restored read model. The node cannot
//! link application code; the application's own binaries know their
//! projections.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mortar_cqrs::{REPLAY_CHECK_ENV, ReplayReport, ReplaySpec};

use crate::checks::Problem;
use crate::layout::join;
use crate::postgres::{PostgresDump, with_schema};
use crate::{BackupManifest, DATA_DIR, FileKind};

/// A service of the application, as the replay check starts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceProgram {
    /// The service's name (its directory under `services/`).
    pub name: String,
    /// The program, resolved.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The manifest's environment for it.
    pub env: BTreeMap<String, String>,
    /// The working directory (the manifest's).
    pub dir: PathBuf,
}

/// Where a backup's stores are, as URLs the services open. SQLite files
/// inside the scratch restore, or PostgreSQL schemas of a scratch database.
#[derive(Debug, Clone, Default)]
pub struct StoreUrls {
    /// Each service's event store, by service.
    pub event_stores: BTreeMap<String, String>,
    /// Each service's read stores: (the file or schema the report names, URL).
    pub read_stores: BTreeMap<String, Vec<(String, String)>>,
}

impl StoreUrls {
    /// The SQLite stores of a restored tree `dir`: `services/<s>/store.db`
    /// is `s`'s event store; every read store under `services/<s>/` is `s`'s.
    pub fn sqlite(manifest: &BackupManifest, dir: &Path) -> StoreUrls {
        let mut urls = StoreUrls::default();
        for file in &manifest.files {
            let Some(rel) = file.path.strip_prefix(&format!("{DATA_DIR}/")) else {
                continue;
            };
            let Some((service, name)) = rel
                .strip_prefix("services/")
                .and_then(|r| r.split_once('/'))
            else {
                continue;
            };
            let url = format!("sqlite://{}", join(dir, rel).display());
            match file.kind {
                FileKind::Store if name == "store.db" => {
                    urls.event_stores.insert(service.to_owned(), url);
                }
                FileKind::ReadStore => urls
                    .read_stores
                    .entry(service.to_owned())
                    .or_default()
                    .push((file.path.clone(), url)),
                _ => {}
            }
        }
        urls
    }
}

impl StoreUrls {
    /// The stores of `services` in the scratch database at `url` where
    /// `dump` was restored: each service's schema is its event store, and
    /// its read store when it has `mortar_checkpoints`.
    pub fn postgres(dump: &PostgresDump, url: &str, services: &[ServiceProgram]) -> StoreUrls {
        let mut urls = StoreUrls::default();
        for service in services {
            let schema = service.name.replace('-', "_");
            if !dump.schemas.contains(&schema) {
                continue;
            }
            let store = with_schema(url, &schema);
            urls.event_stores
                .insert(service.name.clone(), store.clone());
            if dump
                .rows
                .contains_key(&format!("{schema}.mortar_checkpoints"))
            {
                urls.read_stores
                    .entry(service.name.clone())
                    .or_default()
                    .push((format!("{} (schema {schema})", dump.file), store));
            }
        }
        urls
    }
}

/// Where the fresh read stores a replay rebuilds into are made.
#[derive(Debug, Clone)]
pub(crate) enum FreshStores {
    /// SQLite files in this directory.
    Sqlite(PathBuf),
    /// Schemas of the PostgreSQL database at this URL.
    Postgres(String),
}

impl FreshStores {
    /// The `index`th fresh read store for `service`.
    fn url(&self, service: &str, index: usize) -> String {
        match self {
            FreshStores::Sqlite(dir) => format!(
                "sqlite://{}",
                dir.join(format!("{service}-{index}.db")).display()
            ),
            FreshStores::Postgres(url) => with_schema(
                url,
                &format!("mortar_replay_{}_{index}", service.replace('-', "_")),
            ),
        }
    }
}

/// One read store's replay check.
#[derive(Debug, Clone)]
pub struct ReplayOutcome {
    /// The service.
    pub service: String,
    /// The read store (as the manifest names it, or `postgres:<schema>`).
    pub read_store: String,
    /// What the service reported; `None` when it could not check (see the
    /// problems).
    pub report: Option<ReplayReport>,
}

/// Runs the replay check of every service in `services` that has a read
/// store in `urls`, rebuilding into stores from `fresh`.
pub(crate) fn run(
    services: &[ServiceProgram],
    urls: &StoreUrls,
    fresh: &FreshStores,
    timeout: Duration,
) -> (Vec<ReplayOutcome>, Vec<Problem>) {
    let mut outcomes = Vec::new();
    let mut problems = Vec::new();
    for service in services {
        let Some(read_stores) = urls.read_stores.get(&service.name) else {
            continue;
        };
        for (index, (label, url)) in read_stores.iter().enumerate() {
            let spec = ReplaySpec {
                read_store: url.clone(),
                fresh_store: fresh.url(&service.name, index),
                event_stores: urls.event_stores.clone(),
            };
            let problem = |detail: String| Problem {
                file: label.clone(),
                check: "replay",
                detail,
            };
            match check_one(service, &spec, timeout) {
                Ok(report) => {
                    for check in &report.projections {
                        for p in &check.problems {
                            problems.push(problem(format!(
                                "service {}, projection {}: {p}",
                                service.name, check.projection
                            )));
                        }
                        for table in check.tables.iter().filter(|t| !t.equal()) {
                            problems.push(problem(format!(
                                "service {}, projection {}, table {}: {} row(s) differ between the backup ({} rows) and the replay of its events ({} rows); first: {}",
                                service.name,
                                check.projection,
                                table.table,
                                table.total_differences,
                                table.expected_rows,
                                table.actual_rows,
                                table.differences.first().map(String::as_str).unwrap_or("-"),
                            )));
                        }
                    }
                    outcomes.push(ReplayOutcome {
                        service: service.name.clone(),
                        read_store: label.clone(),
                        report: Some(report),
                    });
                }
                Err(detail) => {
                    problems.push(problem(format!("service {}: {detail}", service.name)));
                    outcomes.push(ReplayOutcome {
                        service: service.name.clone(),
                        read_store: label.clone(),
                        report: None,
                    });
                }
            }
        }
    }
    (outcomes, problems)
}

/// Starts the service in replay-check mode and reads its report; `Err`
/// says why there is none.
fn check_one(
    service: &ServiceProgram,
    spec: &ReplaySpec,
    timeout: Duration,
) -> Result<ReplayReport, String> {
    let spec_json = serde_json::to_string(spec).map_err(|e| e.to_string())?;
    let mut child = Command::new(&service.program)
        .args(&service.args)
        .current_dir(&service.dir)
        .envs(&service.env)
        .env("MORTAR_SERVICE", &service.name)
        .env(REPLAY_CHECK_ENV, spec_json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", service.program.display()))?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(out) = stdout.as_mut() {
            let _ = out.read_to_string(&mut s);
        }
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(err) = stderr.as_mut() {
            let _ = err.read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "did not finish the replay check within {} s; is it built with mortar-sdk's run_with_projections?",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("cannot wait for it: {e}")),
        }
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let report = out
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str::<ReplayReport>(line).ok());
    match (status.code(), report) {
        (Some(0 | 1), Some(report)) => Ok(report),
        (code, _) => Err(format!(
            "the replay check could not run (exit {}): {}",
            code.map_or_else(|| "by signal".to_owned(), |c| c.to_string()),
            err.lines().last().unwrap_or("no output")
        )),
    }
}
