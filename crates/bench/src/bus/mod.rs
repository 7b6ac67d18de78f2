//! `mortar bench bus`: publish and consume+ack throughput, and
//! publish→deliver latency, for the embedded broker and for NATS JetStream
//! in the same run.
//!
//! Every backend runs the same three phases on a fresh topic:
//! 1. publish: `producers` tasks publish `count` messages of `size` bytes,
//!    each keeping a window of publishes in flight and counting only
//!    acknowledged ones;
//! 2. consume: `consumers` competing consumers of one group receive and ack
//!    all of them;
//! 3. latency: one paced publisher at `rate` msg/s for `seconds`, one
//!    consumer; each payload carries its send time, the consumer records
//!    delivery minus send.

mod mortar;
mod nats;

use std::time::Duration;

use crate::stats::Summary;

pub use mortar::run as run_mortar;
pub use nats::run as run_nats;

/// What to run.
#[derive(Debug, Clone)]
pub struct BusBenchOptions {
    /// The bus URL: `mortar://host:port` or `nats://host:port`.
    pub url: String,
    /// Concurrent publishers.
    pub producers: usize,
    /// Concurrent consumers in one group.
    pub consumers: usize,
    /// Payload size in bytes (at least 16: the latency phase's timestamp).
    pub size: usize,
    /// Messages in the throughput phases.
    pub count: usize,
    /// Publishes each producer keeps in flight.
    pub window: usize,
    /// Publish rate of the latency phase, msg/s.
    pub rate: u64,
    /// Length of the latency phase.
    pub latency_duration: Duration,
}

/// What one backend measured.
#[derive(Debug, Clone)]
pub struct BusBenchReport {
    /// Which backend and how it acknowledges.
    pub backend: String,
    /// Acknowledged publishes per second.
    pub publish_per_sec: f64,
    /// Received and acknowledged messages per second.
    pub consume_per_sec: f64,
    /// Publish→deliver latency in microseconds.
    pub latency_us: Summary,
    /// Messages the latency phase actually sent per second.
    pub achieved_rate: f64,
}

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BusBenchError {
    /// Bad options.
    #[error("{0}")]
    Usage(String),
    /// The backend failed.
    #[error("{backend}: {message}")]
    Backend {
        /// Which backend.
        backend: String,
        /// What failed.
        message: String,
    },
}

/// Microseconds since the Unix epoch, the clock both ends of the latency
/// phase share (same machine).
pub(crate) fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// A payload of `size` bytes starting with the send time.
pub(crate) fn stamped_payload(size: usize) -> bytes::Bytes {
    let mut payload = vec![b'x'; size.max(8)];
    payload[..8].copy_from_slice(&now_micros().to_be_bytes());
    payload.into()
}

/// The send time in a stamped payload.
pub(crate) fn stamp_of(payload: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

impl BusBenchOptions {
    /// Checks the options before anything connects.
    pub fn validate(&self) -> Result<(), BusBenchError> {
        let bad = |m: &str| Err(BusBenchError::Usage(m.to_owned()));
        if self.producers == 0 || self.consumers == 0 {
            return bad("--producers and --consumers must be at least 1");
        }
        if self.size < 16 {
            return bad("--size must be at least 16 bytes (the latency phase stamps the payload)");
        }
        if self.count < self.producers {
            return bad("--count must be at least --producers");
        }
        if self.window == 0 {
            return bad("--window must be at least 1");
        }
        Ok(())
    }
}
