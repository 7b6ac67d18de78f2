//! The broker: topics, publishing with group commit, consumer groups with competing
//! consumers, ack deadlines, nacks with backoff, dead letters and retention.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::consumer_group::ConsumerGroup;
use crate::dead_letter::{dead_letter, dlq_topic, replayed};
use crate::group::{Exhausted, Retry};
use crate::log::sync_dir;
use crate::record::Record;
use crate::topic::Topic;
use crate::writer::now_ms;
use crate::{
    BrokerConfig, BusError, GroupStats, Message, NewMessage, TopicStats, names, retention, sync,
};

/// How often deadlines are checked and acks are fsynced.
const TICK: Duration = Duration::from_millis(200);
/// How often retention runs on its own.
const RETENTION_EVERY: Duration = Duration::from_secs(30);
/// The internal group that [`Broker::replay_dead_letters`] consumes a dead-letter topic with.
pub const REPLAY_GROUP: &str = "replay";
/// Most messages one fetch returns, whatever `max` asks for.
pub const MAX_FETCH_MESSAGES: usize = 10_000;
/// One fetch stops adding messages once it holds this many bytes (it always returns at
/// least one message), so a fetch never loads a whole backlog into memory.
pub const MAX_FETCH_BYTES: usize = 16 * 1024 * 1024;
/// How long a dead letter that could not be written waits before it is tried again.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(1);

/// The embedded, durable message broker. Cheap to clone: clones share one broker.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    config: BrokerConfig,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    creating: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    background: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("data_dir", &self.inner.config.data_dir)
            .field("topics", &self.topics())
            .finish()
    }
}

impl Broker {
    /// Opens the broker in `config.data_dir`, recovering every topic (a torn or corrupt
    /// log tail is truncated, never served) and every group's acks, and starts the
    /// background task that enforces ack deadlines, fsyncs acks and applies retention.
    pub async fn open(config: BrokerConfig) -> Result<Broker, BusError> {
        let topics_dir = config.data_dir.join("topics");
        for dir in [&topics_dir, &config.data_dir.join("groups")] {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| BusError::io(dir, e))?;
        }
        let mut topics = BTreeMap::new();
        let mut entries = tokio::fs::read_dir(&topics_dir)
            .await
            .map_err(|e| BusError::io(&topics_dir, e))?;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| BusError::io(&topics_dir, e))?
        {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str().filter(|n| is_topic_name(n)) else {
                tracing::warn!(path = %entry.path().display(), "ignoring an entry that is not a topic directory");
                continue;
            };
            let topic = Topic::open(&config, name).await?;
            topics.insert(name.to_owned(), Arc::new(topic));
        }
        let inner = Arc::new(Inner {
            config,
            topics: RwLock::new(topics),
            creating: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            background: Mutex::new(None),
        });
        let task = tokio::spawn(background(Arc::downgrade(&inner)));
        *sync::lock(&inner.background) = Some(task);
        Ok(Broker { inner })
    }

    /// Creates `name` and its dead-letter topic `<name>.dlq`; does nothing for topics
    /// that exist. Names: `[a-z0-9._-]{1,128}`, not starting with '.'.
    pub async fn create_topic(&self, name: &str) -> Result<(), BusError> {
        self.check_open()?;
        names::validate("topic", name)?;
        self.ensure_topic(name).await?;
        if !name.ends_with(".dlq") {
            self.ensure_topic(&dlq_topic(name)).await?;
        }
        Ok(())
    }

    /// Every topic's name, sorted.
    pub fn topics(&self) -> Vec<String> {
        sync::read(&self.inner.topics).keys().cloned().collect()
    }

    /// Appends `batch` to `topic` and returns the ids, only after the records are
    /// fsynced. Concurrent publishes share one fsync (group commit). If any message is
    /// too large nothing is published.
    pub async fn publish(&self, topic: &str, batch: Vec<NewMessage>) -> Result<Vec<u64>, BusError> {
        self.check_open()?;
        let topic = self.topic(topic)?;
        let limit = self.inner.config.max_message_bytes;
        if let Some(size) = batch
            .iter()
            .map(NewMessage::size)
            .find(|size| *size > limit)
        {
            return Err(BusError::TooLarge { size, limit });
        }
        topic.append(batch).await
    }

    /// Attaches `group` to `topic` (idempotent). A new group starts at the oldest
    /// message still stored.
    pub async fn subscribe(&self, topic: &str, group: &str) -> Result<(), BusError> {
        self.check_open()?;
        self.topic(topic)?.subscribe(group).await.map(drop)
    }

    /// Waits up to `wait` for at least one message for `group`, and returns up to `max`.
    /// They are in flight for `consumer` until acked, nacked, released or past the ack
    /// deadline; no other consumer of the group gets them meanwhile.
    pub async fn fetch(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message>, BusError> {
        self.fetch_unless(topic, group, consumer, max, wait, std::future::pending())
            .await
    }

    /// [`Broker::fetch`] that gives up waiting, with nothing, once `stop`
    /// completes. Unlike dropping a `fetch`, this never loses messages that
    /// were already reserved for the consumer: `stop` is only heeded while
    /// nothing is reserved. A draining subscription uses it to stop taking
    /// work without leaving messages in flight that nobody will see.
    pub async fn fetch_unless(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<Vec<Message>, BusError> {
        tokio::pin!(stop);
        self.check_open()?;
        let topic = self.topic(topic)?;
        let group = topic.group(group)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let max = max.min(MAX_FETCH_MESSAGES);
        let start = Instant::now();
        let deadline = start
            .checked_add(wait)
            .unwrap_or(start + Duration::from_secs(86_400));
        loop {
            self.check_open()?;
            let wakeup = topic.wakeup.notified();
            tokio::pin!(wakeup);
            wakeup.as_mut().enable();
            self.expire(&topic, &group).await?;
            let now = Instant::now();
            let reserved = sync::lock(&group.state).reserve(
                consumer,
                max,
                topic.log.next_offset(),
                now,
                self.inner.config.ack_deadline,
            );
            if !reserved.is_empty() {
                let messages = self.load(&topic, &group, reserved).await?;
                if !messages.is_empty() {
                    return Ok(messages);
                }
                continue;
            }
            if now >= deadline {
                return Ok(Vec::new());
            }
            let wake = sync::lock(&group.state)
                .next_wake()
                .map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                () = &mut wakeup => {}
                () = tokio::time::sleep_until(wake) => {}
                () = &mut stop => return Ok(Vec::new()),
            }
        }
    }

    /// Acknowledges messages: they are never delivered to `group` again. Acking twice is
    /// harmless; ids the topic never had are refused and nothing is acked.
    pub async fn ack(&self, topic: &str, group: &str, ids: &[u64]) -> Result<(), BusError> {
        self.check_open()?;
        let topic = self.topic(topic)?;
        let group = topic.group(group)?;
        check_ids(&topic, ids)?;
        let mut state = sync::lock(&group.state);
        for id in ids {
            state.ack(*id);
        }
        Ok(())
    }

    /// Rejects in-flight messages: each is redelivered after `delay`, or after
    /// `nack_base_delay * 2^(attempt-1)` (at most 5 minutes) when `None`. A message that
    /// has had `max_deliveries` deliveries goes to `<topic>.dlq` with `reason` instead.
    /// Ids not in flight (already acked or redelivered) are ignored.
    pub async fn nack(
        &self,
        topic: &str,
        group: &str,
        ids: &[u64],
        delay: Option<Duration>,
        reason: &str,
    ) -> Result<(), BusError> {
        self.check_open()?;
        let topic = self.topic(topic)?;
        let group = topic.group(group)?;
        check_ids(&topic, ids)?;
        let config = &self.inner.config;
        let exhausted = sync::lock(&group.state).nack(
            ids,
            Instant::now(),
            delay,
            config.nack_base_delay,
            config.max_deliveries,
        );
        topic.wakeup.notify_waiters();
        let reason = if reason.is_empty() {
            "rejected by the consumer"
        } else {
            reason
        };
        self.dead_letter(&topic, &group, exhausted, reason).await
    }

    /// The consumer went away: everything in flight with it is deliverable again now
    /// (or dead-lettered if it used up its deliveries).
    pub async fn release(&self, topic: &str, group: &str, consumer: &str) {
        let Ok(topic) = self.topic(topic) else { return };
        let Ok(group) = topic.group(group) else {
            return;
        };
        let exhausted = sync::lock(&group.state).release(
            consumer,
            Instant::now(),
            self.inner.config.max_deliveries,
        );
        topic.wakeup.notify_waiters();
        let reason = "the consumer holding it went away too often";
        if let Err(error) = self.dead_letter(&topic, &group, exhausted, reason).await {
            tracing::error!(%error, topic = %topic.name, group = %group.name, "dead-lettering released messages failed");
        }
    }

    /// Size and progress of every topic and group.
    pub fn stats(&self) -> Vec<TopicStats> {
        self.all_topics()
            .iter()
            .map(|topic| {
                let next_offset = topic.log.next_offset();
                let groups = topic
                    .groups()
                    .iter()
                    .map(|group| {
                        let state = sync::lock(&group.state);
                        GroupStats {
                            group: group.name.clone(),
                            backlog: state.backlog(next_offset),
                            lag: state.lag(next_offset),
                            in_flight: state.in_flight.len() as u64,
                            dead_lettered: state.dead_lettered,
                            redelivered: state.redelivered,
                            delivered: state.delivered,
                        }
                    })
                    .collect();
                TopicStats {
                    topic: topic.name.clone(),
                    first_offset: topic.log.first_offset(),
                    next_offset,
                    bytes: topic.log.bytes(),
                    groups,
                    commits: topic.log.commit_times(),
                }
            })
            .collect()
    }

    /// Moves up to `max` messages from `<topic>.dlq` back into `topic` (without their
    /// dead-letter headers), consuming the dead-letter topic with the group
    /// [`REPLAY_GROUP`]. Returns how many were moved.
    pub async fn replay_dead_letters(&self, topic: &str, max: usize) -> Result<usize, BusError> {
        self.check_open()?;
        let target = self.topic(topic)?;
        let dlq_name = dlq_topic(topic);
        let dlq = self.topic(&dlq_name)?;
        dlq.subscribe(REPLAY_GROUP).await?;
        let messages = self
            .fetch(&dlq_name, REPLAY_GROUP, REPLAY_GROUP, max, Duration::ZERO)
            .await?;
        if messages.is_empty() {
            return Ok(0);
        }
        let ids: Vec<u64> = messages.iter().map(|m| m.id).collect();
        if let Err(error) = target.append(messages.iter().map(replayed).collect()).await {
            self.nack(
                &dlq_name,
                REPLAY_GROUP,
                &ids,
                Some(Duration::ZERO),
                "replay failed",
            )
            .await?;
            return Err(error);
        }
        self.ack(&dlq_name, REPLAY_GROUP, &ids).await?;
        tracing::info!(topic, count = ids.len(), "replayed dead letters");
        Ok(ids.len())
    }

    /// Removes old segments that are past retention and acknowledged by every group.
    /// Runs every 30 seconds on its own; call it to run it now. Failures are logged.
    pub async fn enforce_retention(&self) {
        let config = &self.inner.config;
        for topic in self.all_topics() {
            let groups = topic.groups();
            let min_floor = groups.iter().map(|g| sync::lock(&g.state).floor).min();
            let infos = topic.log.segment_infos();
            let count = retention::removable(
                &infos,
                min_floor,
                now_ms(),
                config.retention_age,
                config.retention_bytes,
            );
            if count == 0 {
                continue;
            }
            let log = Arc::clone(&topic.log);
            let removed = tokio::task::spawn_blocking(move || log.remove_oldest(count)).await;
            match removed {
                Ok(Ok(removed)) => {
                    let first = topic.log.first_offset();
                    for group in &groups {
                        sync::lock(&group.state).clamp_to(first);
                    }
                    tracing::info!(
                        topic = %topic.name,
                        segments = removed.len(),
                        bytes = removed.iter().map(|s| s.size).sum::<u64>(),
                        first_offset = first,
                        "retention removed old segments"
                    );
                }
                Ok(Err(error)) => tracing::error!(%error, topic = %topic.name, "retention failed"),
                Err(_) => return,
            }
        }
    }

    /// Total fsyncs of all topic logs since open: with group commit this grows much
    /// slower than the number of publishes.
    pub fn fsyncs(&self) -> u64 {
        self.all_topics().iter().map(|t| t.log.fsyncs()).sum()
    }

    /// Stops accepting work, commits every queued publish, writes every ack and stops
    /// the background task. Later calls return [`BusError::Closed`].
    pub async fn close(&self) {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let background = sync::lock(&self.inner.background).take();
        if let Some(task) = background {
            task.abort();
            let _ = task.await;
        }
        let topics = self.all_topics();
        for topic in &topics {
            topic.close().await;
        }
        let flushed = tokio::task::spawn_blocking(move || flush_groups(&topics)).await;
        if flushed.is_err() {
            tracing::error!(
                "writing acks at close was interrupted; some messages may be redelivered"
            );
        }
    }

    fn check_open(&self) -> Result<(), BusError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            Err(BusError::Closed)
        } else {
            Ok(())
        }
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, BusError> {
        sync::read(&self.inner.topics)
            .get(name)
            .cloned()
            .ok_or_else(|| BusError::UnknownTopic {
                topic: name.to_owned(),
            })
    }

    fn all_topics(&self) -> Vec<Arc<Topic>> {
        sync::read(&self.inner.topics).values().cloned().collect()
    }

    /// Opens or creates a topic whose name is already known to be safe.
    async fn ensure_topic(&self, name: &str) -> Result<Arc<Topic>, BusError> {
        if let Ok(topic) = self.topic(name) {
            return Ok(topic);
        }
        let _creating = self.inner.creating.lock().await;
        if let Ok(topic) = self.topic(name) {
            return Ok(topic);
        }
        let data_dir = &self.inner.config.data_dir;
        let topic = Arc::new(Topic::open(&self.inner.config, name).await?);
        let topics_dir = data_dir.join("topics");
        tokio::task::spawn_blocking(move || sync_dir(&topics_dir))
            .await
            .map_err(|_| BusError::Closed)??;
        sync::write(&self.inner.topics).insert(name.to_owned(), Arc::clone(&topic));
        tracing::info!(topic = name, "created topic");
        Ok(topic)
    }

    /// Requeues deliveries past their deadline; dead-letters those out of deliveries.
    async fn expire(&self, topic: &Topic, group: &ConsumerGroup) -> Result<(), BusError> {
        let (exhausted, requeued) = {
            let mut state = sync::lock(&group.state);
            let before = state.redelivered;
            let exhausted = state.expire(Instant::now(), self.inner.config.max_deliveries);
            (exhausted, state.redelivered > before)
        };
        if requeued {
            topic.wakeup.notify_waiters();
        }
        self.dead_letter(topic, group, exhausted, "ack deadline exceeded")
            .await
    }

    /// Reads the reserved messages, up to [`MAX_FETCH_BYTES`]; reservations past that
    /// are handed back. Offsets no longer stored are acked and skipped.
    async fn load(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        reserved: Vec<(u64, u32)>,
    ) -> Result<Vec<Message>, BusError> {
        let ids: Vec<u64> = reserved.iter().map(|(id, _)| *id).collect();
        let Fetched {
            mut records,
            unread_from,
        } = self.read_ids(topic, ids, MAX_FETCH_BYTES).await?;
        let mut messages = Vec::with_capacity(reserved.len());
        let mut missing = Vec::new();
        let mut unread = Vec::new();
        for (id, attempt) in reserved {
            match records.remove(&id) {
                Some(record) => messages.push(Message {
                    id,
                    topic: topic.name.clone(),
                    key: record.key,
                    headers: record.headers,
                    payload: record.payload,
                    publish_time_ms: record.publish_time_ms,
                    attempt,
                }),
                None if unread_from.is_some_and(|from| id >= from) => unread.push((id, attempt)),
                None => missing.push(id),
            }
        }
        messages.sort_by_key(|m| m.id);
        if !missing.is_empty() || !unread.is_empty() {
            let now = Instant::now();
            let mut state = sync::lock(&group.state);
            for id in missing {
                state.ack(id);
            }
            for (id, attempt) in unread {
                state.unreserve(id, attempt, now);
            }
        }
        Ok(messages)
    }

    /// Reads the records with the given ids, in contiguous runs, off the runtime,
    /// stopping once `max_bytes` of messages were read.
    async fn read_ids(
        &self,
        topic: &Topic,
        mut ids: Vec<u64>,
        max_bytes: usize,
    ) -> Result<Fetched, BusError> {
        ids.sort_unstable();
        ids.dedup();
        // Consumers that keep up ask for what was just written: serve it
        // from memory without a blocking read when every id is cached.
        if let Ok(fetched) = gather(&ids, max_bytes, |from, n, budget| {
            topic.log.read_cached(from, n, budget).ok_or(())
        }) {
            return Ok(fetched);
        }
        let log = Arc::clone(&topic.log);
        tokio::task::spawn_blocking(move || {
            gather(&ids, max_bytes, |from, n, budget| log.read(from, n, budget))
        })
        .await
        .map_err(|_| BusError::Closed)?
    }

    /// Copies exhausted messages to the dead-letter topic, then acks them in `group`.
    async fn dead_letter(
        &self,
        topic: &Topic,
        group: &ConsumerGroup,
        exhausted: Vec<Exhausted>,
        reason: &str,
    ) -> Result<(), BusError> {
        if exhausted.is_empty() {
            return Ok(());
        }
        let result = async {
            let Fetched { records, .. } = self
                .read_ids(topic, exhausted.iter().map(|e| e.id).collect(), usize::MAX)
                .await?;
            let letters = exhausted
                .iter()
                .filter_map(|e| {
                    records
                        .get(&e.id)
                        .map(|r| dead_letter(r, &topic.name, e.attempts, reason))
                })
                .collect();
            let dlq = self.ensure_topic(&dlq_topic(&topic.name)).await?;
            dlq.append(letters).await
        }
        .await;
        let mut state = sync::lock(&group.state);
        match result {
            Ok(_) => {
                for e in &exhausted {
                    state.ack(e.id);
                }
                state.dead_lettered += exhausted.len() as u64;
                tracing::warn!(topic = %topic.name, group = %group.name, count = exhausted.len(), reason, "dead-lettered messages");
                Ok(())
            }
            Err(error) => {
                let not_before = Instant::now() + DEAD_LETTER_RETRY;
                for e in &exhausted {
                    state.retry.insert(
                        e.id,
                        Retry {
                            attempts: e.attempts,
                            not_before,
                        },
                    );
                }
                Err(error)
            }
        }
    }

    /// One round of background work.
    async fn maintain(&self, retention_due: bool) {
        for topic in self.all_topics() {
            for group in topic.groups() {
                if let Err(error) = self.expire(&topic, &group).await {
                    tracing::error!(%error, topic = %topic.name, group = %group.name, "expiring deliveries failed");
                }
            }
        }
        let topics = self.all_topics();
        if let Ok(Err(error)) = tokio::task::spawn_blocking(move || flush_groups(&topics)).await {
            tracing::error!(%error, "writing acks failed; they are retried on the next tick");
        }
        if retention_due {
            self.enforce_retention().await;
        }
    }
}

/// The background task: deadlines and ack fsyncs every tick, retention every 30 s.
/// It holds the broker only weakly, so dropping every handle stops it.
async fn background(inner: Weak<Inner>) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_retention = Instant::now();
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let broker = Broker { inner };
        if broker.check_open().is_err() {
            return;
        }
        let retention_due = last_retention.elapsed() >= RETENTION_EVERY;
        if retention_due {
            last_retention = Instant::now();
        }
        broker.maintain(retention_due).await;
    }
}

/// Records read for a set of ids.
struct Fetched {
    records: HashMap<u64, Record>,
    /// Set when the byte budget ran out: ids from here on were not read.
    unread_from: Option<u64>,
}

/// Reads the records of the sorted, distinct `ids` run by run of consecutive
/// offsets with `read(from, count, byte_budget)`, stopping once `max_bytes`
/// were read.
fn gather<E>(
    ids: &[u64],
    max_bytes: usize,
    mut read: impl FnMut(u64, usize, usize) -> Result<Vec<Record>, E>,
) -> Result<Fetched, E> {
    let mut fetched = Fetched {
        records: HashMap::with_capacity(ids.len()),
        unread_from: None,
    };
    let mut bytes = 0;
    let mut rest = ids;
    while let Some(&start) = rest.first() {
        let run = rest
            .iter()
            .enumerate()
            .take_while(|(i, id)| **id == start + *i as u64)
            .count();
        let mut last = None;
        for record in read(start, run, max_bytes - bytes)? {
            bytes += record.size();
            last = Some(record.offset);
            fetched.records.insert(record.offset, record);
        }
        if bytes >= max_bytes {
            fetched.unread_from = last.map(|offset| offset + 1);
            break;
        }
        rest = &rest[run..];
    }
    Ok(fetched)
}

/// Fsyncs every group's pending acks. Blocking. Returns the first error after trying all.
fn flush_groups(topics: &[Arc<Topic>]) -> Result<(), BusError> {
    let mut first_error = None;
    for topic in topics {
        for group in topic.groups() {
            if let Err(error) = group.flush() {
                first_error.get_or_insert(error);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Refuses ids at or past the topic's end, before anything changes.
fn check_ids(topic: &Topic, ids: &[u64]) -> Result<(), BusError> {
    let end = topic.log.next_offset();
    match ids.iter().find(|id| **id >= end) {
        Some(id) => Err(BusError::UnknownMessage {
            topic: topic.name.clone(),
            id: *id,
        }),
        None => Ok(()),
    }
}

/// A directory name under `topics/`: a valid name, or a valid name's dead-letter topic
/// (which may be longer than a user-chosen name).
fn is_topic_name(name: &str) -> bool {
    names::validate("topic", name).is_ok() || name.strip_suffix(".dlq").is_some_and(is_topic_name)
}
