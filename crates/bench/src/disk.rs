//! The disk's own sync latency, measured beside a bus run: the embedded
//! broker acknowledges a publish only once fsynced (and, with `--delivery
//! synced`, delivers it only then), so the disk's `fdatasync` time is the
//! floor under that latency. On a shared VM that floor moves from minute to
//! minute; printing it with the run tells a slow pipeline from a slow disk.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use crate::stats::Summary;

/// Bytes written before each sync: about one group commit at 50,000
/// msg/s of 256-byte messages.
const WRITE_BYTES: usize = 8 * 1024;

/// Overwrites `count` blocks of [`WRITE_BYTES`] of a preallocated file in
/// `dir` (as the broker's writer overwrites a preallocated segment), each
/// followed by `fdatasync`, and returns the sync times in microseconds.
/// Blocking; the file is removed afterwards.
pub fn fdatasync_latency(dir: &Path, count: usize) -> std::io::Result<Summary> {
    let path = dir.join("disk-probe.tmp");
    let result = probe(&path, count.max(1));
    let _ = std::fs::remove_file(&path);
    result
}

fn probe(path: &Path, count: usize) -> std::io::Result<Summary> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let zeros = vec![0u8; WRITE_BYTES];
    for _ in 0..count {
        file.write_all(&zeros)?;
    }
    file.sync_all()?;
    let block = vec![b'x'; WRITE_BYTES];
    let mut micros = Vec::with_capacity(count);
    for i in 0..count {
        file.write_all_at(&block, (i * WRITE_BYTES) as u64)?;
        let started = Instant::now();
        file.sync_data()?;
        micros.push(started.elapsed().as_secs_f64() * 1e6);
    }
    Ok(Summary::of(&micros).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_every_sync_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let summary = fdatasync_latency(dir.path(), 20).unwrap();
        assert_eq!(summary.count, 20);
        assert!(summary.min > 0.0 && summary.min <= summary.p99);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(fdatasync_latency(&dir.path().join("absent"), 5).is_err());
    }
}
