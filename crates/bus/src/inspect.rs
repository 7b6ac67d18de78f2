//! Reading a topic's log files from outside the broker: what backups and
//! their verification need, through the same record decoder and scanner
//! the broker's recovery uses (so "valid" means the same thing in both).
//!
//! A segment is append-only while the broker runs, so a copy of it is a
//! prefix of the log that may end inside a record still being written;
//! [`scan_segment`] says where the last whole, checksummed record ends,
//! which is where a consistent cut of that segment must stop.

use std::fs::File;
use std::path::Path;

use crate::BusError;
use crate::segment::{Scan, Scanner, Segment};

/// What a scan of one segment file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    /// The first offset, from the file name.
    pub base: u64,
    /// Whole records with a matching checksum, in sequence.
    pub records: u64,
    /// One past the last good record's offset (== `base` when none).
    pub next_offset: u64,
    /// Bytes of good records from the start of the file: where a cut ends.
    pub valid_len: u64,
    /// The file's length when scanned.
    pub file_len: u64,
    /// The first problem after the good records (a record cut short, a
    /// checksum mismatch, an offset out of sequence), if any.
    pub damage: Option<Damage>,
}

/// Where and why a scan stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The byte position of the bad record.
    pub position: u64,
    /// What was wrong with it.
    pub reason: &'static str,
}

/// The base offset a segment file name (`<20 digits>.log`) encodes, or
/// `None` for any other file.
pub fn segment_base(file_name: &str) -> Option<u64> {
    Segment::parse_file_name(file_name)
}

/// Scans every record of the segment at `path` (read-only: nothing is
/// truncated, unlike the broker's recovery).
pub fn scan_segment(path: &Path) -> Result<SegmentScan, BusError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let base = segment_base(name).ok_or_else(|| {
        BusError::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a segment file name (expected <20 digits>.log)",
            ),
        )
    })?;
    let file = File::open(path).map_err(|e| BusError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| BusError::io(path, e))?.len();
    let mut scan = SegmentScan {
        base,
        records: 0,
        next_offset: base,
        valid_len: 0,
        file_len,
        damage: None,
    };
    let mut scanner = Scanner::new(&file, 0, file_len);
    loop {
        match scanner.next().map_err(|e| BusError::io(path, e))? {
            Scan::End => return Ok(scan),
            Scan::Damaged { pos, reason } => {
                scan.damage = Some(Damage {
                    position: pos,
                    reason,
                });
                return Ok(scan);
            }
            Scan::Record { record, pos, len } => {
                if record.offset != scan.next_offset {
                    scan.damage = Some(Damage {
                        position: pos,
                        reason: "record offset out of sequence",
                    });
                    return Ok(scan);
                }
                scan.records += 1;
                scan.next_offset = record.offset + 1;
                scan.valid_len = pos + len as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewMessage;
    use crate::record;

    #[test]
    fn a_torn_tail_is_reported_and_the_cut_ends_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(Segment::file_name(10));
        let mut buf = Vec::new();
        for i in 0..3 {
            record::encode(10 + i, 1, &NewMessage::new(vec![b'x'; 20]), &mut buf);
        }
        let whole = buf.len() as u64;
        record::encode(13, 1, &NewMessage::new(vec![b'y'; 20]), &mut buf);
        buf.truncate(buf.len() - 3);
        std::fs::write(&path, &buf).unwrap();
        let scan = scan_segment(&path).unwrap();
        assert_eq!(scan.base, 10);
        assert_eq!(scan.records, 3);
        assert_eq!(scan.next_offset, 13);
        assert_eq!(scan.valid_len, whole);
        assert_eq!(scan.file_len, buf.len() as u64);
        assert_eq!(scan.damage.unwrap().position, whole);
    }

    #[test]
    fn a_flipped_byte_is_damage_and_other_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(Segment::file_name(0));
        let mut buf = Vec::new();
        record::encode(0, 1, &NewMessage::new(vec![b'x'; 20]), &mut buf);
        let last = buf.len() - 1;
        buf[last] ^= 1;
        std::fs::write(&path, &buf).unwrap();
        let scan = scan_segment(&path).unwrap();
        assert_eq!(scan.records, 0);
        assert_eq!(scan.damage.unwrap().reason, "checksum mismatch");
        assert!(scan_segment(&dir.path().join("x.log")).is_err());
    }
}
