//! Restoring a backup into a data directory: staged beside it, verified
//! there, then swapped in by rename with the old data kept aside, so the
//! current data is never deleted and never half-replaced.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::checks::{check_tree, copy_tree};
use crate::manifest::sync_file;
use crate::postgres::{self, DUMP_DIR};
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
    let postgres = match (&manifest.postgres, options.postgres) {
        (None, _) => None,
        (Some(dump), Some(url)) => Some((dump, url)),
        (Some(dump), None) => {
            return Err(BackupError::Input(format!(
                "backup {} holds a PostgreSQL dump of database {}; pass --store-url postgres://… (the database the node runs with) to restore it",
                backup.display(),
                dump.database
            )));
        }
    };
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
    let staging = parent.join(format!("{name}.restoring-{}", manifest.id));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(BackupError::io("remove", &staging))?;
    }
    std::fs::create_dir_all(&staging).map_err(BackupError::io("create", &staging))?;
    let staged =
        copy_tree(&manifest, backup, &staging, options.key).and_then(|(undecryptable, skip)| {
            let mut report = check_tree(&manifest, &staging, &skip)?;
            report.problems.splice(0..0, undecryptable);
            Ok(report)
        });
    let verified = match staged.and_then(|report| report.into_result(backup)) {
        Ok(report) => report,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let stamp = OffsetDateTime::now_utc().unix_timestamp();
    let mut previous_schemas = Vec::new();
    if let Some((dump, url)) = postgres {
        let file = staging.join(dump.file.trim_start_matches(&format!("{DATA_DIR}/")));
        match postgres::restore_into(&file, dump, url, stamp) {
            Ok(aside) => previous_schemas = aside,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
        }
        // The dump is in the database now; the data directory does not keep it.
        let dumps = staging.join(DUMP_DIR);
        std::fs::remove_dir_all(&dumps).map_err(BackupError::io("remove", &dumps))?;
    }
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
    })
}
