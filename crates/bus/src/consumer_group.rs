//! A consumer group attached to a topic: its in-memory delivery state and the ack file
//! that makes the acked part survive a restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::ack_store::AckStore;
use crate::group::GroupState;
use crate::{BusError, sync};

/// Suffix of ack files in `data_dir/groups/<topic>/`.
pub(crate) const ACK_FILE_SUFFIX: &str = ".acks";

/// One group on one topic.
#[derive(Debug)]
pub(crate) struct ConsumerGroup {
    pub(crate) name: String,
    pub(crate) state: Mutex<GroupState>,
    /// Locked before `state` when both are needed, so flushes never interleave.
    store: Mutex<AckStore>,
}

impl ConsumerGroup {
    /// The ack file of `group` in `dir`.
    pub(crate) fn path(dir: &Path, group: &str) -> PathBuf {
        dir.join(format!("{group}{ACK_FILE_SUFFIX}"))
    }

    /// A new group whose first message is `floor`. Blocking.
    pub(crate) fn create(dir: &Path, name: &str, floor: u64) -> Result<ConsumerGroup, BusError> {
        std::fs::create_dir_all(dir).map_err(|e| BusError::io(dir, e))?;
        let store = AckStore::create(&Self::path(dir, name), floor)?;
        Ok(ConsumerGroup {
            name: name.to_owned(),
            state: Mutex::new(GroupState::new(floor, Default::default())),
            store: Mutex::new(store),
        })
    }

    /// A group restored from its ack file for a log holding `first_offset..next_offset`.
    /// Blocking.
    pub(crate) fn open(
        dir: &Path,
        name: &str,
        first_offset: u64,
        next_offset: u64,
    ) -> Result<ConsumerGroup, BusError> {
        let (store, persisted) = AckStore::open(&Self::path(dir, name))?;
        let mut state = GroupState::new(persisted.floor, persisted.acked);
        let beyond_end =
            state.floor > next_offset || state.acked.last().is_some_and(|id| *id >= next_offset);
        if beyond_end {
            tracing::warn!(
                group = name,
                next_offset,
                "forgetting acks beyond the end of the recovered log"
            );
            state.forget_from(next_offset);
        }
        state.clamp_to(first_offset);
        Ok(ConsumerGroup {
            name: name.to_owned(),
            state: Mutex::new(state),
            store: Mutex::new(store),
        })
    }

    /// Writes acks applied since the last flush (compacting the file when it has grown)
    /// and fsyncs. Blocking. On failure the acks stay queued for the next flush.
    pub(crate) fn flush(&self) -> Result<(), BusError> {
        let mut store = sync::lock(&self.store);
        let (acks, snapshot) = {
            let mut state = sync::lock(&self.state);
            let acks = std::mem::take(&mut state.unsynced);
            let snapshot = store
                .wants_compaction(state.acked.len())
                .then(|| (state.floor, state.acked.clone()));
            (acks, snapshot)
        };
        let result = match snapshot {
            Some((floor, acked)) => store.rewrite(floor, &acked),
            None if acks.is_empty() => Ok(()),
            None => store.append(&acks),
        };
        if result.is_err() {
            sync::lock(&self.state).unsynced.extend(acks);
        }
        result
    }
}
