//! Broker settings: where data lives and the limits that shape delivery.

use std::path::PathBuf;
use std::time::Duration;

/// How a [`Broker`](crate::Broker) stores and delivers messages.
///
/// The defaults suit one machine: 1 MiB messages, 64 MiB segments (the next one
/// preallocated), 30 s to
/// acknowledge, five deliveries before a message is dead-lettered and seven
/// days of retention.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Root of everything durable: topics in `data_dir/topics/<topic>/`,
    /// consumer-group state in `data_dir/groups/<topic>/<group>.acks`.
    pub data_dir: PathBuf,
    /// Largest accepted message (payload + key + header names and values), in bytes.
    pub max_message_bytes: usize,
    /// A segment file that grows past this many bytes is closed and a new one started.
    pub segment_bytes: u64,
    /// Zero-fill the next segment file in the background so appends overwrite
    /// allocated blocks and each fsync flushes data only (no file-size update): lower
    /// publish latency, for up to `segment_bytes` more disk per topic published to.
    pub preallocate_segments: bool,
    /// A delivery that is neither acked nor nacked within this time is redelivered.
    pub ack_deadline: Duration,
    /// After this many deliveries a failing message moves to `<topic>.dlq`.
    pub max_deliveries: u32,
    /// A nack without an explicit delay waits `base * 2^(attempt-1)`, capped at 5 minutes.
    pub nack_base_delay: Duration,
    /// Segments older than this (by their newest record) may be removed once every group acked them.
    pub retention_age: Option<Duration>,
    /// Oldest segments beyond this total size may be removed once every group acked them.
    pub retention_bytes: Option<u64>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./bus"),
            max_message_bytes: 1024 * 1024,
            segment_bytes: 64 * 1024 * 1024,
            preallocate_segments: true,
            ack_deadline: Duration::from_secs(30),
            max_deliveries: 5,
            nack_base_delay: Duration::from_millis(500),
            retention_age: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
        }
    }
}
