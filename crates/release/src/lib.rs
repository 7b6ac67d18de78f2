//! Immutable releases of an application.
//!
//! Why: a deployment must name exactly what it runs, and rolling back must
//! mean running an older, unchanged set of programs — not rebuilding one.
//! [`Ledger::record`] takes the manifest, every service's configuration and
//! every file a service's command names (its binary, or a script), stores a
//! copy of each file under its SHA-256 in the data directory, and appends a
//! [`Release`] to an append-only, hash-chained ledger. A release never
//! changes; recording the same content again returns the existing release.

mod digest;
mod error;
mod ledger;
mod release;

pub use error::ReleaseError;
pub use ledger::Ledger;
pub use release::{Artifact, Release, ServiceRelease};

/// The SHA-256 (lower-case hex) of the file at `path`, as releases record
/// it: a deploy runs a file from disk only when it still has these bytes.
pub fn digest_of_file(path: &std::path::Path) -> Result<String, ReleaseError> {
    digest::of_file(path).map(|(sha256, _)| sha256)
}
