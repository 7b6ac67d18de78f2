//! Restoring a backup into a data directory: staged beside it, verified
//! there, then swapped in by rename with the old data kept aside, so the
//! current data is never deleted and never half-replaced.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::checks::{check_tree, copy_tree};
use crate::manifest::sync_file;
use crate::postgres::{self, DUMP_DIR, PostgresDump};
use crate::{BackupError, BackupManifest, DATA_DIR, VerifyReport};
use mortar_secrets::Identity;

/// What a restore did.
#[derive(Debug)]
pub struct RestoreReport {
    /// The verification of the staged copy (all checks passed).
    pub verified: VerifyReport,
    /// Where the data directory's previous contents were moved, if it had any.
    pub previous: Option<PathBuf>,
    /// The PostgreSQL schemas the restore replaced, as renamed aside.
    pub previous_schemas: Vec<String>,
    /// The services whose stores alone were restored into a running node
    /// ([`restore_services`]); empty for a whole data directory.
    pub services: Vec<String>,
}

/// How to restore.
#[derive(Debug, Default, Clone, Copy)]
pub struct RestoreOptions<'a> {
    /// Restore even though a node holds the data directory.
    pub force: bool,
    /// The key that decrypts an encrypted backup.
    pub key: Option<&'a Identity>,
    /// The PostgreSQL database (`postgres://…/db`) to restore a dump into.
    pub postgres: Option<&'a str>,
}

/// Whether a node holds the lock of `data_dir` right now.
pub fn node_running(data_dir: &Path) -> Result<bool, BackupError> {
    let lock_path = data_dir.join("node.lock");
    let lock = match OpenOptions::new().write(true).open(&lock_path) {
        Ok(lock) => lock,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(BackupError::io("open", &lock_path)(e)),
    };
    match lock.try_lock() {
        Ok(()) => Ok(false),
        Err(std::fs::TryLockError::WouldBlock) => Ok(true),
        Err(std::fs::TryLockError::Error(e)) => Err(BackupError::io("lock", &lock_path)(e)),
    }
}

/// Restores `backup` into `data_dir`. Refuses when a node holds the data
/// directory unless `force` (the node must then be restarted to see the
/// restored data). Refuses any backup whose staged copy fails a check,
/// naming the file and the check; nothing in `data_dir` changes then.
///
/// An encrypted backup is decrypted with `options.key`; a backup of
/// PostgreSQL stores is restored into `options.postgres` after the files
/// passed their checks, its current schemas renamed aside.
pub fn restore(
    backup: &Path,
    data_dir: &Path,
    options: &RestoreOptions<'_>,
) -> Result<RestoreReport, BackupError> {
    let manifest = BackupManifest::load(backup)?;
    if !options.force && node_running(data_dir)? {
        return Err(BackupError::NodeRunning(data_dir.to_owned()));
    }
    let postgres = postgres_target(&manifest, backup, options)?;
    let (parent, name) = split(data_dir)?;
    let (staging, verified) = stage(&manifest, backup, &parent, &name, options.key)?;
    let stamp = OffsetDateTime::now_utc().unix_timestamp();
    let previous_schemas = restore_postgres(postgres, &staging, stamp)?;
    let previous = if data_dir.exists() {
        let aside = parent.join(format!("{name}.before-restore-{stamp}"));
        std::fs::rename(data_dir, &aside).map_err(BackupError::io("move aside", data_dir))?;
        Some(aside)
    } else {
        None
    };
    if let Err(e) = std::fs::rename(&staging, data_dir) {
        if let Some(aside) = &previous {
            let _ = std::fs::rename(aside, data_dir);
        }
        return Err(BackupError::io("move into place", &staging)(e));
    }
    sync_file(&parent)?;
    Ok(RestoreReport {
        verified,
        previous,
        previous_schemas,
        services: Vec::new(),
    })
}

/// Restores only the stores of `services` (their `services/<name>/`
/// directories and, for PostgreSQL, the dump) into the data directory of
/// a running node whose instances of them the caller has stopped. The
/// node's own state (bus logs and acks, releases, CA) is left as it is:
/// the running node owns it. The backup is staged and verified first; the
/// services' current directories are moved to
/// `<data dir>.before-restore-<time>/services/`, never deleted.
pub fn restore_services(
    backup: &Path,
    data_dir: &Path,
    services: &[String],
    options: &RestoreOptions<'_>,
) -> Result<RestoreReport, BackupError> {
    let manifest = BackupManifest::load(backup)?;
    let postgres = postgres_target(&manifest, backup, options)?;
    let (parent, name) = split(data_dir)?;
    let (staging, verified) = stage(&manifest, backup, &parent, &name, options.key)?;
    let stamp = OffsetDateTime::now_utc().unix_timestamp();
    let previous_schemas = restore_postgres(postgres, &staging, stamp)?;
    let aside = parent.join(format!("{name}.before-restore-{stamp}"));
    let mut restored = Vec::new();
    let result = (|| {
        for service in services {
            let staged = staging.join("services").join(service);
            let current = data_dir.join("services").join(service);
            if current.exists() {
                let kept = aside.join("services").join(service);
                std::fs::create_dir_all(aside.join("services"))
                    .map_err(BackupError::io("create", &aside))?;
                std::fs::rename(&current, &kept)
                    .map_err(BackupError::io("move aside", &current))?;
            }
            if staged.exists() {
                std::fs::rename(&staged, &current)
                    .map_err(BackupError::io("move into place", &staged))?;
            } else {
                std::fs::create_dir_all(&current).map_err(BackupError::io("create", &current))?;
            }
            restored.push(service.clone());
        }
        sync_file(&data_dir.join("services"))
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result?;
    Ok(RestoreReport {
        verified,
        previous: aside.exists().then_some(aside),
        previous_schemas,
        services: restored,
    })
}

/// The database a backup's PostgreSQL dump is restored into, if it has one.
fn postgres_target<'m, 'o>(
    manifest: &'m BackupManifest,
    backup: &Path,
    options: &RestoreOptions<'o>,
) -> Result<Option<(&'m PostgresDump, &'o str)>, BackupError> {
    match (&manifest.postgres, options.postgres) {
        (None, _) => Ok(None),
        (Some(dump), Some(url)) => Ok(Some((dump, url))),
        (Some(dump), None) => Err(BackupError::Input(format!(
            "backup {} holds a PostgreSQL dump of database {}; pass --store-url postgres://… (the database the node runs with) to restore it",
            backup.display(),
            dump.database
        ))),
    }
}

/// pg_restore of the staged dump, which then leaves the staging directory;
/// returns the schemas kept aside. Removes the staging directory on failure.
fn restore_postgres(
    postgres: Option<(&PostgresDump, &str)>,
    staging: &Path,
    stamp: i64,
) -> Result<Vec<String>, BackupError> {
    let Some((dump, url)) = postgres else {
        return Ok(Vec::new());
    };
    let file = staging.join(dump.file.trim_start_matches(&format!("{DATA_DIR}/")));
    match postgres::restore_into(&file, dump, url, stamp) {
        Ok(aside) => {
            // The dump is in the database now; the data directory does not keep it.
            let dumps = staging.join(DUMP_DIR);
            std::fs::remove_dir_all(&dumps).map_err(BackupError::io("remove", &dumps))?;
            Ok(aside)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(staging);
            Err(e)
        }
    }
}

/// The directory holding `data_dir`, and its name.
fn split(data_dir: &Path) -> Result<(PathBuf, String), BackupError> {
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            BackupError::Input(format!(
                "{} cannot be a data directory to restore into; name a directory",
                data_dir.display()
            ))
        })?;
    let parent = match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(BackupError::io("create", &parent))?;
    Ok((parent, name))
}

/// Copies (decrypting) the backup into a staging directory beside the
/// data directory and checks it there; removes it again when a check fails.
fn stage(
    manifest: &BackupManifest,
    backup: &Path,
    parent: &Path,
    name: &str,
    key: Option<&Identity>,
) -> Result<(PathBuf, VerifyReport), BackupError> {
    let staging = parent.join(format!("{name}.restoring-{}", manifest.id));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(BackupError::io("remove", &staging))?;
    }
    std::fs::create_dir_all(&staging).map_err(BackupError::io("create", &staging))?;
    let staged = copy_tree(manifest, backup, &staging, key).and_then(|(undecryptable, skip)| {
        let mut report = check_tree(manifest, &staging, &skip)?;
        report.problems.splice(0..0, undecryptable);
        Ok(report)
    });
    match staged.and_then(|report| report.into_result(backup)) {
        Ok(report) => Ok((staging, report)),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}
