//! A topic's log: an ordered list of segments, read by many and appended to by one
//! [`LogWriter`]. Readers see records once they are written whole (with
//! [`Delivery::Written`]) or once they are fsynced (with [`Delivery::Synced`]); never a
//! part of one.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::commit_times::CommitTimes;
use crate::prealloc::Preparer;
use crate::record::{self, Record};
use crate::segment::{INDEX_INTERVAL_BYTES, IndexEntry, Scan, Scanner, Segment};
use crate::tail_cache::{TAIL_CACHE_BYTES, TailCache};
use crate::{BusError, Delivery, NewMessage, sync};

/// The shared, read side of a topic's log.
#[derive(Debug)]
pub(crate) struct Log {
    dir: PathBuf,
    segments: RwLock<Vec<Segment>>,
    /// The newest committed records, so consumers that keep up never wait for a disk read.
    tail: Mutex<TailCache>,
    fsyncs: AtomicU64,
    commit_times: CommitTimes,
    /// Set by the first failed fsync of written records: the file and the error.
    sync_failure: OnceLock<(PathBuf, String)>,
}

/// Figures of a segment that retention decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentInfo {
    pub(crate) base: u64,
    pub(crate) next_offset: u64,
    pub(crate) size: u64,
    pub(crate) last_publish_ms: u64,
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering every segment, and returns it
    /// with the writer that alone may append to it. With `preallocate`, the next
    /// segment is zero-filled in the background ([`crate::prealloc`]).
    pub(crate) fn open(
        dir: &Path,
        segment_bytes: u64,
        preallocate: bool,
        delivery: Delivery,
    ) -> Result<(Arc<Log>, LogWriter), BusError> {
        std::fs::create_dir_all(dir).map_err(|e| BusError::io(dir, e))?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| BusError::io(dir, e))? {
            let entry = entry.map_err(|e| BusError::io(dir, e))?;
            if let Some(base) = entry
                .file_name()
                .to_str()
                .and_then(Segment::parse_file_name)
            {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let mut segments: Vec<Segment> = Vec::new();
        for base in bases {
            let segment = Segment::recover(dir.join(Segment::file_name(base)), base)?;
            if let Some(prev) = segments.last()
                && segment.base < prev.next_offset
            {
                return Err(BusError::Corrupt {
                    path: segment.path,
                    detail: format!(
                        "segment starts at offset {} but the previous one already reaches {}",
                        segment.base, prev.next_offset
                    ),
                });
            }
            segments.push(segment);
        }
        if segments.is_empty() {
            segments.push(Segment::create(dir, 0)?);
            sync_dir(dir)?;
        }
        let active = segments.last().ok_or_else(|| BusError::Corrupt {
            path: dir.to_owned(),
            detail: "no segment".into(),
        })?;
        let file = Arc::clone(&active.file);
        // The writer's own business: how far appends overwrite zeros instead of growing
        // the file. Readers go by `Segment::size` only.
        let file_len = file
            .metadata()
            .map_err(|e| BusError::io(&active.path, e))?
            .len();
        let writer_state = ActiveSegment {
            base: active.base,
            path: active.path.clone(),
            file,
            size: active.size,
            file_len,
            last_index_pos: active.index.last().map(|e| e.pos),
        };
        let preparer = Preparer::open(dir, segment_bytes, preallocate)?;
        let next_offset = active.next_offset;
        let log = Arc::new(Log {
            dir: dir.to_owned(),
            segments: RwLock::new(segments),
            tail: Mutex::new(TailCache::new(TAIL_CACHE_BYTES)),
            fsyncs: AtomicU64::new(0),
            commit_times: CommitTimes::default(),
            sync_failure: OnceLock::new(),
        });
        let writer = LogWriter {
            log: Arc::clone(&log),
            active: writer_state,
            next_offset,
            segment_bytes,
            preparer,
            delivery,
            unsynced: Vec::new(),
        };
        Ok((log, writer))
    }

    /// The oldest offset still stored.
    pub(crate) fn first_offset(&self) -> u64 {
        let segments = sync::read(&self.segments);
        segments
            .iter()
            .find(|s| s.next_offset > s.base)
            .or(segments.last())
            .map_or(0, |s| s.base)
    }

    /// The offset the next record gets (among those readers see).
    pub(crate) fn next_offset(&self) -> u64 {
        sync::read(&self.segments)
            .last()
            .map_or(0, |s| s.next_offset)
    }

    /// Bytes of records stored.
    pub(crate) fn bytes(&self) -> u64 {
        sync::read(&self.segments).iter().map(|s| s.size).sum()
    }

    /// How many fsyncs the writer has done (the group-commit figure of merit).
    pub(crate) fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// How long the log's fsyncs have taken so far.
    pub(crate) fn commit_times(&self) -> crate::CommitHistogram {
        self.commit_times.snapshot()
    }

    /// Per-segment figures, oldest first.
    pub(crate) fn segment_infos(&self) -> Vec<SegmentInfo> {
        sync::read(&self.segments)
            .iter()
            .map(|s| SegmentInfo {
                base: s.base,
                next_offset: s.next_offset,
                size: s.size,
                last_publish_ms: s.last_publish_ms,
            })
            .collect()
    }

    /// Up to `max` records with offsets in `[from, from + max)`, in order, stopping early
    /// once `max_bytes` of messages were read (at least one record is returned). Offsets
    /// that are no longer (or never were) stored are skipped. Blocking: call off the runtime.
    pub(crate) fn read(
        &self,
        from: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, BusError> {
        if let Some(records) = self.read_cached(from, max, max_bytes) {
            return Ok(records);
        }
        let until = from.saturating_add(max as u64);
        let plan: Vec<(Arc<File>, PathBuf, u64, u64)> = {
            let segments = sync::read(&self.segments);
            let first = segments.partition_point(|s| s.next_offset <= from);
            segments[first..]
                .iter()
                .take_while(|s| s.base < until)
                .filter(|s| s.size > 0)
                .map(|s| {
                    let start = Segment::lookup(&s.index, from.max(s.base));
                    (Arc::clone(&s.file), s.path.clone(), start, s.size)
                })
                .collect()
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        for (file, path, start, end) in plan {
            let mut scanner = Scanner::new(&file, start, end);
            loop {
                match scanner.next().map_err(|e| BusError::io(&path, e))? {
                    Scan::End => break,
                    Scan::Damaged { pos, reason } => {
                        return Err(BusError::Corrupt {
                            path,
                            detail: format!("{reason} at byte {pos}"),
                        });
                    }
                    Scan::Record { record, .. } => {
                        if record.offset >= until {
                            return Ok(out);
                        }
                        if record.offset >= from {
                            bytes += record.size();
                            out.push(record);
                            if bytes >= max_bytes {
                                return Ok(out);
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Like [`Log::read`], but only from memory: `None` when the records
    /// starting at `from` are no longer cached. Never blocks on I/O.
    pub(crate) fn read_cached(
        &self,
        from: u64,
        max: usize,
        max_bytes: usize,
    ) -> Option<Vec<Record>> {
        sync::lock(&self.tail).read(from, max, max_bytes)
    }

    /// Fsyncs `files` (written by the [`LogWriter`], oldest first), timing each. After a
    /// failure every later call fails too: the kernel may have dropped the unwritten
    /// pages and would report the next fsync as a success. Blocking.
    pub(crate) fn sync_written(&self, files: &[Unsynced]) -> Result<(), BusError> {
        for unsynced in files {
            self.refuse_after_failed_sync()?;
            if let Err(error) = self.sync_timed(&unsynced.file) {
                let failure = (unsynced.path.clone(), error.to_string());
                let (path, detail) = self.sync_failure.get_or_init(|| failure);
                tracing::error!(file = %path.display(), error = %detail, "fsync failed; the topic takes no more publishes until the broker restarts");
                self.refuse_after_failed_sync()?;
            }
        }
        Ok(())
    }

    /// The error everything gets once an fsync of written records failed.
    fn refuse_after_failed_sync(&self) -> Result<(), BusError> {
        match self.sync_failure.get() {
            Some((path, detail)) => Err(BusError::SyncFailed {
                path: path.clone(),
                detail: detail.clone(),
            }),
            None => Ok(()),
        }
    }

    /// One fsync of data, counted and timed.
    fn sync_timed(&self, file: &File) -> std::io::Result<()> {
        let started = std::time::Instant::now();
        file.sync_data()?;
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.commit_times.record(started.elapsed());
        Ok(())
    }

    /// Removes the `count` oldest segments (never the active one) and deletes their files.
    /// Blocking: call off the runtime.
    pub(crate) fn remove_oldest(&self, count: usize) -> Result<Vec<SegmentInfo>, BusError> {
        let (removed, first_kept): (Vec<Segment>, Option<u64>) = {
            let mut segments = sync::write(&self.segments);
            let count = count.min(segments.len().saturating_sub(1));
            let removed = segments.drain(..count).collect();
            (removed, segments.first().map(|s| s.base))
        };
        if let Some(first_kept) = first_kept {
            sync::lock(&self.tail).drop_before(first_kept);
        }
        let mut infos = Vec::new();
        for segment in removed {
            std::fs::remove_file(&segment.path).map_err(|e| BusError::io(&segment.path, e))?;
            infos.push(SegmentInfo {
                base: segment.base,
                next_offset: segment.next_offset,
                size: segment.size,
                last_publish_ms: segment.last_publish_ms,
            });
        }
        if !infos.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(infos)
    }
}

/// The writer's handle on the segment being appended to.
#[derive(Debug)]
struct ActiveSegment {
    base: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Bytes written (and published to readers).
    size: u64,
    /// Length of the file: past `size` it holds preallocated zeros.
    file_len: u64,
    last_index_pos: Option<u64>,
}

/// The only appender of a log. With [`Delivery::Synced`] it writes, fsyncs, and only
/// then publishes the new records to readers; with [`Delivery::Written`] it writes and
/// publishes them, and leaves the fsync to whoever takes [`LogWriter::take_unsynced`].
#[derive(Debug)]
pub(crate) struct LogWriter {
    log: Arc<Log>,
    active: ActiveSegment,
    next_offset: u64,
    segment_bytes: u64,
    /// Zero-fills the next segment in the background.
    preparer: Preparer,
    delivery: Delivery,
    /// Files holding records written since the last `take_unsynced`, oldest first.
    unsynced: Vec<Unsynced>,
}

/// A segment file holding written records whose fsync is still due.
#[derive(Debug)]
pub(crate) struct Unsynced {
    file: Arc<File>,
    path: PathBuf,
}

impl Unsynced {
    /// Whether both name the same open file (one fsync covers both).
    pub(crate) fn same_file(&self, other: &Unsynced) -> bool {
        Arc::ptr_eq(&self.file, &other.file)
    }
}

/// Records written to the active segment but not yet fsynced and published.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    /// The same records, decoded, for the tail cache.
    records: Vec<Record>,
    index: Vec<IndexEntry>,
    count: u64,
    last_publish_ms: u64,
}

impl LogWriter {
    /// Appends every message of every batch with one write (more only when a segment
    /// rolls) and makes them visible: with [`Delivery::Synced`] after one fsync, with
    /// [`Delivery::Written`] at once, the fsync left to the caller
    /// ([`LogWriter::take_unsynced`]). Returns the first offset of each batch. On error
    /// nothing of the failed part is visible and the file is cut back.
    pub(crate) fn append(
        &mut self,
        batches: &[&[NewMessage]],
        publish_time_ms: u64,
    ) -> Result<Vec<u64>, BusError> {
        self.log.refuse_after_failed_sync()?;
        let mut firsts = Vec::with_capacity(batches.len());
        let mut pending = Pending::default();
        for batch in batches {
            firsts.push(self.next_offset + pending.count);
            for message in *batch {
                let size = self.active.size + pending.buf.len() as u64;
                let has_records = self.next_offset + pending.count > self.active.base;
                // A segment that grows as it fills (none was prepared in time) is
                // sealed early once a preallocated one is ready.
                let grows = size >= self.active.file_len;
                if has_records
                    && (size >= self.segment_bytes || (grows && self.preparer.is_ready()))
                {
                    self.commit(&mut pending)?;
                    self.roll()?;
                }
                let pos = self.active.size + pending.buf.len() as u64;
                if self
                    .active
                    .last_index_pos
                    .is_none_or(|last| pos - last >= INDEX_INTERVAL_BYTES)
                {
                    pending.index.push(IndexEntry {
                        offset: self.next_offset + pending.count,
                        pos,
                    });
                    self.active.last_index_pos = Some(pos);
                }
                let offset = self.next_offset + pending.count;
                record::encode(offset, publish_time_ms, message, &mut pending.buf);
                pending.records.push(Record {
                    offset,
                    publish_time_ms,
                    key: message.key.clone(),
                    headers: message.headers.clone(),
                    // A copy: the publisher's payload is usually a slice of a
                    // whole network read buffer, which the cache would keep alive.
                    payload: bytes::Bytes::copy_from_slice(&message.payload),
                });
                pending.count += 1;
                pending.last_publish_ms = publish_time_ms;
            }
        }
        self.commit(&mut pending)?;
        Ok(firsts)
    }

    /// The files whose written records still need an fsync before their publishers
    /// are answered: none with [`Delivery::Synced`].
    pub(crate) fn take_unsynced(&mut self) -> Vec<Unsynced> {
        std::mem::take(&mut self.unsynced)
    }

    /// When this writer lets readers see records.
    pub(crate) fn delivery(&self) -> Delivery {
        self.delivery
    }

    /// The log this writer appends to.
    pub(crate) fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Writes the pending records (and fsyncs them, with [`Delivery::Synced`]), then
    /// publishes them to readers.
    fn commit(&mut self, pending: &mut Pending) -> Result<(), BusError> {
        if pending.count == 0 {
            return Ok(());
        }
        let mut written = self
            .active
            .file
            .write_all_at(&pending.buf, self.active.size);
        if self.delivery == Delivery::Synced {
            written = written.and_then(|()| self.log.sync_timed(&self.active.file));
        }
        if let Err(error) = written {
            if self.active.file.set_len(self.active.size).is_ok() {
                self.active.file_len = self.active.size;
            }
            self.active.last_index_pos = {
                let segments = sync::read(&self.log.segments);
                segments.last().and_then(|s| s.index.last()).map(|e| e.pos)
            };
            return Err(BusError::io(&self.active.path, error));
        }
        if self.delivery == Delivery::Written
            && self
                .unsynced
                .last()
                .is_none_or(|u| !Arc::ptr_eq(&u.file, &self.active.file))
        {
            self.unsynced.push(Unsynced {
                file: Arc::clone(&self.active.file),
                path: self.active.path.clone(),
            });
        }
        self.active.size += pending.buf.len() as u64;
        self.active.file_len = self.active.file_len.max(self.active.size);
        // Idle topics never get a preallocated file; one that is published to does.
        self.preparer.start();
        self.next_offset += pending.count;
        {
            let mut segments = sync::write(&self.log.segments);
            if let Some(segment) = segments.last_mut() {
                segment.index.append(&mut pending.index);
                segment.size = self.active.size;
                segment.next_offset = self.next_offset;
                segment.last_publish_ms = segment.last_publish_ms.max(pending.last_publish_ms);
            }
            // Under the segments lock, so a reader never sees the log end
            // move ahead of the cache or the other way round.
            sync::lock(&self.log.tail).extend(std::mem::take(&mut pending.records));
        }
        *pending = Pending::default();
        Ok(())
    }

    /// Starts a new segment at the next offset: the prepared file of zeros when one is
    /// ready, else an empty file that grows.
    fn roll(&mut self) -> Result<(), BusError> {
        if self.active.size < self.active.file_len {
            // A sealed segment keeps no zeros (only after `segment_bytes` shrank). Not
            // fsynced: a zero tail that comes back after a crash is harmless.
            if let Err(error) = self.active.file.set_len(self.active.size) {
                tracing::warn!(file = %self.active.path.display(), %error, "cannot trim the preallocated tail of a sealed segment");
            }
        }
        let dir = &self.log.dir;
        let (segment, file_len) = match self.preparer.take() {
            Some(prepared) => {
                let len = prepared.len;
                match Segment::from_prepared(prepared, dir, self.next_offset) {
                    Ok(segment) => (segment, len),
                    Err(error) => {
                        tracing::warn!(%error, "cannot use the preallocated segment; starting an empty one");
                        (Segment::create(dir, self.next_offset)?, 0)
                    }
                }
            }
            None => (Segment::create(dir, self.next_offset)?, 0),
        };
        sync_dir(dir)?;
        self.preparer.start();
        let file = Arc::clone(&segment.file);
        self.active = ActiveSegment {
            base: segment.base,
            path: segment.path.clone(),
            file,
            size: 0,
            file_len,
            last_index_pos: None,
        };
        sync::write(&self.log.segments).push(segment);
        Ok(())
    }
}

/// Fsyncs a directory so created, renamed or removed entries survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), BusError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BusError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(count: usize, size: usize) -> Vec<NewMessage> {
        (0..count)
            .map(|i| NewMessage::new(vec![i as u8; size]))
            .collect()
    }

    #[test]
    fn rolls_to_a_new_segment_past_segment_bytes_and_reads_across_them() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut writer) = Log::open(dir.path(), 1000, true, Delivery::Synced).unwrap();
        let batch = messages(30, 200);
        let firsts = writer.append(&[&batch[..10], &batch[10..]], 1).unwrap();
        assert_eq!(firsts, vec![0, 10]);
        let infos = log.segment_infos();
        assert_eq!(
            log.fsyncs(),
            infos.len() as u64,
            "one fsync per segment written"
        );
        assert!(writer.take_unsynced().is_empty(), "nothing left to sync");
        assert!(infos.len() >= 5, "expected several segments, got {infos:?}");
        assert!(infos.windows(2).all(|w| w[0].next_offset == w[1].base));
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".log"))
            .collect();
        names.sort();
        assert_eq!(names[0], "00000000000000000000.log");
        assert_eq!(names.len(), infos.len());
        let read = log.read(3, 20, usize::MAX).unwrap();
        assert_eq!(
            read.iter().map(|r| r.offset).collect::<Vec<_>>(),
            (3..23).collect::<Vec<_>>()
        );
        assert_eq!(read[0].payload, batch[3].payload);
        assert_eq!(
            log.read(3, 20, 300).unwrap().len(),
            2,
            "stops once the byte budget is reached"
        );

        drop(writer);
        let (reopened, mut writer) = Log::open(dir.path(), 1000, true, Delivery::Written).unwrap();
        assert_eq!(reopened.next_offset(), 30);
        assert_eq!(writer.append(&[&batch[..1]], 2).unwrap(), vec![30]);
        assert_eq!(reopened.read(29, 5, usize::MAX).unwrap().len(), 2);
    }

    #[test]
    fn removing_old_segments_keeps_the_active_one() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut writer) = Log::open(dir.path(), 500, true, Delivery::Written).unwrap();
        let batch = messages(10, 200);
        writer.append(&[&batch], 1).unwrap();
        let before = log.segment_infos().len();
        log.remove_oldest(usize::MAX).unwrap();
        assert_eq!(log.segment_infos().len(), 1);
        assert!(before > 1);
        assert_eq!(log.first_offset(), log.segment_infos()[0].base);
        assert!(
            log.read(0, 100, usize::MAX)
                .unwrap()
                .iter()
                .all(|r| r.offset >= log.first_offset())
        );
    }

    #[test]
    fn appends_fill_a_preallocated_segment_and_a_sealed_one_keeps_no_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut writer) = Log::open(dir.path(), 100_000, true, Delivery::Written).unwrap();
        let batch = messages(1, 100);
        writer.append(&[&batch], 1).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !writer.preparer.is_ready() {
            assert!(std::time::Instant::now() < deadline, "never prepared");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        writer.append(&[&batch], 1).unwrap();
        let infos = log.segment_infos();
        assert_eq!(infos.len(), 2, "rolled early onto the prepared segment");
        let active = dir.path().join(Segment::file_name(infos[1].base));
        assert_eq!(std::fs::metadata(&active).unwrap().len(), 100_000);
        assert!(infos[1].size < 1000);
        drop((log, writer));

        // Smaller segments from now on: the preallocated one is sealed early and
        // trimmed to its records.
        let (log, mut writer) = Log::open(dir.path(), 1000, true, Delivery::Written).unwrap();
        let batch = messages(20, 100);
        writer.append(&[&batch], 2).unwrap();
        let sealed = log.segment_infos()[1];
        assert_eq!(std::fs::metadata(&active).unwrap().len(), sealed.size);
        assert_eq!(
            log.read(0, 100, usize::MAX).unwrap().len(),
            22,
            "every record readable across the segments"
        );
    }

    #[test]
    fn written_records_are_readable_before_their_fsync_which_the_caller_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut writer) = Log::open(dir.path(), 1000, true, Delivery::Written).unwrap();
        let batch = messages(12, 200);
        writer.append(&[&batch], 1).unwrap();
        assert_eq!(log.fsyncs(), 0, "nothing fsynced by the writer");
        assert_eq!(log.read(0, 100, usize::MAX).unwrap().len(), 12);
        let unsynced = writer.take_unsynced();
        let segments = log.segment_infos();
        assert_eq!(
            unsynced
                .iter()
                .map(|u| Segment::parse_file_name(&u.path.file_name().unwrap().to_string_lossy()))
                .collect::<Vec<_>>(),
            segments.iter().map(|s| Some(s.base)).collect::<Vec<_>>(),
            "each written segment once, oldest first"
        );
        log.sync_written(&unsynced).unwrap();
        assert_eq!(log.fsyncs(), segments.len() as u64);
        assert_eq!(log.commit_times().count, segments.len() as u64);
        assert!(writer.take_unsynced().is_empty());
    }

    #[test]
    fn after_a_failed_fsync_the_log_takes_no_publishes_and_reports_no_sync_as_done() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut writer) = Log::open(dir.path(), 1000, true, Delivery::Written).unwrap();
        let batch = messages(2, 10);
        writer.append(&[&batch], 1).unwrap();
        let unsynced = writer.take_unsynced();
        let path = unsynced[0].path.clone();
        log.sync_failure
            .set((path.clone(), "Input/output error".into()))
            .unwrap();
        for err in [
            log.sync_written(&unsynced).unwrap_err(),
            writer.append(&[&batch], 2).unwrap_err(),
        ] {
            let text = err.to_string();
            assert!(matches!(err, BusError::SyncFailed { .. }), "{err:?}");
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains("restarts"), "{text}");
        }
        assert_eq!(log.next_offset(), 2, "the refused publish wrote nothing");
    }
}
