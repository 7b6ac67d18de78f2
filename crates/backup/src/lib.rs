//! Backups of a mortar node's data directory that are checked by restoring
//! them.
//!
//! - [`create`] takes an online, consistent snapshot while services keep
//!   writing: SQLite stores through `VACUUM INTO`, bus segments cut after
//!   their last whole record, everything listed with its SHA-256 in
//!   `backup.json` ([`BackupManifest`]).
//! - [`verify`] checks every checksum, restores into a scratch directory,
//!   runs SQLite's integrity check on every database and every bus record's
//!   checksum, replays every service's event store into fresh projections
//!   and compares them with the backed-up read models (`replay`), and names
//!   the file and the check of every failure.
//! - [`restore`] restores into a staging directory beside the target,
//!   verifies it there, and only then swaps it in by rename, keeping the
//!   old data aside.
//! - [`list`] and [`prune`]: the backups in a directory, and retention.
//!
//! The cut order that makes the copy consistent is described in
//! [`create`]'s module.

mod checks;
mod create;
mod encryption;
mod error;
mod layout;
mod manifest;
mod postgres;
mod replay;
mod restore;
mod retention;

pub use checks::{Problem, VerifyOptions, VerifyReport, verify};
pub use create::{CreateOptions, create};
pub use encryption::{ENCRYPTED_SUFFIX, Encryption};
pub use error::BackupError;
pub use manifest::{
    BackupManifest, DATA_DIR, FORMAT, FileEntry, FileKind, MANIFEST_FILE, TopicCut, digest_bytes,
    digest_file,
};
pub use postgres::PostgresDump;
pub use replay::{ReplayOutcome, ServiceProgram, StoreUrls};
pub use restore::{RestoreOptions, RestoreReport, node_running, restore, restore_services};
pub use retention::{list, prune};
