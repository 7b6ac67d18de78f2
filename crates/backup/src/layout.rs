//! Which files of a data directory a backup holds, and what each one is.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{BackupError, FileKind};

/// Files rewritten at every `mortar up` or tied to one running node; a
/// backup leaves them out and a restored node makes them anew.
const SKIPPED: &[&str] = &[
    "node.lock",
    "node.json",
    "node.json.tmp",
    "admin.token",
    "tls/instances",
    "tls/gateway",
    "tls/node",
];

/// Every file under `root` a backup should hold, as `/`-separated paths
/// relative to it, sorted.
pub(crate) fn files(root: &Path) -> Result<Vec<String>, BackupError> {
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), BackupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir != root => return Ok(()),
        Err(e) => return Err(BackupError::io("read directory", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(BackupError::io("read directory", dir))?;
        let path = entry.path();
        let rel = relative(root, &path);
        if SKIPPED.contains(&rel.as_str()) || is_sqlite_sidecar(&rel) {
            continue;
        }
        let kind = entry
            .file_type()
            .map_err(BackupError::io("inspect", &path))?;
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else if kind.is_file() {
            out.push(rel);
        }
    }
    Ok(())
}

fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// SQLite's write-ahead log, shared memory and rollback journal: the
/// online copy of the database already contains what they hold.
fn is_sqlite_sidecar(rel: &str) -> bool {
    rel.ends_with("-wal") || rel.ends_with("-shm") || rel.ends_with("-journal")
}

/// What the file at `rel` (relative to the data directory `root`) is.
pub(crate) fn classify(root: &Path, rel: &str) -> Result<FileKind, BackupError> {
    let path = root.join(rel);
    if rel.starts_with("bus/topics/") && rel.ends_with(".log") {
        return Ok(FileKind::BusSegment);
    }
    if rel.starts_with("bus/groups/") {
        return Ok(FileKind::BusAcks);
    }
    if rel.starts_with("releases/") {
        return Ok(FileKind::Release);
    }
    if is_sqlite(&path)? {
        return Ok(if has_checkpoints(&path)? {
            FileKind::ReadStore
        } else {
            FileKind::Store
        });
    }
    if rel.starts_with("services/") && rel.contains("/outbox/") {
        return Ok(FileKind::Outbox);
    }
    Ok(FileKind::Other)
}

/// Whether the file starts with SQLite's header.
fn is_sqlite(path: &Path) -> Result<bool, BackupError> {
    let mut header = [0u8; 16];
    let mut file = std::fs::File::open(path).map_err(BackupError::io("read", path))?;
    match file.read_exact(&mut header) {
        Ok(()) => Ok(&header == b"SQLite format 3\0"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(BackupError::io("read", path)(e)),
    }
}

/// A read store is a database with `mortar-cqrs`'s checkpoint table.
fn has_checkpoints(path: &Path) -> Result<bool, BackupError> {
    let conn = open_existing(path)?;
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'mortar_checkpoints'",
        [],
        |row| row.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .map_err(BackupError::sqlite(path))
}

/// Opens an existing database without creating one, waiting up to 30 s
/// for a writer's lock.
pub(crate) fn open_existing(path: &Path) -> Result<rusqlite::Connection, BackupError> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(BackupError::sqlite(path))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(BackupError::sqlite(path))?;
    Ok(conn)
}

/// `root/rel` for a `/`-separated `rel`.
pub(crate) fn join(root: &Path, rel: &str) -> PathBuf {
    rel.split('/').fold(root.to_owned(), |p, part| p.join(part))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn node_files_and_sqlite_sidecars_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        for rel in [
            "node.lock",
            "admin.token",
            "tls/instances/a/key.pem",
            "tls/ca/ca.pem",
            "services/s/store.db-wal",
            "deploys.jsonl",
        ] {
            let path = join(dir.path(), rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
        assert_eq!(
            files(dir.path()).unwrap(),
            vec!["deploys.jsonl".to_owned(), "tls/ca/ca.pem".to_owned()]
        );
    }
}
