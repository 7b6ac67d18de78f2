//! mortar's embedded, durable message broker.
//!
//! Services exchange work through topics so a slow or crashed consumer never loses a
//! message. Each topic is an append-only, segmented log of checksummed records on disk;
//! a publish is acknowledged only once fsynced, and one writer thread per topic folds all
//! concurrent publishes into a single write, whose fsync a second thread runs while the
//! next write goes on (group commit). Consumers see a record once it is written
//! ([`Delivery`]), so the disk's sync latency stays out of delivery. Consumer groups read the log
//! with competing consumers, explicit acks, ack deadlines, nacks with backoff and a
//! dead-letter topic; their acks survive restarts. Consumers that keep up are served
//! from a few megabytes of the newest records kept in memory; older messages are read
//! from disk on fetch, so memory stays bounded whatever the backlog.
//!
//! On disk, under [`BrokerConfig::data_dir`]:
//!
//! ```text
//! topics/<topic>/00000000000000000000.log   segments, named by their first offset
//! topics/<topic>/next.prealloc               the next segment, zero-filled ahead of use
//! groups/<topic>/<group>.acks               each group's acks (append-only, compacted)
//! ```
//!
//! Guarantees: a publish that returned `Ok` survives a crash; delivery is at-least-once
//! (a crash may redeliver the last ~200 ms of acks); a damaged log tail is cut off at
//! open and never served; input errors change nothing.
//!
//! The wire protocol, server and clients live in `mortar-bus-proto`,
//! `mortar-bus-server` and `mortar-bus-client`; this crate is the engine they share.

mod ack_store;
pub mod backoff;
mod broker;
mod commit_times;
mod config;
mod consumer_group;
pub mod dead_letter;
mod error;
mod group;
pub mod inspect;
mod log;
mod message;
pub mod names;
mod prealloc;
mod record;
mod retention;
mod segment;
mod stats;
mod sync;
mod tail_cache;
mod topic;
mod writer;

pub use broker::{Broker, MAX_FETCH_BYTES, MAX_FETCH_MESSAGES, REPLAY_GROUP};
pub use commit_times::{COMMIT_BUCKETS_SECONDS, CommitHistogram};
pub use config::{BrokerConfig, Delivery};
pub use error::BusError;
pub use message::{Message, NewMessage};
pub use stats::{GroupStats, TopicStats};
