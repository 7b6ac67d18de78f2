//! A topic: its log, the group-commit writer that appends to it, and its consumer groups.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc, oneshot};

use crate::consumer_group::{ACK_FILE_SUFFIX, ConsumerGroup};
use crate::log::Log;
use crate::writer::{self, AppendRequest};
use crate::{BrokerConfig, BusError, NewMessage, names, sync};

/// One topic of the broker.
pub(crate) struct Topic {
    pub(crate) name: String,
    pub(crate) log: Arc<Log>,
    /// Notified after every commit and whenever something becomes deliverable again.
    pub(crate) wakeup: Arc<Notify>,
    groups_dir: PathBuf,
    sender: Mutex<Option<mpsc::Sender<AppendRequest>>>,
    /// Fires when the writer thread has committed everything and ended.
    writer: Mutex<Option<oneshot::Receiver<()>>>,
    groups: Mutex<BTreeMap<String, Arc<ConsumerGroup>>>,
    /// Serialises group creation, which does file I/O.
    creating: tokio::sync::Mutex<()>,
}

impl Topic {
    /// Opens (or creates) the topic `name` under the configured data directory,
    /// recovering its log and groups.
    pub(crate) async fn open(config: &BrokerConfig, name: &str) -> Result<Topic, BusError> {
        let data_dir = &config.data_dir;
        let log_dir = data_dir.join("topics").join(name);
        let groups_dir = data_dir.join("groups").join(name);
        let (segment_bytes, preallocate, delivery) = (
            config.segment_bytes,
            config.preallocate_segments,
            config.delivery,
        );
        let (log, log_writer, groups) = {
            let groups_dir = groups_dir.clone();
            tokio::task::spawn_blocking(move || {
                let (log, log_writer) = Log::open(&log_dir, segment_bytes, preallocate, delivery)?;
                let groups = open_groups(&groups_dir, log.first_offset(), log.next_offset())?;
                Ok::<_, BusError>((log, log_writer, groups))
            })
            .await
            .map_err(|_| BusError::Closed)??
        };
        let wakeup = Arc::new(Notify::new());
        let (sender, receiver) = mpsc::channel(writer::QUEUE_DEPTH);
        let task = writer::spawn(name, log_writer, receiver, Arc::clone(&wakeup))
            .map_err(|e| BusError::io(data_dir.join("topics").join(name), e))?;
        Ok(Topic {
            name: name.to_owned(),
            log,
            wakeup,
            groups_dir,
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(task)),
            groups: Mutex::new(groups),
            creating: tokio::sync::Mutex::new(()),
        })
    }

    /// Appends `messages` and returns their ids once they are fsynced.
    pub(crate) async fn append(&self, messages: Vec<NewMessage>) -> Result<Vec<u64>, BusError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let sender = sync::lock(&self.sender).clone().ok_or(BusError::Closed)?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(AppendRequest { messages, reply })
            .await
            .map_err(|_| BusError::Closed)?;
        answer.await.map_err(|_| BusError::Closed)?
    }

    /// The group `name`, if it subscribed.
    pub(crate) fn group(&self, name: &str) -> Result<Arc<ConsumerGroup>, BusError> {
        sync::lock(&self.groups)
            .get(name)
            .cloned()
            .ok_or_else(|| BusError::UnknownGroup {
                topic: self.name.clone(),
                group: name.to_owned(),
            })
    }

    /// Every group, by name.
    pub(crate) fn groups(&self) -> Vec<Arc<ConsumerGroup>> {
        sync::lock(&self.groups).values().cloned().collect()
    }

    /// Subscribes `name` (idempotent); a new group starts at the first stored offset.
    pub(crate) async fn subscribe(&self, name: &str) -> Result<Arc<ConsumerGroup>, BusError> {
        if let Ok(group) = self.group(name) {
            return Ok(group);
        }
        names::validate("group", name)?;
        let _creating = self.creating.lock().await;
        if let Ok(group) = self.group(name) {
            return Ok(group);
        }
        let dir = self.groups_dir.clone();
        let floor = self.log.first_offset();
        let owned = name.to_owned();
        let group = tokio::task::spawn_blocking(move || ConsumerGroup::create(&dir, &owned, floor))
            .await
            .map_err(|_| BusError::Closed)??;
        let group = Arc::new(group);
        sync::lock(&self.groups).insert(name.to_owned(), Arc::clone(&group));
        Ok(group)
    }

    /// Stops accepting publishes and waits until everything queued is committed.
    pub(crate) async fn close(&self) {
        sync::lock(&self.sender).take();
        let task = sync::lock(&self.writer).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.wakeup.notify_waiters();
    }
}

/// Loads every group's ack file in `dir` (none if the directory does not exist).
fn open_groups(
    dir: &Path,
    first_offset: u64,
    next_offset: u64,
) -> Result<BTreeMap<String, Arc<ConsumerGroup>>, BusError> {
    let mut groups = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(groups),
        Err(e) => return Err(BusError::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| BusError::io(dir, e))?;
        let file_name = entry.file_name();
        let Some(name) = file_name
            .to_str()
            .and_then(|n| n.strip_suffix(ACK_FILE_SUFFIX))
        else {
            continue;
        };
        if names::validate("group", name).is_err() {
            tracing::warn!(file = %entry.path().display(), "ignoring an ack file whose name is not a group name");
            continue;
        }
        let group = ConsumerGroup::open(dir, name, first_offset, next_offset)?;
        groups.insert(name.to_owned(), Arc::new(group));
    }
    Ok(groups)
}
