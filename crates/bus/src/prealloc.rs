//! Segment files prepared ahead of use. A helper thread writes a whole segment of zero
//! bytes and fsyncs it while the active segment fills; on roll the writer renames it into
//! place. Appends into such a file overwrite blocks that are already allocated and
//! written, so each group-commit `fdatasync` flushes data only, not a new file size (a
//! journal commit on ext4): about half the fsync time on the disks measured.
//!
//! The zeros are written, not `fallocate`d: an unwritten extent still needs a metadata
//! update on its first write. A zero tail is never a record (a zero header fails its
//! checksum), so recovery can tell it from damage.
//!
//! Nothing here is on the publish path: when no prepared file is ready at a roll, the
//! writer creates an empty segment and appends grow it, as without preallocation.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::BusError;

/// A complete, fsynced file of zeros, ready to become the next segment.
pub(crate) const PREPARED_NAME: &str = "next.prealloc";

/// The file being filled; renamed to [`PREPARED_NAME`] only once complete and fsynced.
const FILLING_NAME: &str = "next.prealloc.filling";

/// Zeros are written and synced this much at a time, so the fill never queues much
/// in front of the writer's fsyncs: with 1 MiB chunks a concurrent writer's
/// `fdatasync` p99 was 565–624 µs on the benchmark machine, with 64 KiB 275–349 µs
/// (alone: 237–251 µs). A 64 MiB segment still fills in well under a second.
const ZERO_CHUNK: usize = 64 * 1024;

/// After a failed preparation (a full disk, say) the next try waits this long.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// A prepared segment file, open for reading and writing.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    /// Bytes of zeros it holds.
    pub(crate) len: u64,
}

#[derive(Debug)]
enum State {
    Idle,
    Filling {
        thread: JoinHandle<Result<Prepared, BusError>>,
        cancel: Arc<AtomicBool>,
    },
    Ready(Prepared),
    Failed(Instant),
    Disabled,
}

/// Prepares one next segment of a log at a time, in the background.
#[derive(Debug)]
pub(crate) struct Preparer {
    dir: PathBuf,
    len: u64,
    state: State,
}

impl Preparer {
    /// A preparer for the log in `dir`; a disabled one never prepares anything. A
    /// prepared file left by an earlier run is reused when it has the right size (it is
    /// renamed into place only once complete and fsynced); a half-filled one, or one of
    /// another size, is removed. Neither is ever read as a segment.
    pub(crate) fn open(dir: &Path, len: u64, enabled: bool) -> Result<Preparer, BusError> {
        remove_if_exists(&dir.join(FILLING_NAME))?;
        let path = dir.join(PREPARED_NAME);
        if !enabled {
            remove_if_exists(&path)?;
            return Ok(Preparer {
                dir: dir.to_owned(),
                len,
                state: State::Disabled,
            });
        }
        let mut state = State::Idle;
        match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => {
                let found = file.metadata().map_err(|e| BusError::io(&path, e))?.len();
                if found == len {
                    state = State::Ready(Prepared { path, file, len });
                } else {
                    drop(file);
                    remove_if_exists(&path)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BusError::io(&path, e)),
        }
        Ok(Preparer {
            dir: dir.to_owned(),
            len,
            state,
        })
    }

    /// Starts preparing a file unless one is ready, being prepared, or failed recently.
    pub(crate) fn start(&mut self) {
        match &self.state {
            State::Idle => {}
            State::Failed(at) if at.elapsed() >= RETRY_AFTER => {}
            _ => return,
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let (dir, len, flag) = (self.dir.clone(), self.len, Arc::clone(&cancel));
        let spawned = std::thread::Builder::new()
            .name("bus-prealloc".into())
            .spawn(move || fill(&dir, len, &flag));
        self.state = match spawned {
            Ok(thread) => State::Filling { thread, cancel },
            Err(error) => {
                tracing::warn!(%error, "cannot start the segment preallocation thread; segments grow as they fill");
                State::Failed(Instant::now())
            }
        };
    }

    /// Whether a prepared file can be taken now. Never blocks.
    pub(crate) fn is_ready(&mut self) -> bool {
        if matches!(&self.state, State::Filling { thread, .. } if thread.is_finished()) {
            let State::Filling { thread, .. } = std::mem::replace(&mut self.state, State::Idle)
            else {
                return false;
            };
            self.state = match thread.join() {
                Ok(Ok(prepared)) => State::Ready(prepared),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "segment preallocation failed; segments grow as they fill");
                    State::Failed(Instant::now())
                }
                Err(_) => State::Failed(Instant::now()),
            };
        }
        matches!(self.state, State::Ready(_))
    }

    /// The prepared file, if one is ready. Never blocks.
    pub(crate) fn take(&mut self) -> Option<Prepared> {
        if !self.is_ready() {
            return None;
        }
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Ready(prepared) => Some(prepared),
            other => {
                self.state = other;
                None
            }
        }
    }
}

impl Drop for Preparer {
    /// Stops a fill in progress and waits for its thread, so a log reopened in the same
    /// process never shares the file being filled with it.
    fn drop(&mut self) {
        if let State::Filling { thread, cancel } = std::mem::replace(&mut self.state, State::Idle) {
            cancel.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
    }
}

/// Writes `len` zero bytes to the filling file, fsyncs it and renames it to
/// [`PREPARED_NAME`].
fn fill(dir: &Path, len: u64, cancel: &AtomicBool) -> Result<Prepared, BusError> {
    let filling = dir.join(FILLING_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&filling)
        .map_err(|e| BusError::io(&filling, e))?;
    let zeros = vec![0u8; ZERO_CHUNK];
    let mut at = 0u64;
    while at < len {
        if cancel.load(Ordering::Relaxed) {
            drop(file);
            remove_if_exists(&filling)?;
            return Err(BusError::Closed);
        }
        let chunk = (len - at).min(ZERO_CHUNK as u64) as usize;
        file.write_all_at(&zeros[..chunk], at)
            .and_then(|()| file.sync_data())
            .map_err(|e| BusError::io(&filling, e))?;
        at += chunk as u64;
    }
    let path = dir.join(PREPARED_NAME);
    std::fs::rename(&filling, &path).map_err(|e| BusError::io(&path, e))?;
    Ok(Prepared { path, file, len })
}

fn remove_if_exists(path: &Path) -> Result<(), BusError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BusError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn wait_ready(preparer: &mut Preparer) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !preparer.is_ready() {
            assert!(Instant::now() < deadline, "preparation never finished");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn prepares_a_file_of_zeros_and_hands_it_over_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut preparer = Preparer::open(dir.path(), 3 * 1024 * 1024 + 5, true).unwrap();
        assert!(preparer.take().is_none());
        preparer.start();
        wait_ready(&mut preparer);
        let prepared = preparer.take().unwrap();
        assert_eq!(prepared.path, dir.path().join(PREPARED_NAME));
        let mut bytes = Vec::new();
        File::open(&prepared.path)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(bytes.len() as u64, 3 * 1024 * 1024 + 5);
        assert!(bytes.iter().all(|&b| b == 0));
        assert!(preparer.take().is_none(), "handed over only once");
        assert!(!dir.path().join(FILLING_NAME).exists());
    }

    #[test]
    fn a_leftover_prepared_file_is_reused_only_at_the_right_size() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PREPARED_NAME), vec![0u8; 4096]).unwrap();
        std::fs::write(dir.path().join(FILLING_NAME), vec![0u8; 10]).unwrap();
        let mut preparer = Preparer::open(dir.path(), 4096, true).unwrap();
        assert!(
            !dir.path().join(FILLING_NAME).exists(),
            "half-filled file removed"
        );
        assert_eq!(preparer.take().unwrap().len, 4096);

        std::fs::write(dir.path().join(PREPARED_NAME), vec![0u8; 100]).unwrap();
        let mut preparer = Preparer::open(dir.path(), 4096, true).unwrap();
        assert!(preparer.take().is_none());
        assert!(
            !dir.path().join(PREPARED_NAME).exists(),
            "wrong size removed"
        );
    }

    #[test]
    fn a_disabled_preparer_prepares_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PREPARED_NAME), vec![0u8; 4096]).unwrap();
        let mut preparer = Preparer::open(dir.path(), 4096, false).unwrap();
        preparer.start();
        assert!(preparer.take().is_none());
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }
}
