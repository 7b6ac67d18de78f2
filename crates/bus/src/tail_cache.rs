//! The newest committed records of a log, kept in memory.
//!
//! Why: consumers that keep up read what was just published. Serving those
//! reads from the records the writer already holds spares a trip to a
//! blocking thread and a `pread` per fetch, which is most of the
//! publish→deliver latency once the fsync is paid. The cache holds a
//! contiguous run of offsets ending at the log's end and is capped in bytes,
//! so a backlog still lives on disk, not in memory.

use std::collections::VecDeque;

use crate::record::Record;

/// Payload, key and header bytes kept per topic at most.
pub(crate) const TAIL_CACHE_BYTES: usize = 4 * 1024 * 1024;

/// A contiguous run of the newest records.
#[derive(Debug)]
pub(crate) struct TailCache {
    records: VecDeque<Record>,
    bytes: usize,
    max_bytes: usize,
}

impl TailCache {
    /// An empty cache holding at most `max_bytes` of records.
    pub(crate) fn new(max_bytes: usize) -> Self {
        TailCache {
            records: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Appends newly committed records (offsets must follow on from the
    /// cached ones; otherwise the cache restarts from them), evicting the
    /// oldest beyond the byte cap.
    pub(crate) fn extend(&mut self, records: Vec<Record>) {
        for record in records {
            let follows = self
                .records
                .back()
                .is_none_or(|last| last.offset + 1 == record.offset);
            if !follows {
                self.clear();
            }
            self.bytes += record.size();
            self.records.push_back(record);
        }
        while self.bytes > self.max_bytes
            && let Some(old) = self.records.pop_front()
        {
            self.bytes -= old.size();
        }
    }

    /// Forgets records below `offset` (their segment was removed).
    pub(crate) fn drop_before(&mut self, offset: u64) {
        while let Some(front) = self.records.front()
            && front.offset < offset
        {
            self.bytes -= front.size();
            self.records.pop_front();
        }
    }

    fn clear(&mut self) {
        self.records.clear();
        self.bytes = 0;
    }

    /// Records with offsets in `[from, from + max)`, stopping once
    /// `max_bytes` were collected (at least one record); `None` when `from`
    /// is older than the cache, so the caller must read the disk.
    pub(crate) fn read(&self, from: u64, max: usize, max_bytes: usize) -> Option<Vec<Record>> {
        let first = self.records.front()?.offset;
        if from < first {
            return None;
        }
        let start = usize::try_from(from - first).ok()?;
        let mut out = Vec::new();
        let mut bytes = 0;
        for record in self.records.iter().skip(start).take(max) {
            bytes += record.size();
            out.push(record.clone());
            if bytes >= max_bytes {
                break;
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: u64, size: usize) -> Record {
        Record {
            offset,
            publish_time_ms: 1,
            key: None,
            headers: Vec::new(),
            payload: vec![0; size].into(),
        }
    }

    fn offsets(records: &[Record]) -> Vec<u64> {
        records.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn serves_the_newest_records_and_sends_older_reads_to_disk() {
        let mut cache = TailCache::new(300);
        cache.extend((0..5).map(|o| record(o, 100)).collect());
        assert!(
            cache.read(1, 10, usize::MAX).is_none(),
            "evicted: read disk"
        );
        let read = cache.read(2, 10, usize::MAX).unwrap();
        assert_eq!(offsets(&read), [2, 3, 4]);
        assert_eq!(offsets(&cache.read(3, 1, usize::MAX).unwrap()), [3]);
        assert!(cache.read(5, 10, usize::MAX).unwrap().is_empty());
        assert_eq!(offsets(&cache.read(2, 10, 150).unwrap()), [2, 3]);
    }

    #[test]
    fn a_gap_restarts_the_cache_and_removed_segments_leave_it() {
        let mut cache = TailCache::new(10_000);
        cache.extend((0..3).map(|o| record(o, 10)).collect());
        cache.extend(vec![record(7, 10)]);
        assert!(cache.read(2, 10, usize::MAX).is_none());
        assert_eq!(offsets(&cache.read(7, 10, usize::MAX).unwrap()), [7]);
        cache.extend(vec![record(8, 10)]);
        cache.drop_before(8);
        assert!(cache.read(7, 10, usize::MAX).is_none());
        assert_eq!(offsets(&cache.read(8, 10, usize::MAX).unwrap()), [8]);
    }
}
