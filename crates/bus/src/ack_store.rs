//! A group's acks on disk: an append-only file of checksummed entries, compacted by
//! rewriting it as "floor + acks above it". Losing the last few entries in a crash only
//! causes redelivery, which at-least-once delivery allows.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::BusError;
use crate::log::sync_dir;

const ENTRY_LEN: usize = 13;
const TAG_FLOOR: u8 = 1;
const TAG_ACK: u8 = 2;

/// Rewrite the file once it holds this many entries more than its compacted form would.
const COMPACT_SLACK: u64 = 4096;

/// The ack file of one group.
#[derive(Debug)]
pub(crate) struct AckStore {
    path: PathBuf,
    file: File,
    entries: u64,
}

/// What an ack file says.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Persisted {
    pub(crate) floor: u64,
    pub(crate) acked: BTreeSet<u64>,
}

impl AckStore {
    /// Creates a new ack file for a group starting at `floor` (replacing any old one).
    pub(crate) fn create(path: &Path, floor: u64) -> Result<AckStore, BusError> {
        let entries = write_compacted(path, floor, &BTreeSet::new())?;
        Ok(AckStore {
            path: path.to_owned(),
            file: open_append(path)?,
            entries,
        })
    }

    /// Opens an existing ack file; a torn or corrupt tail is dropped with a warning.
    pub(crate) fn open(path: &Path) -> Result<(AckStore, Persisted), BusError> {
        let bytes = std::fs::read(path).map_err(|e| BusError::io(path, e))?;
        let mut persisted = Persisted::default();
        let mut good = 0;
        for entry in bytes.chunks(ENTRY_LEN) {
            let Some((tag, value)) = decode(entry) else {
                break;
            };
            match tag {
                TAG_FLOOR => persisted.floor = persisted.floor.max(value),
                _ => {
                    persisted.acked.insert(value);
                }
            }
            good += 1;
        }
        let good_len = (good * ENTRY_LEN) as u64;
        let file = open_append(path)?;
        if good_len < bytes.len() as u64 {
            tracing::warn!(
                file = %path.display(),
                bytes_dropped = bytes.len() as u64 - good_len,
                "dropping a torn or corrupt ack-file tail; those messages may be redelivered"
            );
            file.set_len(good_len).map_err(|e| BusError::io(path, e))?;
        }
        persisted.acked = persisted.acked.split_off(&persisted.floor);
        let store = AckStore {
            path: path.to_owned(),
            file,
            entries: good as u64,
        };
        Ok((store, persisted))
    }

    /// Whether the file has grown enough past `live` entries to be worth compacting.
    pub(crate) fn wants_compaction(&self, live: usize) -> bool {
        self.entries > live as u64 + 1 + COMPACT_SLACK
    }

    /// Appends acks and fdatasyncs.
    pub(crate) fn append(&mut self, acks: &[u64]) -> Result<(), BusError> {
        let mut buf = Vec::with_capacity(acks.len() * ENTRY_LEN);
        for ack in acks {
            encode(TAG_ACK, *ack, &mut buf);
        }
        self.file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| BusError::io(&self.path, e))?;
        self.entries += acks.len() as u64;
        Ok(())
    }

    /// Replaces the file, atomically, with its compacted form.
    pub(crate) fn rewrite(&mut self, floor: u64, acked: &BTreeSet<u64>) -> Result<(), BusError> {
        self.entries = write_compacted(&self.path, floor, acked)?;
        self.file = open_append(&self.path)?;
        Ok(())
    }
}

/// Writes "floor + acks above it" to `path` via a temporary file and a rename, so a
/// crash leaves either the old or the new file. Returns the number of entries.
fn write_compacted(path: &Path, floor: u64, acked: &BTreeSet<u64>) -> Result<u64, BusError> {
    let mut buf = Vec::with_capacity((acked.len() + 1) * ENTRY_LEN);
    encode(TAG_FLOOR, floor, &mut buf);
    for ack in acked.range(floor..) {
        encode(TAG_ACK, *ack, &mut buf);
    }
    let tmp = path.with_extension("acks.tmp");
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(&buf)?;
        f.sync_all()
    });
    written.map_err(|e| BusError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| BusError::io(path, e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok((buf.len() / ENTRY_LEN) as u64)
}

fn open_append(path: &Path) -> Result<File, BusError> {
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| BusError::io(path, e))
}

fn encode(tag: u8, value: u64, out: &mut Vec<u8>) {
    let start = out.len();
    out.push(tag);
    out.extend_from_slice(&value.to_le_bytes());
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

fn decode(entry: &[u8]) -> Option<(u8, u64)> {
    let entry: &[u8; ENTRY_LEN] = entry.try_into().ok()?;
    let crc = u32::from_le_bytes(entry[9..].try_into().ok()?);
    if crc32c::crc32c(&entry[..9]) != crc || !matches!(entry[0], TAG_FLOOR | TAG_ACK) {
        return None;
    }
    Some((entry[0], u64::from_le_bytes(entry[1..9].try_into().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_survive_reopen_and_compaction_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.acks");
        let mut store = AckStore::create(&path, 5).unwrap();
        store.append(&[7, 9, 3]).unwrap();
        drop(store);
        let (mut store, persisted) = AckStore::open(&path).unwrap();
        assert_eq!(
            persisted,
            Persisted {
                floor: 5,
                acked: BTreeSet::from([7, 9])
            }
        );
        store.rewrite(8, &BTreeSet::from([9, 11])).unwrap();
        store.append(&[12]).unwrap();
        drop(store);
        let file = OpenOptions::new().append(true).open(&path).unwrap();
        (&file).write_all(&[TAG_ACK, 1, 2]).unwrap();
        let (_, persisted) = AckStore::open(&path).unwrap();
        assert_eq!(
            persisted,
            Persisted {
                floor: 8,
                acked: BTreeSet::from([9, 11, 12])
            }
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            4 * ENTRY_LEN as u64
        );
    }
}
