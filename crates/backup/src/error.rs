//! What can go wrong taking, checking or restoring a backup; every variant
//! names the file or the step so the operator knows where to look.

use std::path::PathBuf;

/// A backup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file system operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// SQLite refused to copy or check a database.
    #[error("SQLite database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The error.
        source: rusqlite::Error,
    },
    /// A bus log could not be read.
    #[error("bus log: {0}")]
    Bus(#[from] mortar_bus::BusError),
    /// The release ledger could not be read.
    #[error("release ledger: {0}")]
    Release(#[from] mortar_release::ReleaseError),
    /// `backup.json` is missing or not a backup manifest.
    #[error(
        "{path} is not a mortar backup: {problem}; pass the directory `mortar backup create` made (see `mortar backup list`)"
    )]
    NotABackup {
        /// The file or directory given.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Verification found problems; restoring it is refused.
    #[error("backup {path} failed verification ({count} problem(s)); first: {first}")]
    Invalid {
        /// The backup.
        path: PathBuf,
        /// How many checks failed.
        count: usize,
        /// The first failure, naming its file and check.
        first: String,
    },
    /// The target directory is held by a running node.
    #[error(
        "a mortar node is running with data directory {0}; stop it first (`mortar` Ctrl-C), or pass --force to stop its services, restore their stores and start them again"
    )]
    NodeRunning(PathBuf),
    /// An encrypted backup was given no key.
    #[error(
        "backup {0} is encrypted; pass --key with the private key of its recipient (or set MORTAR_SECRETS_KEY)"
    )]
    KeyRequired(PathBuf),
    /// The key given is not one the backup was encrypted for.
    #[error("the key {} cannot decrypt this backup: it was encrypted for {}", key.display(), if recipients.is_empty() { "other recipients".to_owned() } else { recipients.join(", ") })]
    NotARecipient {
        /// The key tried.
        key: PathBuf,
        /// Who the backup is encrypted for.
        recipients: Vec<String>,
    },
    /// Encrypting or decrypting failed, or a certificate or key is unusable.
    #[error(transparent)]
    Secrets(#[from] mortar_secrets::SecretsError),
    /// PostgreSQL, `pg_dump` or `pg_restore` failed.
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    /// Bad input from the caller (a count, a directory).
    #[error("{0}")]
    Input(String),
}

impl BackupError {
    /// A closure turning an I/O error about `path` into a [`BackupError`].
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> BackupError {
        let path = path.into();
        move |source| BackupError::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn sqlite(path: impl Into<PathBuf>) -> impl FnOnce(rusqlite::Error) -> BackupError {
        let path = path.into();
        move |source| BackupError::Sqlite { path, source }
    }
}
