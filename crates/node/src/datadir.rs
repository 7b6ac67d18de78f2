//! The node's data directory: an exclusive lock and the `node.json` that
//! tells one-off commands where the running node's admin API is.

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The name of the default data directory, next to the manifest.
pub const DEFAULT_DIR: &str = ".mortar";

/// What a running node publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's process id.
    pub pid: u32,
    /// The admin API's base URL.
    pub admin_url: String,
    /// The manifest the node runs.
    pub manifest: PathBuf,
    /// When the node started (RFC 3339).
    pub started_at: String,
    /// Where the node's DNS server answers for service names (UDP and TCP).
    #[serde(default)]
    pub dns_addr: Option<SocketAddr>,
    /// Where the embedded bus accepts clients (`mortar://…`).
    #[serde(default)]
    pub bus_url: Option<String>,
    /// The gateway: the application's public entry point.
    #[serde(default)]
    pub gateway_url: Option<String>,
}

/// Errors around the data directory.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Another node holds the lock.
    #[error(
        "another mortar node is already running with data directory {0}; stop it first or pass a different --data-dir"
    )]
    Locked(PathBuf),
    /// An I/O error, with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `node.json` is missing: no node has run here.
    #[error("no running node found: {0} does not exist; start one with `mortar up`")]
    NoNode(PathBuf),
    /// `node.json` exists but is not valid.
    #[error("{path} is not a valid node file: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A data directory held exclusively by this node for its lifetime.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates (if needed) and locks the directory.
    pub fn lock(path: &Path) -> Result<Self, DataDirError> {
        std::fs::create_dir_all(path).map_err(io(path))?;
        let lock_path = path.join("node.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(DataDirError::Locked(path.to_owned()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        Ok(DataDir {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Publishes `node.json` atomically (write to a temp file, then rename),
    /// so a reader never sees half a file.
    pub fn publish(&self, info: &NodeInfo) -> Result<(), DataDirError> {
        let file = self.path.join("node.json");
        let tmp = self.path.join("node.json.tmp");
        let text = serde_json::to_vec_pretty(info).unwrap_or_default();
        std::fs::write(&tmp, text).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &file).map_err(io(&file))
    }

    /// Removes `node.json` at shutdown.
    pub fn unpublish(&self) {
        let _ = std::fs::remove_file(self.path.join("node.json"));
    }
}

/// Reads the `node.json` of a data directory.
pub fn read_node_info(dir: &Path) -> Result<NodeInfo, DataDirError> {
    let file = dir.join("node.json");
    let text = match std::fs::read(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DataDirError::NoNode(file));
        }
        Err(e) => return Err(io(&file)(e)),
    };
    serde_json::from_slice(&text).map_err(|e| DataDirError::Corrupt {
        path: file,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_and_node_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDir::lock(dir.path()).unwrap();
        assert!(matches!(
            DataDir::lock(dir.path()),
            Err(DataDirError::Locked(_))
        ));
        assert!(matches!(
            read_node_info(dir.path()),
            Err(DataDirError::NoNode(_))
        ));
        let info = NodeInfo {
            pid: 7,
            admin_url: "http://127.0.0.1:1".into(),
            manifest: "/x/mortar.toml".into(),
            started_at: "now".into(),
            dns_addr: None,
            bus_url: None,
            gateway_url: None,
        };
        held.publish(&info).unwrap();
        assert_eq!(read_node_info(dir.path()).unwrap(), info);
        held.unpublish();
        drop(held);
        DataDir::lock(dir.path()).unwrap();
    }
}
