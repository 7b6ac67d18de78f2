//! Figures about topics and groups, for the admin API, metrics and the autoscaler.

/// A topic's size and its groups' progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicStats {
    /// The topic's name.
    pub topic: String,
    /// Oldest offset still stored.
    pub first_offset: u64,
    /// Offset the next publish gets.
    pub next_offset: u64,
    /// Bytes stored in its segments.
    pub bytes: u64,
    /// One entry per consumer group.
    pub groups: Vec<GroupStats>,
    /// How long its group commits took to fsync.
    pub commits: crate::CommitHistogram,
}

/// A consumer group's progress on one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStats {
    /// The group's name.
    pub group: String,
    /// Messages not yet acknowledged: undelivered plus in flight plus waiting for redelivery.
    /// This is what the autoscaler scales on.
    pub backlog: u64,
    /// `next_offset` minus the lowest unacknowledged offset.
    pub lag: u64,
    /// Deliveries awaiting ack or nack.
    pub in_flight: u64,
    /// Messages moved to the dead-letter topic since the broker started.
    pub dead_lettered: u64,
    /// Redeliveries (deadline, nack, released consumer) since the broker started.
    pub redelivered: u64,
    /// Messages handed to the group's consumers since the broker started,
    /// redeliveries included: its rate is the group's delivery rate.
    pub delivered: u64,
}
