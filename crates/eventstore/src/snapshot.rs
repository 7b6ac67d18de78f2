//! Snapshots: an aggregate's state at a version, so loading it does not
//! replay its whole history.

use serde_json::Value;

/// The state of one stream after `version` events.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The stream.
    pub stream_id: String,
    /// How many events the state includes.
    pub version: i64,
    /// The serialized state.
    pub state: Value,
}
