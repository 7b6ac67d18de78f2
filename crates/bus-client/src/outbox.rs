//! The offline outbox: a local, append-only, fsynced file of publishes the
//! broker has not taken yet.
//!
//! Layout: records of `u32` big-endian body length, `u32` crc32c of the body,
//! body (a `Publish` frame as the wire encodes it). A sidecar file
//! `<outbox>.cursor` holds how far the relay got (`u64` + crc32c). The relay
//! reads from the cursor, and once everything is relayed the file is
//! truncated; when a relayed prefix is more than half the file it is
//! rewritten without it. Every step that forgets data first moves the cursor
//! back to 0, so a crash at any point re-sends (at-least-once), never loses.
//! A torn record at the end (a crash mid-append, never acknowledged) is cut
//! off at open.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::BytesMut;
use mortar_bus_proto::{BusCodec, Frame, NewMessage};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::ClientError;

/// Bytes of a record header: length and crc32c.
const RECORD_HEADER: u64 = 8;

/// A relayed prefix at least this long is compacted away once it is more
/// than half of the file.
const COMPACT_MIN_BYTES: u64 = 1024 * 1024;

/// One buffered publish, as the relay reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRecord {
    /// The topic.
    pub topic: String,
    /// The batch.
    pub messages: Vec<NewMessage>,
    /// The file offset just past this record (pass it to [`Outbox::advance`]).
    pub end: u64,
}

/// A durable, bounded, ordered buffer of publishes (see the module docs).
#[derive(Debug)]
pub struct Outbox {
    /// Held open (and locked) for as long as the outbox is: the lock is released
    /// when this closes.
    _lock: File,
    path: PathBuf,
    cursor_path: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: File,
    len: u64,
    cursor: u64,
}

impl Outbox {
    /// Opens (or creates) the outbox at `path`, bounded to `max_bytes` of
    /// un-relayed records; cuts off a torn last record.
    pub fn open(path: impl Into<PathBuf>, max_bytes: u64) -> Result<Outbox, ClientError> {
        let path = path.into();
        let io = |source| ClientError::Outbox {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let lock = lock_exclusively(&path)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let cursor_path = sidecar(&path);
        let len = file.seek(SeekFrom::End(0)).map_err(io)?;
        let mut cursor = read_cursor(&cursor_path).min(len);
        // Find the end of the last whole record; anything after it is a torn append.
        let mut good = cursor;
        while let Some(end) = record_end(&file, good, len) {
            good = end;
        }
        if good < len {
            tracing::warn!(path = %path.display(), dropped_bytes = len - good, "bus outbox: cutting off a torn record (a publish interrupted before it was buffered)");
            file.set_len(good).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        if cursor > good {
            cursor = 0;
        }
        let outbox = Outbox {
            _lock: lock,
            path,
            cursor_path,
            max_bytes,
            state: Mutex::new(State {
                file,
                len: good,
                cursor,
            }),
        };
        Ok(outbox)
    }

    /// The outbox file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes buffered and not yet relayed.
    pub fn pending_bytes(&self) -> u64 {
        let s = self.lock();
        s.len - s.cursor
    }

    /// Whether nothing waits to be relayed.
    pub fn is_empty(&self) -> bool {
        self.pending_bytes() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the file consistent (every
        // write is followed by its own fsync), so the poisoned state is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn io(&self, source: std::io::Error) -> ClientError {
        ClientError::Outbox {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends a publish and fsyncs it; fails with `OutboxFull` (writing
    /// nothing) when it would exceed the bound.
    pub fn append(&self, topic: &str, messages: &[NewMessage]) -> Result<(), ClientError> {
        let frame = Frame::Publish {
            request_id: 0,
            topic: topic.to_owned(),
            messages: messages.to_vec(),
        };
        let mut body = BytesMut::new();
        BusCodec::new(usize::MAX)
            .encode(&frame, &mut body)
            .map_err(|e| ClientError::BatchTooLarge {
                messages: messages.len(),
                reason: e.to_string(),
            })?;
        let body_len = u32::try_from(body.len()).map_err(|_| ClientError::BatchTooLarge {
            messages: messages.len(),
            reason: format!("{} bytes do not fit in an outbox record", body.len()),
        })?;
        let mut record = Vec::with_capacity(body.len() + RECORD_HEADER as usize);
        record.extend_from_slice(&body_len.to_be_bytes());
        record.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        record.extend_from_slice(&body);

        let mut s = self.lock();
        let used = s.len - s.cursor;
        let needed = record.len() as u64;
        if used + needed > self.max_bytes {
            return Err(ClientError::OutboxFull {
                path: self.path.clone(),
                used,
                needed,
                max: self.max_bytes,
            });
        }
        let at = s.len;
        if let Err(e) = s
            .file
            .write_all_at(&record, at)
            .and_then(|()| s.file.sync_data())
        {
            // Leave no partial record behind for the next append to follow.
            let _ = s.file.set_len(at);
            return Err(self.io(e));
        }
        s.len = at + needed;
        Ok(())
    }

    /// Keeps a publish the broker refused in `<outbox>.rejected` (same record
    /// format), so an operator can inspect or replay it.
    pub fn set_aside(&self, record: &OutboxRecord) -> Result<(), ClientError> {
        let frame = Frame::Publish {
            request_id: 0,
            topic: record.topic.clone(),
            messages: record.messages.clone(),
        };
        let mut body = BytesMut::new();
        BusCodec::new(usize::MAX)
            .encode(&frame, &mut body)
            .map_err(|e| self.io(std::io::Error::other(e.to_string())))?;
        let len = u32::try_from(body.len())
            .map_err(|_| self.io(std::io::Error::other("record too large")))?;
        let mut rec = Vec::with_capacity(body.len() + RECORD_HEADER as usize);
        rec.extend_from_slice(&len.to_be_bytes());
        rec.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        rec.extend_from_slice(&body);
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .open(with_suffix(&self.path, ".rejected"))
            .map_err(|e| self.io(e))?;
        f.write_all(&rec).map_err(|e| self.io(e))?;
        f.sync_data().map_err(|e| self.io(e))
    }

    /// The oldest publish not yet relayed.
    pub fn peek(&self) -> Result<Option<OutboxRecord>, ClientError> {
        let s = self.lock();
        if s.cursor >= s.len {
            return Ok(None);
        }
        let Some(end) = record_end(&s.file, s.cursor, s.len) else {
            return Err(self.io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("record at offset {} failed its checksum", s.cursor),
            )));
        };
        let mut body = vec![0u8; (end - s.cursor - RECORD_HEADER) as usize];
        s.file
            .read_exact_at(&mut body, s.cursor + RECORD_HEADER)
            .map_err(|e| self.io(e))?;
        let mut buf = BytesMut::from(&body[..]);
        match BusCodec::new(usize::MAX).decode(&mut buf) {
            Ok(Some(Frame::Publish {
                topic, messages, ..
            })) => Ok(Some(OutboxRecord {
                topic,
                messages,
                end,
            })),
            other => Err(self.io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("record at offset {} is not a publish: {other:?}", s.cursor),
            ))),
        }
    }

    /// Marks everything before `end` as relayed (durably), then truncates
    /// or compacts the file when worthwhile.
    pub fn advance(&self, end: u64) -> Result<(), ClientError> {
        let mut s = self.lock();
        let end = end.min(s.len);
        if end == s.len {
            // Everything relayed: forget it. Cursor first, so a crash re-sends.
            self.write_cursor(0)?;
            s.file.set_len(0).map_err(|e| self.io(e))?;
            s.file.sync_all().map_err(|e| self.io(e))?;
            s.len = 0;
            s.cursor = 0;
            return Ok(());
        }
        self.write_cursor(end)?;
        s.cursor = end;
        if s.cursor >= COMPACT_MIN_BYTES && s.cursor * 2 >= s.len {
            self.compact(&mut s)?;
        }
        Ok(())
    }

    /// Rewrites the file without its relayed prefix.
    fn compact(&self, s: &mut State) -> Result<(), ClientError> {
        let tmp = self.path.with_extension("compact");
        let mut tail = vec![0u8; (s.len - s.cursor) as usize];
        s.file
            .read_exact_at(&mut tail, s.cursor)
            .map_err(|e| self.io(e))?;
        let mut out = File::create(&tmp).map_err(|e| self.io(e))?;
        out.write_all(&tail).map_err(|e| self.io(e))?;
        out.sync_all().map_err(|e| self.io(e))?;
        self.write_cursor(0)?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        s.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        s.len = tail.len() as u64;
        s.cursor = 0;
        Ok(())
    }

    fn write_cursor(&self, cursor: u64) -> Result<(), ClientError> {
        let bytes = cursor.to_be_bytes();
        let mut rec = Vec::with_capacity(12);
        rec.extend_from_slice(&bytes);
        rec.extend_from_slice(&crc32c::crc32c(&bytes).to_be_bytes());
        let io = |source| ClientError::Outbox {
            path: self.cursor_path.clone(),
            source,
        };
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.cursor_path)
            .map_err(io)?;
        f.write_all_at(&rec, 0).map_err(io)?;
        f.sync_data().map_err(io)
    }
}

fn sidecar(path: &Path) -> PathBuf {
    with_suffix(path, ".cursor")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// How long opening waits for another holder (e.g. a client still closing).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Locks `<outbox>.lock` so two processes never write one outbox (each
/// instance of a service needs its own file). Waits a little for a holder
/// that is closing.
fn lock_exclusively(path: &Path) -> Result<File, ClientError> {
    let lock_path = with_suffix(path, ".lock");
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|source| ClientError::Outbox {
            path: lock_path.clone(),
            source,
        })?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(ClientError::OutboxInUse {
                    path: path.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(ClientError::Outbox {
                    path: lock_path,
                    source,
                });
            }
        }
    }
}

/// The saved cursor, or 0 when missing or damaged (re-sending is safe).
fn read_cursor(path: &Path) -> u64 {
    let mut rec = [0u8; 12];
    let ok = File::open(path).and_then(|mut f| f.read_exact(&mut rec));
    if ok.is_err() {
        return 0;
    }
    let (value, crc) = rec.split_at(8);
    if crc32c::crc32c(value).to_be_bytes() != crc {
        return 0;
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(value);
    u64::from_be_bytes(v)
}

/// The end of the whole, checksummed record at `at`, if there is one.
fn record_end(file: &File, at: u64, len: u64) -> Option<u64> {
    if at + RECORD_HEADER > len {
        return None;
    }
    let mut header = [0u8; RECORD_HEADER as usize];
    file.read_exact_at(&mut header, at).ok()?;
    let body_len = u64::from(u32::from_be_bytes([
        header[0], header[1], header[2], header[3],
    ]));
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let end = at + RECORD_HEADER + body_len;
    if end > len {
        return None;
    }
    let mut body = vec![0u8; body_len as usize];
    file.read_exact_at(&mut body, at + RECORD_HEADER).ok()?;
    (crc32c::crc32c(&body) == crc).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u32) -> NewMessage {
        NewMessage::new(n.to_be_bytes().to_vec()).with_key(format!("k{n}"))
    }

    fn drain(outbox: &Outbox) -> Vec<NewMessage> {
        let mut out = Vec::new();
        while let Some(rec) = outbox.peek().unwrap() {
            out.extend(rec.messages);
            outbox.advance(rec.end).unwrap();
        }
        out
    }

    #[test]
    fn survives_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox");
        {
            let outbox = Outbox::open(&path, 1 << 20).unwrap();
            for n in 0..10 {
                outbox.append("orders", &[msg(n)]).unwrap();
            }
            // Relay the first three, then "crash".
            for _ in 0..3 {
                let rec = outbox.peek().unwrap().unwrap();
                outbox.advance(rec.end).unwrap();
            }
        }
        let outbox = Outbox::open(&path, 1 << 20).unwrap();
        let rest = drain(&outbox);
        assert_eq!(rest, (3..10).map(msg).collect::<Vec<_>>());
        assert!(outbox.is_empty());
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            0,
            "drained file is truncated"
        );
    }

    #[test]
    fn full_outbox_is_an_error_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox");
        let outbox = Outbox::open(&path, 200).unwrap();
        let mut accepted = 0;
        let err = loop {
            match outbox.append("t", &[msg(accepted)]) {
                Ok(()) => accepted += 1,
                Err(e) => break e,
            }
        };
        assert!(
            matches!(err, ClientError::OutboxFull { max: 200, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("outbox_max_bytes"));
        let before = outbox.pending_bytes();
        assert!(outbox.append("t", &[msg(99)]).is_err());
        assert_eq!(outbox.pending_bytes(), before);
        assert_eq!(drain(&outbox), (0..accepted).map(msg).collect::<Vec<_>>());
        // Room again once relayed.
        outbox.append("t", &[msg(7)]).unwrap();
    }

    #[test]
    fn one_outbox_has_one_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox");
        let _owner = Outbox::open(&path, 1 << 20).unwrap();
        let err = Outbox::open(&path, 1 << 20).unwrap_err();
        assert!(matches!(err, ClientError::OutboxInUse { .. }), "{err}");
    }

    #[test]
    fn torn_tail_is_cut_and_earlier_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox");
        {
            let outbox = Outbox::open(&path, 1 << 20).unwrap();
            outbox.append("t", &[msg(1)]).unwrap();
            outbox.append("t", &[msg(2)]).unwrap();
        }
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        let outbox = Outbox::open(&path, 1 << 20).unwrap();
        assert_eq!(drain(&outbox), vec![msg(1)]);
    }

    #[test]
    fn compaction_keeps_unrelayed_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox");
        let outbox = Outbox::open(&path, 64 << 20).unwrap();
        let big = |n: u32| NewMessage::new(vec![n as u8; 100_000]);
        for n in 0..30 {
            outbox.append("t", &[big(n)]).unwrap();
        }
        for _ in 0..20 {
            let rec = outbox.peek().unwrap().unwrap();
            outbox.advance(rec.end).unwrap();
        }
        assert!(
            std::fs::metadata(&path).unwrap().len() < 20 * 100_000,
            "compacted"
        );
        drop(outbox);
        let outbox = Outbox::open(&path, 64 << 20).unwrap();
        assert_eq!(drain(&outbox), (20..30).map(big).collect::<Vec<_>>());
    }
}
