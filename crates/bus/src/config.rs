//! Broker settings: where data lives and the limits that shape delivery.

use std::path::PathBuf;
use std::time::Duration;

/// How a [`Broker`](crate::Broker) stores and delivers messages.
///
/// The defaults suit one machine: 1 MiB messages, 64 MiB segments (the next one
/// preallocated), records delivered once written (acknowledged once fsynced), 30 s to
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
    /// When consumers may see a published record. Publishers are acknowledged only
    /// after fsync either way.
    pub delivery: Delivery,
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
            delivery: Delivery::default(),
            ack_deadline: Duration::from_secs(30),
            max_deliveries: 5,
            nack_base_delay: Duration::from_millis(500),
            retention_age: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
        }
    }
}

/// When a published record becomes visible to consumers.
///
/// Either way a publisher is acknowledged only once its record is fsynced, so an
/// acknowledged publish survives a power loss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Delivery {
    /// Once the record is written to its log file, while its fsync still runs: the
    /// disk's sync latency stays out of publish→deliver, which is what Kafka and NATS
    /// JetStream do. A written record survives the broker process dying (kill -9);
    /// only a power loss before its fsync can take back a record a consumer already
    /// got, and then its publisher was never acknowledged and publishes it again —
    /// a duplicate, which at-least-once consumers handle anyway.
    #[default]
    Written,
    /// Only once the record is fsynced: a consumer never sees a record that a power
    /// loss could take back, and every delivery waits for the disk's sync.
    Synced,
}

impl Delivery {
    /// The setting's name, as [`Delivery::from_str`](std::str::FromStr) reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Written => "written",
            Delivery::Synced => "synced",
        }
    }
}

impl std::fmt::Display for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Delivery {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "written" => Ok(Delivery::Written),
            "synced" => Ok(Delivery::Synced),
            other => Err(format!(
                "unknown delivery `{other}`: use `written` (deliver once written, the default) or `synced` (deliver once fsynced)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_reads_its_names_and_names_the_choices_otherwise() {
        for d in [Delivery::Written, Delivery::Synced] {
            assert_eq!(d.as_str().parse::<Delivery>(), Ok(d));
        }
        let err = "fsynced".parse::<Delivery>().unwrap_err();
        assert!(err.contains("`fsynced`") && err.contains("written") && err.contains("synced"));
    }
}
