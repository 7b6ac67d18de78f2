//! Taking a backup while the node runs.
//!
//! The copy is consistent because of the order it is taken in; each phase
//! may only be *behind* the phases after it, never ahead:
//!
//! 1. consumer groups' acks: a group acks after it has processed, so what
//!    the acks say was processed is already in the stores copied next;
//! 2. read stores, then event stores (SQLite `VACUUM INTO`, a transaction-
//!    consistent copy): a read model's checkpoint never passes the events
//!    copied after it, and an outbox row marked published is in the bus;
//! 3. instances' bus outboxes, then bus segments: every record the bus
//!    acknowledged before this phase is in the copy, which is cut after the
//!    last whole, checksummed record of each segment;
//! 4. the release ledger and its blobs, the deploy history, the node's CA.
//!
//! Whatever is behind is redelivered or republished after a restore (the
//! bus is at-least-once, the cqrs inbox deduplicates): nothing acknowledged
//! before a phase's cut is lost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use mortar_bus::inspect::scan_segment;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::encryption::encrypt_files;
use crate::layout::{self, join};
use crate::manifest::{PLAIN_FORMAT, sync_file};
use crate::postgres::{DUMP_DIR, database_of, dump};
use crate::{BackupError, BackupManifest, DATA_DIR, FileEntry, FileKind, TopicCut, digest_file};

/// What to back up and where.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// The node's data directory.
    pub data_dir: PathBuf,
    /// The directory that holds backups; each one is a subdirectory.
    pub backups_dir: PathBuf,
    /// Encrypt every file of the backup for these recipients.
    pub encrypt_to: Option<mortar_secrets::Recipients>,
    /// The PostgreSQL database the services' stores are in (`mortar up
    /// --store-url`), if they are: its service schemas are dumped.
    pub postgres: Option<String>,
}

/// Takes a backup of `options.data_dir` into a new subdirectory of
/// `options.backups_dir` and returns its manifest. The backup is written
/// as `<id>.partial` and renamed when complete, so an interrupted one is
/// never listed, verified or restored.
pub fn create(options: &CreateOptions) -> Result<BackupManifest, BackupError> {
    let started = Instant::now();
    let source = &options.data_dir;
    if !source.is_dir() {
        return Err(BackupError::Input(format!(
            "data directory {} does not exist; pass the node's --data-dir",
            source.display()
        )));
    }
    if options.backups_dir.starts_with(source) {
        return Err(BackupError::Input(format!(
            "backups directory {} is inside the data directory {}; choose one outside it with --to",
            options.backups_dir.display(),
            source.display()
        )));
    }
    let now = OffsetDateTime::now_utc();
    let id = backup_id(now);
    std::fs::create_dir_all(&options.backups_dir)
        .map_err(BackupError::io("create", &options.backups_dir))?;
    let partial = options.backups_dir.join(format!("{id}.partial"));
    let data = partial.join(DATA_DIR);
    std::fs::create_dir_all(&data).map_err(BackupError::io("create", &data))?;
    private(&partial)?;

    let mut by_kind: BTreeMap<u8, Vec<(String, FileKind)>> = BTreeMap::new();
    for rel in layout::files(source)? {
        let kind = match layout::classify(source, &rel) {
            Ok(kind) => kind,
            // Bus retention may delete a segment between listing and reading it.
            Err(BackupError::Io { source: e, .. }) if e.kind() == std::io::ErrorKind::NotFound => {
                continue;
            }
            Err(e) => return Err(e),
        };
        by_kind.entry(phase(kind)).or_default().push((rel, kind));
    }

    let mut cuts = Vec::new();
    let mut files = Vec::new();
    let mut topics: BTreeMap<String, TopicCut> = BTreeMap::new();
    let mut postgres = None;
    // The PostgreSQL stores are dumped where the SQLite ones are copied:
    // after the acks and before the outboxes and bus segments.
    let dump_phase = phase(FileKind::Store);
    by_kind.entry(dump_phase).or_default();
    for (phase, entries) in by_kind {
        if phase == dump_phase
            && let Some(url) = &options.postgres
        {
            cuts.push((
                "postgres (pg_dump)".to_owned(),
                rfc3339(OffsetDateTime::now_utc()),
            ));
            let rel = format!("{DUMP_DIR}/{}.dump", database_of(url));
            let to = join(&data, &rel);
            std::fs::create_dir_all(data.join(DUMP_DIR))
                .map_err(BackupError::io("create", data.join(DUMP_DIR)))?;
            let path = format!("{DATA_DIR}/{rel}");
            postgres = Some(dump(url, &service_schemas(source)?, &to, &path)?);
            sync_file(&to)?;
            let (size, sha256) = digest_file(&to)?;
            files.push(FileEntry {
                path,
                kind: FileKind::PostgresDump,
                size,
                sha256,
            });
        }
        if entries.is_empty() {
            continue;
        }
        cuts.push((
            phase_name(phase).to_owned(),
            rfc3339(OffsetDateTime::now_utc()),
        ));
        for (rel, kind) in entries {
            let from = join(source, &rel);
            let to = join(&data, &rel);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(BackupError::io("create", parent))?;
            }
            let copied = match kind {
                FileKind::Store | FileKind::ReadStore => copy_database(&from, &to).map(Some)?,
                FileKind::BusSegment => copy_segment(&from, &to, &rel, &mut topics)?,
                _ => copy_file(&from, &to)?,
            };
            if copied.is_none() {
                continue;
            }
            sync_file(&to)?;
            let (size, sha256) = digest_file(&to)?;
            files.push(FileEntry {
                path: format!("{DATA_DIR}/{rel}"),
                kind,
                size,
                sha256,
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));

    let release_id = mortar_release::Ledger::open(source)
        .list()?
        .last()
        .map(|r| r.id.clone());
    let mut manifest = BackupManifest {
        format: PLAIN_FORMAT,
        id: id.clone(),
        created_at: rfc3339(now),
        took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        source: source.display().to_string(),
        release_id,
        cuts,
        topics,
        files,
        encryption: None,
        postgres,
    };
    if let Some(recipients) = &options.encrypt_to {
        encrypt_files(&partial, &mut manifest, recipients)?;
    }
    manifest.save(&partial)?;
    let done = options.backups_dir.join(&id);
    std::fs::rename(&partial, &done).map_err(BackupError::io("rename", &partial))?;
    sync_file(&options.backups_dir)?;
    Ok(manifest)
}

/// The PostgreSQL schema of every service that has run on the node (a
/// directory under `services/`), named as `mortar up --store-url` names
/// them.
fn service_schemas(data_dir: &Path) -> Result<Vec<String>, BackupError> {
    let dir = data_dir.join("services");
    let mut schemas = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(BackupError::io("read directory", &dir))? {
        let entry = entry.map_err(BackupError::io("read directory", &dir))?;
        if entry.path().is_dir() {
            schemas.push(entry.file_name().to_string_lossy().replace('-', "_"));
        }
    }
    schemas.sort();
    Ok(schemas)
}

/// The copy phases, in order (see the module docs).
fn phase(kind: FileKind) -> u8 {
    match kind {
        FileKind::BusAcks => 0,
        FileKind::ReadStore => 1,
        FileKind::Store => 2,
        FileKind::Outbox => 3,
        FileKind::BusSegment => 4,
        FileKind::Release | FileKind::Other | FileKind::PostgresDump => 5,
    }
}

fn phase_name(phase: u8) -> &'static str {
    match phase {
        0 => "bus group acks",
        1 => "read stores",
        2 => "event stores",
        3 => "bus outboxes",
        4 => "bus segments",
        _ => "releases and node files",
    }
}

/// A sortable, file-name-safe id from the time: `20261128T195800.123Z`.
fn backup_id(now: OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year][month][day]T[hour][minute][second].[subsecond digits:3]Z"
    );
    now.format(&format)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// A transaction-consistent copy of a live SQLite database.
fn copy_database(from: &Path, to: &Path) -> Result<(), BackupError> {
    let conn = layout::open_existing(from)?;
    conn.execute("VACUUM INTO ?1", [to.to_string_lossy()])
        .map_err(BackupError::sqlite(from))?;
    copy_permissions(from, to)
}

/// Copies a segment and cuts the copy after its last whole record; records
/// the topic's cut. `None` when retention deleted the segment meanwhile.
fn copy_segment(
    from: &Path,
    to: &Path,
    rel: &str,
    topics: &mut BTreeMap<String, TopicCut>,
) -> Result<Option<()>, BackupError> {
    if copy_file(from, to)?.is_none() {
        return Ok(None);
    }
    let scan = scan_segment(to)?;
    if scan.valid_len < scan.file_len {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(to)
            .map_err(BackupError::io("open", to))?;
        file.set_len(scan.valid_len)
            .map_err(BackupError::io("truncate", to))?;
    }
    let topic = rel
        .trim_start_matches("bus/topics/")
        .rsplit_once('/')
        .map(|(topic, _)| topic.to_owned())
        .unwrap_or_default();
    let cut = topics.entry(topic).or_insert(TopicCut {
        first_offset: scan.base,
        next_offset: scan.base,
        records: 0,
    });
    cut.first_offset = cut.first_offset.min(scan.base);
    cut.next_offset = cut.next_offset.max(scan.next_offset);
    cut.records += scan.records;
    Ok(Some(()))
}

/// Makes the backup directory readable by its owner only: it holds the
/// node's CA key and, until encrypted, every file in plaintext.
fn private(dir: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(BackupError::io("set permissions on", dir))
}

/// Copies a file with its permissions; `None` when it vanished.
fn copy_file(from: &Path, to: &Path) -> Result<Option<()>, BackupError> {
    match std::fs::copy(from, to) {
        Ok(_) => Ok(Some(())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BackupError::io("copy", from)(e)),
    }
}

fn copy_permissions(from: &Path, to: &Path) -> Result<(), BackupError> {
    let perms = std::fs::metadata(from)
        .map_err(BackupError::io("inspect", from))?
        .permissions();
    std::fs::set_permissions(to, perms).map_err(BackupError::io("set permissions on", to))
}
