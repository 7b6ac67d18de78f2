//! What an instance runs: a service's program, arguments and environment at
//! one version. The node starts every service at its boot revision (the
//! manifest as it is on disk); `mortar deploy` moves a service to a
//! revision built from an immutable release.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mortar_manifest::{Manifest, ServiceSpec};
use mortar_release::{Ledger, Release, ReleaseError};

/// The version label of the revision a node starts with: the manifest and
/// programs as they were on disk at start, not a recorded release.
pub const BOOT_VERSION: &str = "boot";

/// One runnable version of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    /// `boot`, or the id of the release it comes from; instances register
    /// under it, and the gateway splits traffic by it.
    pub version: String,
    /// The service's manifest settings (health, grace period, restart and
    /// deploy policies) — those of the running manifest for every revision.
    pub spec: Arc<ServiceSpec>,
    /// The program to execute.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its full environment (the node's variables and the release's `env`).
    pub env: BTreeMap<String, String>,
}

/// Why a release cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum RevisionError {
    /// The release does not have the service.
    #[error("release {release} has no service {service:?}; it has: {known}")]
    NoSuchService {
        /// The release id.
        release: String,
        /// The service asked for.
        service: String,
        /// The services it has.
        known: String,
    },
    /// A stored file is missing or changed.
    #[error(transparent)]
    Release(#[from] ReleaseError),
}

impl Revision {
    /// The revision the manifest describes, with `base_env` (what the node
    /// sets for the service) under the manifest's `env`.
    pub(crate) fn boot(
        manifest: &Manifest,
        spec: &ServiceSpec,
        base_env: &BTreeMap<String, String>,
    ) -> Revision {
        let mut env = base_env.clone();
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        Revision {
            version: BOOT_VERSION.to_owned(),
            spec: Arc::new(spec.clone()),
            program: manifest.resolve_program(spec),
            args: spec.command.get(1..).unwrap_or_default().to_vec(),
            env,
        }
    }

    /// The revision of `service` in `release`: its command and `env` as
    /// recorded, with every file the command names run from the release's
    /// stored copy (checked against its digest first), unless the file on
    /// disk still has exactly those bytes. Programs named bare (`python3`)
    /// are found on `PATH`, as at boot.
    pub(crate) fn from_release(
        ledger: &Ledger,
        release: &Release,
        spec: &Arc<ServiceSpec>,
        base_env: &BTreeMap<String, String>,
    ) -> Result<Revision, RevisionError> {
        let Some(service) = release.services.iter().find(|s| s.name == spec.name) else {
            return Err(RevisionError::NoSuchService {
                release: release.id.clone(),
                service: spec.name.clone(),
                known: release
                    .services
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        ledger.verify(release)?;
        let resolve = |word: &str| -> PathBuf {
            let Some(artifact) = service
                .artifacts
                .iter()
                .find(|a| a.named == word && word.contains('/'))
            else {
                return PathBuf::from(word);
            };
            let source = Path::new(&artifact.source);
            if mortar_release::digest_of_file(source).is_ok_and(|d| d == artifact.sha256) {
                source.to_owned()
            } else {
                ledger.artifact_path(artifact)
            }
        };
        let program = match service.command.first() {
            Some(word) if word.contains('/') => resolve(word),
            Some(word) => PathBuf::from(word),
            None => PathBuf::new(),
        };
        let args = service
            .command
            .iter()
            .skip(1)
            .map(|word| resolve(word).display().to_string())
            .collect();
        let mut env = base_env.clone();
        env.extend(service.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(Revision {
            version: release.id.clone(),
            spec: spec.clone(),
            program,
            args,
            env,
        })
    }
}
