//! What can go wrong with releases, phrased for the person fixing it.

use std::path::PathBuf;

/// An error from the release ledger.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A service's program is not where its command says.
    #[error(
        "service {service:?}: its program {program:?} was not found (relative to {dir}, or on PATH); run `mortar build` first"
    )]
    MissingProgram {
        /// The service.
        service: String,
        /// The command's first word.
        program: String,
        /// The manifest's directory.
        dir: String,
    },
    /// The ledger was altered or damaged.
    #[error("the release ledger {} is damaged at line {line}: {detail}; restore it from a backup", path.display())]
    Corrupt {
        /// The ledger file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// A stored artifact no longer matches its digest.
    #[error("the stored copy {} no longer matches its SHA-256 {digest}; restore it from a backup", path.display())]
    Tampered {
        /// The stored file.
        path: PathBuf,
        /// The digest it must have.
        digest: String,
    },
    /// No release has this id.
    #[error("no release {id:?}; `mortar releases` lists them")]
    Unknown {
        /// The id asked for.
        id: String,
    },
}

impl ReleaseError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ReleaseError::Io {
            path: path.into(),
            source,
        }
    }
}
