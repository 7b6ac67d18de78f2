//! `backup.json`: what a backup holds — every file with its size and
//! SHA-256, the release the node ran, where the bus log was cut, and when.
//! Verification and restore trust nothing a checksum here does not cover.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::BackupError;
use crate::encryption::Encryption;
use crate::postgres::PostgresDump;

/// The manifest's file name inside a backup directory.
pub const MANIFEST_FILE: &str = "backup.json";

/// The directory inside a backup that holds the data files, laid out as
/// the node's data directory (so a restore is a copy).
pub const DATA_DIR: &str = "data";

/// The newest manifest format: readers refuse newer ones. An unencrypted
/// backup is written as format 1 (older mortars read it); an encrypted one
/// as 2, which they refuse rather than miss its files.
pub const FORMAT: u32 = 2;

/// The format of an unencrypted backup.
pub(crate) const PLAIN_FORMAT: u32 = 1;

/// What kind of state a file is, which decides how it is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    /// A service's SQLite store (events, snapshots, outbox table, …).
    Store,
    /// A read model's SQLite store (has `mortar_checkpoints`).
    ReadStore,
    /// A bus topic's log segment, cut after a whole record.
    BusSegment,
    /// A consumer group's acks.
    BusAcks,
    /// A service instance's bus outbox file.
    Outbox,
    /// The release ledger or one of its blobs.
    Release,
    /// Any other file kept as it is: the deploy history, the node's CA.
    Other,
    /// A `pg_dump --format=custom` of the services' PostgreSQL schemas.
    PostgresDump,
}

/// One file of the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Its path inside the backup (`data/…`), `/`-separated.
    pub path: String,
    /// What it is.
    pub kind: FileKind,
    /// The size in bytes.
    pub size: u64,
    /// The SHA-256, hex.
    pub sha256: String,
}

/// The end of one topic's log at the cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicCut {
    /// The first offset kept (the oldest segment's base).
    pub first_offset: u64,
    /// One past the last record in the backup.
    pub next_offset: u64,
    /// Records in the backup.
    pub records: u64,
}

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The backup's name (its directory name).
    pub id: String,
    /// When the backup started (RFC 3339, UTC).
    pub created_at: String,
    /// How long taking it took, in milliseconds.
    pub took_ms: u64,
    /// The data directory it was taken from.
    pub source: String,
    /// The newest release in the ledger at the time, if any.
    pub release_id: Option<String>,
    /// The order the state was copied in, with the time of each cut
    /// (RFC 3339): the order is what makes the copy consistent.
    pub cuts: Vec<(String, String)>,
    /// Where each topic's log was cut.
    pub topics: BTreeMap<String, TopicCut>,
    /// Every file, sorted by path, with the size and SHA-256 of its
    /// plaintext.
    pub files: Vec<FileEntry>,
    /// Set when every file is stored encrypted (`<path>.cms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Set when the services' stores are in PostgreSQL: the dump.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresDump>,
}

impl BackupManifest {
    /// Reads and checks `backup.json` in `dir`.
    pub fn load(dir: &Path) -> Result<BackupManifest, BackupError> {
        let path = dir.join(MANIFEST_FILE);
        let not_a_backup = |problem: String| BackupError::NotABackup {
            path: dir.to_owned(),
            problem,
        };
        let text = std::fs::read(&path)
            .map_err(|e| not_a_backup(format!("cannot read {}: {e}", path.display())))?;
        let manifest: BackupManifest = serde_json::from_slice(&text)
            .map_err(|e| not_a_backup(format!("{MANIFEST_FILE} is not valid: {e}")))?;
        if manifest.format > FORMAT {
            return Err(not_a_backup(format!(
                "{MANIFEST_FILE} has format {}, this mortar reads up to {FORMAT}; use a newer mortar",
                manifest.format
            )));
        }
        for file in &manifest.files {
            let safe = !file.path.starts_with('/')
                && file
                    .path
                    .split('/')
                    .all(|part| part != ".." && !part.is_empty());
            if !safe {
                return Err(not_a_backup(format!(
                    "{MANIFEST_FILE} names a file outside the backup: {:?}",
                    file.path
                )));
            }
        }
        Ok(manifest)
    }

    /// Writes `backup.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), BackupError> {
        let path = dir.join(MANIFEST_FILE);
        let text = serde_json::to_vec_pretty(self).map_err(|e| BackupError::Io {
            action: "encode",
            path: path.clone(),
            source: e.into(),
        })?;
        std::fs::write(&path, text).map_err(BackupError::io("write", &path))?;
        sync_file(&path)
    }

    /// The bytes of every file together.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// The size and SHA-256 (hex) of a file, read in chunks.
pub fn digest_file(path: &Path) -> Result<(u64, String), BackupError> {
    let mut file = std::fs::File::open(path).map_err(BackupError::io("read", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(BackupError::io("read", path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hex(&hasher.finalize())))
}

/// The SHA-256 (hex) of bytes in memory.
pub fn digest_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// fsyncs a file so a finished backup survives a crash.
pub(crate) fn sync_file(path: &Path) -> Result<(), BackupError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(BackupError::io("fsync", path))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> BackupManifest {
        BackupManifest {
            format: FORMAT,
            id: "backup-1".into(),
            created_at: "2026-11-28T00:00:00Z".into(),
            took_ms: 5,
            source: "/d".into(),
            release_id: None,
            cuts: vec![],
            topics: BTreeMap::new(),
            files: vec![FileEntry {
                path: "data/x".into(),
                kind: FileKind::Store,
                size: 1,
                sha256: digest_bytes(b"x"),
            }],
            encryption: None,
            postgres: None,
        }
    }

    #[test]
    fn round_trips_and_refuses_paths_outside_the_backup() {
        let dir = tempfile::tempdir().unwrap();
        sample().save(dir.path()).unwrap();
        assert_eq!(BackupManifest::load(dir.path()).unwrap(), sample());
        let mut bad = sample();
        bad.files[0].path = "data/../../etc/passwd".into();
        bad.save(dir.path()).unwrap();
        let err = BackupManifest::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("outside the backup"), "{err}");
    }

    #[test]
    fn digests_match_sha256() {
        assert_eq!(
            digest_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(digest_file(&path).unwrap(), (3, digest_bytes(b"abc")));
    }
}
