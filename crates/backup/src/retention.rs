//! The backups in a directory, newest last, and `--keep N` retention.

use std::path::Path;

use crate::{BackupError, BackupManifest};

/// Every complete backup under `backups_dir` (a subdirectory with a
/// readable `backup.json`), oldest first. Other entries are ignored.
pub fn list(backups_dir: &Path) -> Result<Vec<BackupManifest>, BackupError> {
    let entries = match std::fs::read_dir(backups_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(BackupError::io("read directory", backups_dir)(e)),
    };
    let mut backups = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(BackupError::io("read directory", backups_dir))?
            .path();
        if path.is_dir()
            && let Ok(manifest) = BackupManifest::load(&path)
            && path.file_name().and_then(|n| n.to_str()) == Some(manifest.id.as_str())
        {
            backups.push(manifest);
        }
    }
    backups.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(backups)
}

/// Deletes the oldest backups so that at most `keep` remain; returns the
/// ids deleted. `keep` must be at least 1: retention never deletes the
/// newest backup.
pub fn prune(backups_dir: &Path, keep: usize) -> Result<Vec<String>, BackupError> {
    if keep == 0 {
        return Err(BackupError::Input(
            "--keep 0 would delete every backup; keep at least 1".into(),
        ));
    }
    let backups = list(backups_dir)?;
    let excess = backups.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for manifest in backups.into_iter().take(excess) {
        let path = backups_dir.join(&manifest.id);
        std::fs::remove_dir_all(&path).map_err(BackupError::io("remove", &path))?;
        removed.push(manifest.id);
    }
    Ok(removed)
}
