//! Verifying a backup: every checksum, then a restore into a scratch
//! directory where every database gets SQLite's integrity check and every
//! bus record its checksum check. Each failure names its file and check.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mortar_bus::inspect::scan_segment;
use mortar_secrets::Identity;

use crate::encryption::{ENCRYPTED_SUFFIX, decrypt_file, stored_path};
use crate::layout::{self, join};
use crate::postgres::{self, ScratchDatabase};
use crate::replay::{self, FreshStores, ReplayOutcome, ServiceProgram, StoreUrls};
use crate::{BackupError, BackupManifest, DATA_DIR, FileKind, digest_file};

/// One failed check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, as the manifest names it (`data/…`).
    pub file: String,
    /// Which check failed: `present`, `size`, `sha256`, `listed`,
    /// `integrity_check`, `bus records`, `topic cut`, `replay`.
    pub check: &'static str,
    /// What was found.
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} check failed: {}",
            self.file, self.check, self.detail
        )
    }
}

/// What verification found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The backup's manifest.
    pub manifest: BackupManifest,
    /// Files whose checksum matched.
    pub files_checked: usize,
    /// Databases that passed `PRAGMA integrity_check`.
    pub databases_checked: usize,
    /// Bus records whose checksum was checked.
    pub records_checked: u64,
    /// The replay check of each read store (see [`VerifyOptions::services`]).
    pub replayed: Vec<ReplayOutcome>,
    /// Every failed check; empty means the backup is good.
    pub problems: Vec<Problem>,
    /// How long it took, in milliseconds.
    pub took_ms: u64,
}

impl VerifyReport {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Turns a failed report into [`BackupError::Invalid`].
    pub fn into_result(self, backup: &Path) -> Result<VerifyReport, BackupError> {
        match self.problems.first() {
            None => Ok(self),
            Some(first) => Err(BackupError::Invalid {
                path: backup.to_owned(),
                count: self.problems.len(),
                first: first.to_string(),
            }),
        }
    }
}

/// How to verify a backup beyond its files.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The application's services: each one with a read store in the
    /// backup is started in replay-check mode against the scratch restore.
    /// Empty: no replay check.
    pub services: Vec<ServiceProgram>,
    /// How long one service's replay check may take.
    pub replay_timeout: Duration,
    /// The private key that decrypts an encrypted backup.
    pub key: Option<Arc<Identity>>,
    /// A PostgreSQL server (`postgres://…/db`) where a backup's dump is
    /// restored into a scratch database, created and dropped here.
    pub postgres: Option<String>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            services: Vec::new(),
            replay_timeout: Duration::from_secs(300),
            key: None,
            postgres: None,
        }
    }
}

/// Verifies the backup in `backup` (see the module docs). An `Err` means
/// the backup could not be checked at all (no manifest, no scratch space);
/// failed checks are in the report.
pub fn verify(backup: &Path, options: &VerifyOptions) -> Result<VerifyReport, BackupError> {
    let started = Instant::now();
    let manifest = BackupManifest::load(backup)?;
    let scratch = tempfile::Builder::new()
        .prefix("mortar-backup-verify-")
        .tempdir()
        .map_err(BackupError::io(
            "create a scratch directory in",
            std::env::temp_dir(),
        ))?;
    let tree = scratch.path().join("data");
    let (undecryptable, skip) = copy_tree(&manifest, backup, &tree, options.key.as_deref())?;
    let mut report = check_tree(&manifest, &tree, &skip)?;
    report.problems.splice(0..0, undecryptable);
    report.problems.extend(unlisted(&manifest, backup)?);
    let mut database = None;
    if let Some(dump) = manifest.postgres.as_ref().filter(|_| report.ok()) {
        let server = options.postgres.as_deref().ok_or_else(|| {
            BackupError::Input(format!(
                "backup {} holds a PostgreSQL dump of database {}; pass --store-url postgres://… (a server where verify may create and drop a scratch database)",
                backup.display(),
                dump.database
            ))
        })?;
        let scratch_db = ScratchDatabase::create(server, &manifest.id)?;
        let file = join(&tree, data_relative(&dump.file));
        let problem = |check, detail| Problem {
            file: dump.file.clone(),
            check,
            detail,
        };
        match postgres::check_restored(&file, dump, &scratch_db) {
            Ok(differences) => {
                report.databases_checked += 1;
                report
                    .problems
                    .extend(differences.into_iter().map(|d| problem("row counts", d)));
            }
            Err(e) => report.problems.push(problem("pg_restore", e.to_string())),
        }
        database = Some(scratch_db);
    }
    if report.ok() && !options.services.is_empty() {
        let (urls, fresh) = match (&database, &manifest.postgres) {
            (Some(db), Some(dump)) => (
                StoreUrls::postgres(dump, &db.url, &options.services),
                FreshStores::Postgres(db.url.clone()),
            ),
            _ => (
                StoreUrls::sqlite(&manifest, &tree),
                FreshStores::Sqlite(scratch.path().join("replayed")),
            ),
        };
        let (outcomes, problems) =
            replay::run(&options.services, &urls, &fresh, options.replay_timeout);
        report.replayed = outcomes;
        report.problems.extend(problems);
    }
    drop(database);
    report.took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

/// Copies every file the manifest lists from `from` (a backup's `data/`)
/// into `to`, decrypting an encrypted backup with `key`; missing files are
/// left for the checks to report. Returns the files that could not be
/// decrypted, as problems, and their manifest paths.
pub(crate) fn copy_tree(
    manifest: &BackupManifest,
    backup: &Path,
    to: &Path,
    key: Option<&Identity>,
) -> Result<(Vec<Problem>, BTreeSet<String>), BackupError> {
    let from = backup.join(DATA_DIR);
    let encryption = match (&manifest.encryption, key) {
        (None, _) => None,
        (Some(encryption), Some(key)) => Some((encryption, key)),
        (Some(_), None) => return Err(BackupError::KeyRequired(backup.to_owned())),
    };
    let mut failed = Vec::new();
    for file in &manifest.files {
        let rel = data_relative(&file.path);
        let dst = join(to, rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(BackupError::io("create", parent))?;
        }
        if let Some((encryption, key)) = encryption {
            let src = join(&from, &format!("{rel}{ENCRYPTED_SUFFIX}"));
            if let Err(detail) = decrypt_file(encryption, key, &src, &dst)? {
                failed.push((file.path.clone(), detail));
            }
            continue;
        }
        let src = join(&from, rel);
        match std::fs::copy(&src, &dst) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BackupError::io("copy", &src)(e)),
        }
    }
    let problems = failed
        .iter()
        .map(|(file, detail)| Problem {
            file: format!("{file}{ENCRYPTED_SUFFIX}"),
            check: "decrypt",
            detail: detail.clone(),
        })
        .collect();
    Ok((problems, failed.into_iter().map(|(f, _)| f).collect()))
}

fn data_relative(path: &str) -> &str {
    path.strip_prefix(DATA_DIR)
        .and_then(|p| p.strip_prefix('/'))
        .unwrap_or(path)
}

/// Checks a restored tree `dir` (laid out as a data directory) against the
/// manifest: checksums, database integrity, bus records and topic cuts.
pub(crate) fn check_tree(
    manifest: &BackupManifest,
    dir: &Path,
    skip: &BTreeSet<String>,
) -> Result<VerifyReport, BackupError> {
    let mut report = VerifyReport {
        manifest: manifest.clone(),
        files_checked: 0,
        databases_checked: 0,
        records_checked: 0,
        replayed: Vec::new(),
        problems: Vec::new(),
        took_ms: 0,
    };
    let mut records: BTreeMap<String, u64> = BTreeMap::new();
    for file in manifest.files.iter().filter(|f| !skip.contains(&f.path)) {
        let rel = data_relative(&file.path);
        let path = join(dir, rel);
        let problem = |check, detail: String| Problem {
            file: file.path.clone(),
            check,
            detail,
        };
        if !path.is_file() {
            report
                .problems
                .push(problem("present", "the file is missing".into()));
            continue;
        }
        let (size, sha256) = digest_file(&path)?;
        if size != file.size {
            report.problems.push(problem(
                "size",
                format!("{size} bytes, the manifest says {}", file.size),
            ));
            continue;
        }
        if sha256 != file.sha256 {
            report.problems.push(problem(
                "sha256",
                format!("{sha256}, the manifest says {}", file.sha256),
            ));
            continue;
        }
        report.files_checked += 1;
        match file.kind {
            FileKind::Store | FileKind::ReadStore => match integrity(&path) {
                Ok(()) => report.databases_checked += 1,
                Err(detail) => report.problems.push(problem("integrity_check", detail)),
            },
            FileKind::BusSegment => match scan_segment(&path) {
                Ok(scan) => {
                    report.records_checked += scan.records;
                    if let Some(topic) = topic_of(rel) {
                        *records.entry(topic).or_default() += scan.records;
                    }
                    if let Some(damage) = scan.damage {
                        report.problems.push(problem(
                            "bus records",
                            format!("{} at byte {}", damage.reason, damage.position),
                        ));
                    }
                }
                Err(e) => report.problems.push(problem("bus records", e.to_string())),
            },
            _ => {}
        }
    }
    for (topic, cut) in &manifest.topics {
        let found = records.get(topic).copied().unwrap_or(0);
        if found != cut.records {
            report.problems.push(Problem {
                file: format!("{DATA_DIR}/bus/topics/{topic}"),
                check: "topic cut",
                detail: format!(
                    "{found} valid records, the manifest's cut has {}",
                    cut.records
                ),
            });
        }
    }
    Ok(report)
}

fn topic_of(rel: &str) -> Option<String> {
    rel.strip_prefix("bus/topics/")
        .and_then(|r| r.rsplit_once('/'))
        .map(|(topic, _)| topic.to_owned())
}

/// `PRAGMA integrity_check`, or what it reported.
fn integrity(path: &Path) -> Result<(), String> {
    let conn = layout::open_existing(path).map_err(|e| e.to_string())?;
    let mut stmt = conn
        .prepare("PRAGMA integrity_check")
        .map_err(|e| e.to_string())?;
    let rows: Vec<String> = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| e.to_string())?;
    if rows == ["ok"] {
        Ok(())
    } else {
        Err(rows.join("; "))
    }
}

/// Files in the backup's `data/` the manifest does not list: something
/// was added after it was taken.
fn unlisted(manifest: &BackupManifest, backup: &Path) -> Result<Vec<Problem>, BackupError> {
    let listed: BTreeSet<String> = manifest
        .files
        .iter()
        .map(|f| stored_path(manifest, &f.path))
        .collect();
    let data: PathBuf = backup.join(DATA_DIR);
    let mut found = Vec::new();
    collect(&data, &data, &mut found)?;
    Ok(found
        .into_iter()
        .map(|rel| format!("{DATA_DIR}/{rel}"))
        .filter(|path| !listed.contains(path))
        .map(|file| Problem {
            file,
            check: "listed",
            detail: "the file is not in backup.json".into(),
        })
        .collect())
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), BackupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(BackupError::io("read directory", dir)(e)),
    };
    for entry in entries {
        let path = entry
            .map_err(BackupError::io("read directory", dir))?
            .path();
        if path.is_dir() {
            collect(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            out.push(
                rel.components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/"),
            );
        }
    }
    Ok(())
}
