//! One segment file of a topic's log: records from a base offset on, a sparse index
//! for lookups, and the recovery scan that cuts off a torn or corrupt tail.
//!
//! A segment file may be longer than its records: a preallocated segment
//! ([`crate::prealloc`]) ends in zero bytes not yet written over. Only
//! [`Segment::size`] says where the records end; the file's length never does.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::BusError;
use crate::prealloc::Prepared;
use crate::record::{self, Decoded, Record};

/// An index entry is added at most every this many bytes, so a lookup scans at most
/// about one read chunk after a binary search, and a 64 MiB segment's index is ~16 KiB.
pub(crate) const INDEX_INTERVAL_BYTES: u64 = 64 * 1024;

/// How much a scan reads from the file at a time.
const READ_CHUNK: usize = 64 * 1024;

/// A point in the sparse index: the record at `offset` starts at byte `pos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) offset: u64,
    pub(crate) pos: u64,
}

/// A segment as readers see it: `size` counts only whole records the writer has published
/// (written, or also fsynced, as the log's `Delivery` says).
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<File>,
    pub(crate) index: Vec<IndexEntry>,
    /// Bytes of valid, published records.
    pub(crate) size: u64,
    /// One past the last record's offset (== base when empty).
    pub(crate) next_offset: u64,
    /// Publish time of the newest record, 0 when empty.
    pub(crate) last_publish_ms: u64,
}

impl Segment {
    /// The file name of the segment starting at `base`, sortable as text.
    pub(crate) fn file_name(base: u64) -> String {
        format!("{base:020}.log")
    }

    /// The base offset encoded in a segment file name, if it is one.
    pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
        let digits = name.strip_suffix(".log")?;
        (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok())
            .flatten()
    }

    /// Creates an empty segment file (it must not exist yet).
    pub(crate) fn create(dir: &Path, base: u64) -> Result<Segment, BusError> {
        let path = dir.join(Self::file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| BusError::io(&path, e))?;
        Ok(Segment {
            base,
            path,
            file: Arc::new(file),
            index: Vec::new(),
            size: 0,
            next_offset: base,
            last_publish_ms: 0,
        })
    }

    /// Makes a prepared file of zeros the (empty) segment starting at `base` by renaming
    /// it; the caller fsyncs the directory.
    pub(crate) fn from_prepared(
        prepared: Prepared,
        dir: &Path,
        base: u64,
    ) -> Result<Segment, BusError> {
        let path = dir.join(Self::file_name(base));
        std::fs::rename(&prepared.path, &path).map_err(|e| BusError::io(&path, e))?;
        Ok(Segment {
            base,
            path,
            file: Arc::new(prepared.file),
            index: Vec::new(),
            size: 0,
            next_offset: base,
            last_publish_ms: 0,
        })
    }

    /// Opens an existing segment, checks every record and rebuilds the index. After the
    /// last good record, zero bytes are a preallocated tail and kept; anything else is a
    /// torn or corrupt tail, cut off (with a warning) and fsynced before anything is
    /// served.
    pub(crate) fn recover(path: PathBuf, base: u64) -> Result<Segment, BusError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| BusError::io(&path, e))?;
        let len = file.metadata().map_err(|e| BusError::io(&path, e))?.len();
        let mut segment = Segment {
            base,
            path,
            file: Arc::new(file),
            index: Vec::new(),
            size: 0,
            next_offset: base,
            last_publish_ms: 0,
        };
        let file = Arc::clone(&segment.file);
        let mut scanner = Scanner::new(&file, 0, len);
        let damage = loop {
            match scanner.next().map_err(|e| BusError::io(&segment.path, e))? {
                Scan::End => break None,
                Scan::Damaged { pos, reason } => break Some((pos, reason)),
                Scan::Record { record, pos, len } => {
                    if record.offset != segment.next_offset {
                        break Some((pos, "record offset out of sequence"));
                    }
                    segment.note_appended(&record, pos, len as u64);
                }
            }
        };
        if let Some((pos, reason)) = damage {
            if only_zeros(&segment.file, pos, len).map_err(|e| BusError::io(&segment.path, e))? {
                return Ok(segment);
            }
            tracing::warn!(
                file = %segment.path.display(),
                offset = segment.next_offset,
                position = pos,
                bytes_dropped = len - pos,
                reason,
                "truncating a torn or corrupt log tail"
            );
            segment
                .file
                .set_len(pos)
                .and_then(|()| segment.file.sync_all())
                .map_err(|e| BusError::io(&segment.path, e))?;
        }
        Ok(segment)
    }

    /// Records that a record of `len` bytes at `pos` is now part of the segment.
    pub(crate) fn note_appended(&mut self, record: &Record, pos: u64, len: u64) {
        let due = self
            .index
            .last()
            .is_none_or(|last| pos - last.pos >= INDEX_INTERVAL_BYTES);
        if due {
            self.index.push(IndexEntry {
                offset: record.offset,
                pos,
            });
        }
        self.size = pos + len;
        self.next_offset = record.offset + 1;
        self.last_publish_ms = self.last_publish_ms.max(record.publish_time_ms);
    }

    /// Where to start scanning for `offset`: the last indexed record at or before it.
    pub(crate) fn lookup(index: &[IndexEntry], offset: u64) -> u64 {
        let after = index.partition_point(|e| e.offset <= offset);
        after.checked_sub(1).map_or(0, |i| index[i].pos)
    }
}

/// Whether every byte of `file` in `[start, end)` is zero: a preallocated tail.
fn only_zeros(file: &File, start: u64, end: u64) -> std::io::Result<bool> {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut at = start;
    while at < end {
        let chunk = (end - at).min(READ_CHUNK as u64) as usize;
        file.read_exact_at(&mut buf[..chunk], at)?;
        if buf[..chunk].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += chunk as u64;
    }
    Ok(true)
}

/// Reads records from `file` between two byte positions, in chunks, with positional
/// reads so any number of readers can share one file handle.
pub(crate) struct Scanner<'a> {
    file: &'a File,
    end: u64,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    buf_pos: u64,
    /// Bytes of `buf` already consumed.
    at: usize,
}

/// One step of a [`Scanner`].
pub(crate) enum Scan {
    Record {
        record: Record,
        pos: u64,
        len: usize,
    },
    End,
    Damaged {
        pos: u64,
        reason: &'static str,
    },
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(file: &'a File, start: u64, end: u64) -> Self {
        Self {
            file,
            end,
            buf: Vec::new(),
            buf_pos: start,
            at: 0,
        }
    }

    pub(crate) fn next(&mut self) -> std::io::Result<Scan> {
        loop {
            let pos = self.buf_pos + self.at as u64;
            match record::decode(&self.buf[self.at..]) {
                Decoded::Record { record, len } => {
                    self.at += len;
                    return Ok(Scan::Record { record, pos, len });
                }
                Decoded::Corrupt { reason } => return Ok(Scan::Damaged { pos, reason }),
                Decoded::Incomplete { needed } => {
                    let loaded_end = self.buf_pos + self.buf.len() as u64;
                    if loaded_end >= self.end {
                        return Ok(if self.at == self.buf.len() {
                            Scan::End
                        } else {
                            Scan::Damaged {
                                pos,
                                reason: "record cut short (torn write)",
                            }
                        });
                    }
                    self.buf.drain(..self.at);
                    self.buf_pos = pos;
                    self.at = 0;
                    let want = needed.max(READ_CHUNK).saturating_sub(self.buf.len()) as u64;
                    let read_len = want.min(self.end - loaded_end) as usize;
                    let old = self.buf.len();
                    self.buf.resize(old + read_len, 0);
                    self.file.read_exact_at(&mut self.buf[old..], loaded_end)?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewMessage;
    use std::io::Write;

    fn write_records(path: &Path, base: u64, count: u64, payload: usize) -> Vec<u64> {
        let mut file = File::create(path).unwrap();
        let mut positions = Vec::new();
        let mut buf = Vec::new();
        for i in 0..count {
            positions.push(buf.len() as u64);
            record::encode(base + i, 5, &NewMessage::new(vec![b'x'; payload]), &mut buf);
        }
        file.write_all(&buf).unwrap();
        positions
    }

    #[test]
    fn file_names_sort_by_base_offset() {
        assert_eq!(Segment::file_name(7), "00000000000000000007.log");
        assert_eq!(
            Segment::parse_file_name("00000000000000000007.log"),
            Some(7)
        );
        assert_eq!(Segment::parse_file_name("7.log"), None);
        assert_eq!(Segment::parse_file_name("00000000000000000007.idx"), None);
    }

    #[test]
    fn index_lookup_finds_the_nearest_entry_at_or_before() {
        let index = [
            IndexEntry { offset: 10, pos: 0 },
            IndexEntry {
                offset: 20,
                pos: 4000,
            },
            IndexEntry {
                offset: 30,
                pos: 8000,
            },
        ];
        assert_eq!(Segment::lookup(&index, 10), 0);
        assert_eq!(Segment::lookup(&index, 19), 0);
        assert_eq!(Segment::lookup(&index, 20), 4000);
        assert_eq!(Segment::lookup(&index, 29), 4000);
        assert_eq!(Segment::lookup(&index, 1000), 8000);
        assert_eq!(Segment::lookup(&[], 5), 0);
    }

    #[test]
    fn recovery_builds_a_sparse_index_pointing_at_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(Segment::file_name(100));
        let positions = write_records(&path, 100, 1000, 300);
        let segment = Segment::recover(path, 100).unwrap();
        assert_eq!(segment.next_offset, 1100);
        assert!(segment.index.len() > 1 && segment.index.len() < 100);
        for entry in &segment.index {
            assert_eq!(positions[(entry.offset - 100) as usize], entry.pos);
        }
    }

    #[test]
    fn recovery_truncates_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(Segment::file_name(0));
        let positions = write_records(&path, 0, 3, 10);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(positions[2] + 5).unwrap();
        let segment = Segment::recover(path.clone(), 0).unwrap();
        assert_eq!(segment.next_offset, 2);
        assert_eq!(segment.size, positions[2]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), positions[2]);
    }

    /// A writer for a tracing subscriber that keeps what was logged.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Recovers the segment at `path` and returns it with the warnings logged meanwhile.
    fn recover_logged(path: &Path) -> (Segment, String) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || writer.clone())
            .finish();
        let segment = tracing::subscriber::with_default(subscriber, || {
            Segment::recover(path.to_owned(), 0).unwrap()
        });
        let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        (segment, logged)
    }

    /// Appends `zeros` zero bytes after the file's end, as a preallocated tail.
    fn add_zero_tail(path: &Path, zeros: u64) -> u64 {
        let end = std::fs::metadata(path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(end + zeros)
            .unwrap();
        end
    }

    #[test]
    fn zero_bytes_never_decode_as_a_record() {
        for len in 0..64 {
            assert!(
                !matches!(record::decode(&vec![0u8; len]), Decoded::Record { .. }),
                "{len} zero bytes"
            );
        }
    }

    #[test]
    fn recovery_keeps_a_clean_zero_tail_without_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(Segment::file_name(0));
        write_records(&path, 0, 3, 10);
        let end = add_zero_tail(&path, 300_000);
        let (segment, logged) = recover_logged(&path);
        assert_eq!((segment.next_offset, segment.size), (3, end));
        assert_eq!(logged, "", "a zero tail is not damage");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            end + 300_000,
            "the preallocation is kept"
        );
    }

    #[test]
    fn recovery_cuts_a_torn_record_followed_by_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(Segment::file_name(0));
        let positions = write_records(&path, 0, 3, 10);
        let end = add_zero_tail(&path, 4096);
        // The last record's second half never reached the disk.
        let half = (end - positions[2]) / 2;
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&vec![0u8; half as usize], end - half)
            .unwrap();
        let (segment, logged) = recover_logged(&path);
        assert_eq!((segment.next_offset, segment.size), (2, positions[2]));
        assert!(
            logged.contains("truncating a torn or corrupt log tail"),
            "{logged}"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), positions[2]);
    }

    #[test]
    fn recovery_cuts_at_a_corrupt_record_in_the_middle_followed_by_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(Segment::file_name(0));
        let positions = write_records(&path, 0, 10, 10);
        add_zero_tail(&path, 4096);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, positions[4] + 12).unwrap();
        file.write_all_at(&[byte[0] ^ 0x40], positions[4] + 12)
            .unwrap();
        let (segment, logged) = recover_logged(&path);
        assert_eq!((segment.next_offset, segment.size), (4, positions[4]));
        assert!(logged.contains("checksum mismatch"), "{logged}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            positions[4],
            "the good records after the damage are not served either"
        );
    }

    #[test]
    fn a_renamed_but_unused_segment_of_zeros_recovers_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(Segment::file_name(0));
        std::fs::write(&path, vec![0u8; 70_000]).unwrap();
        let (segment, logged) = recover_logged(&path);
        assert_eq!((segment.next_offset, segment.size), (0, 0));
        assert_eq!(logged, "");
    }
}
