//! The deploy history: one JSON line per finished deploy in
//! `<data dir>/deploys.jsonl`, appended and fsynced, so `mortar history`
//! and `mortar rollback` know what ran before, across node restarts.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::DeployStatus;

/// The history file of a data directory.
fn file(data_dir: &Path) -> PathBuf {
    data_dir.join("deploys.jsonl")
}

/// Why the history cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[error("deploy history {}: {detail}", path.display())]
pub struct HistoryError {
    /// The history file.
    pub path: PathBuf,
    /// What went wrong.
    pub detail: String,
}

/// Appends a finished deploy.
pub(crate) fn append(data_dir: &Path, deploy: &DeployStatus) -> Result<(), HistoryError> {
    let path = file(data_dir);
    let fail = |detail: String| HistoryError {
        path: path.clone(),
        detail,
    };
    let line = serde_json::to_string(deploy).map_err(|e| fail(e.to_string()))?;
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| fail(e.to_string()))?;
    f.write_all(format!("{line}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| fail(e.to_string()))
}

/// Every finished deploy (of `service`, or all), oldest first. A torn last
/// line (a crash mid-append) is skipped; any other bad line is an error.
pub fn read_history(
    data_dir: &Path,
    service: Option<&str>,
) -> Result<Vec<DeployStatus>, HistoryError> {
    let path = file(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(HistoryError {
                path,
                detail: e.to_string(),
            });
        }
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<DeployStatus>(line) {
            Ok(d) if service.is_none_or(|s| d.service == s) => out.push(d),
            Ok(_) => {}
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => {
                return Err(HistoryError {
                    path,
                    detail: format!("line {}: {e}", i + 1),
                });
            }
        }
    }
    Ok(out)
}
