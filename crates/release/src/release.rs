//! What a release records.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One file a service's command names (its program, or a script it runs),
/// as recorded: the stored copy lives under its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// The word of the command that named it.
    pub named: String,
    /// Where it was found when the release was recorded.
    pub source: String,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// A service as released: what it runs and with which configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRelease {
    /// The service's name.
    pub name: String,
    /// Its command, as in the manifest.
    pub command: Vec<String>,
    /// Its environment, as in the manifest.
    pub env: BTreeMap<String, String>,
    /// How many instances the manifest asks for.
    pub instances: u32,
    /// Every file its command names.
    pub artifacts: Vec<Artifact>,
}

/// An immutable release: identified by a digest of its content, so the
/// same content always has the same id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The first 12 hex digits of the SHA-256 of the content below.
    pub id: String,
    /// Its position in the ledger, from 1.
    pub seq: u64,
    /// When it was recorded (RFC 3339, UTC).
    pub created_at: String,
    /// The application's name.
    pub app: String,
    /// The SHA-256 of the manifest file's bytes.
    pub manifest_sha256: String,
    /// Every service, in manifest order.
    pub services: Vec<ServiceRelease>,
    /// The SHA-256 of the ledger line before this one (a hash chain, so an
    /// edited or removed line is detected); `None` for the first.
    pub prev: Option<String>,
}

/// The part of a release its id is computed from.
#[derive(Serialize)]
pub(crate) struct Content<'a> {
    pub(crate) app: &'a str,
    pub(crate) manifest_sha256: &'a str,
    pub(crate) services: &'a [ServiceRelease],
}
