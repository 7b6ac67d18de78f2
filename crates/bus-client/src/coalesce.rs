//! Merging frames that were queued together into fewer frames.
//!
//! Why: under load many tasks publish, ack and return credits at once, and
//! each frame costs the broker a dispatch (and a publish a task and a slot in
//! a group commit). The writer takes everything queued at that moment and
//! merges publishes to the same topic into one `Publish`, and acks and
//! credits of one subscription into one `Ack` and one `Credit`, the way a
//! Kafka producer batches by linger — but without waiting: a lone frame is
//! sent as it is. Any other frame is a barrier nothing is moved across, so
//! e.g. acks still reach the broker before the `Unsubscribe` that follows
//! them.

use std::collections::HashMap;

use mortar_bus_proto::{Frame, NewMessage};

/// Most payload bytes merged into one `Publish`: far below the smallest
/// frame limit (which has a megabyte of overhead allowance alone), so a
/// merged frame can never be refused as too large.
pub(crate) const MAX_MERGED_BYTES: usize = 256 * 1024;

/// Bytes counted per message on top of [`NewMessage`] sizes, for the ids
/// and lengths the wire adds.
const PER_MESSAGE_OVERHEAD: usize = 32;

/// The publishes folded into one merged `Publish`, in frame order: each
/// original request id with how many messages it contributed. The merged
/// frame carries the first one's request id.
pub(crate) type MergedPublish = Vec<(u64, usize)>;

/// Frames to write, and for each merged `Publish` (by its request id) the
/// requests it answers.
#[derive(Debug, Default)]
pub(crate) struct Coalesced {
    /// In the order they must be written.
    pub(crate) frames: Vec<Frame>,
    /// Merged request id → its parts.
    pub(crate) merged: HashMap<u64, MergedPublish>,
}

/// Merges `frames` (in queue order). A publish carrying a message larger
/// than `max_message_bytes` is left alone, as a barrier, so that only it
/// gets the broker's "too large" answer and the order of the rest holds.
pub(crate) fn coalesce(frames: Vec<Frame>, max_message_bytes: usize) -> Coalesced {
    let mut out = Coalesced::default();
    if frames.len() < 2 {
        out.frames = frames;
        return out;
    }
    // Where the frame still open for merging sits in `out.frames`.
    let mut publishes: HashMap<String, (usize, usize)> = HashMap::new();
    let mut acks: HashMap<u64, usize> = HashMap::new();
    let mut credits: HashMap<u64, usize> = HashMap::new();
    for frame in frames {
        match frame {
            Frame::Publish {
                request_id,
                topic,
                messages,
            } if messages.iter().all(|m| m.size() <= max_message_bytes) => {
                let bytes = batch_bytes(&messages);
                let open = publishes
                    .get_mut(&topic)
                    .filter(|(_, total)| *total + bytes <= MAX_MERGED_BYTES);
                match open {
                    Some((index, total)) => {
                        *total += bytes;
                        if let Frame::Publish {
                            request_id: first,
                            messages: merged,
                            ..
                        } = &mut out.frames[*index]
                        {
                            out.merged
                                .entry(*first)
                                .or_insert_with(|| vec![(*first, merged.len())])
                                .push((request_id, messages.len()));
                            merged.extend(messages);
                        }
                    }
                    None => {
                        publishes.insert(topic.clone(), (out.frames.len(), bytes));
                        out.frames.push(Frame::Publish {
                            request_id,
                            topic,
                            messages,
                        });
                    }
                }
            }
            Frame::Ack { sub_id, ids } => match acks.get(&sub_id) {
                Some(&index) => {
                    if let Frame::Ack { ids: merged, .. } = &mut out.frames[index] {
                        merged.extend(ids);
                    }
                }
                None => {
                    acks.insert(sub_id, out.frames.len());
                    out.frames.push(Frame::Ack { sub_id, ids });
                }
            },
            Frame::Credit { sub_id, n } => match credits.get(&sub_id) {
                Some(&index) => {
                    if let Frame::Credit { n: merged, .. } = &mut out.frames[index] {
                        *merged = merged.saturating_add(n);
                    }
                }
                None => {
                    credits.insert(sub_id, out.frames.len());
                    out.frames.push(Frame::Credit { sub_id, n });
                }
            },
            barrier => {
                publishes.clear();
                acks.clear();
                credits.clear();
                out.frames.push(barrier);
            }
        }
    }
    out
}

fn batch_bytes(messages: &[NewMessage]) -> usize {
    messages
        .iter()
        .map(|m| m.size() + PER_MESSAGE_OVERHEAD)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(request_id: u64, topic: &str, payloads: &[&str]) -> Frame {
        Frame::Publish {
            request_id,
            topic: topic.to_owned(),
            messages: payloads
                .iter()
                .map(|p| NewMessage::new(p.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn payloads(frame: &Frame) -> Vec<String> {
        match frame {
            Frame::Publish { messages, .. } => messages
                .iter()
                .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
                .collect(),
            other => panic!("not a publish: {other:?}"),
        }
    }

    #[test]
    fn a_lone_frame_is_sent_as_it_is() {
        let out = coalesce(vec![publish(1, "a", &["x"])], 1024);
        assert_eq!(out.frames, vec![publish(1, "a", &["x"])]);
        assert!(out.merged.is_empty());
    }

    #[test]
    fn publishes_to_one_topic_merge_in_order_and_remember_their_parts() {
        let out = coalesce(
            vec![
                publish(1, "a", &["1", "2"]),
                publish(2, "b", &["b1"]),
                publish(3, "a", &["3"]),
            ],
            1024,
        );
        assert_eq!(out.frames.len(), 2);
        assert_eq!(payloads(&out.frames[0]), ["1", "2", "3"]);
        assert_eq!(payloads(&out.frames[1]), ["b1"]);
        assert_eq!(out.merged[&1], vec![(1, 2), (3, 1)]);
        assert!(!out.merged.contains_key(&2));
    }

    #[test]
    fn an_oversized_message_is_never_merged_and_nothing_moves_past_it() {
        let big = "x".repeat(2000);
        let out = coalesce(
            vec![
                publish(1, "a", &["ok"]),
                publish(2, "a", &[big.as_str()]),
                publish(3, "a", &["ok too"]),
            ],
            1024,
        );
        assert_eq!(out.frames.len(), 3);
        assert_eq!(payloads(&out.frames[0]), ["ok"]);
        assert_eq!(payloads(&out.frames[1]), [big]);
        assert_eq!(payloads(&out.frames[2]), ["ok too"]);
    }

    #[test]
    fn merged_publishes_stay_under_the_byte_cap() {
        let chunk = "y".repeat(100 * 1024);
        let frames = (1..=5)
            .map(|id| publish(id, "a", &[chunk.as_str()]))
            .collect();
        let out = coalesce(frames, 1024 * 1024);
        assert_eq!(out.frames.len(), 3, "2 + 2 + 1 chunks of 100 KiB");
        assert!(
            out.frames
                .iter()
                .all(|f| payloads(f).len() * chunk.len() <= MAX_MERGED_BYTES)
        );
    }

    #[test]
    fn acks_and_credits_merge_per_subscription_but_not_across_a_barrier() {
        let out = coalesce(
            vec![
                Frame::Ack {
                    sub_id: 1,
                    ids: vec![10],
                },
                Frame::Credit { sub_id: 1, n: 1 },
                Frame::Ack {
                    sub_id: 2,
                    ids: vec![20],
                },
                Frame::Ack {
                    sub_id: 1,
                    ids: vec![11],
                },
                Frame::Credit { sub_id: 1, n: 1 },
                Frame::Unsubscribe { sub_id: 1 },
                Frame::Ack {
                    sub_id: 1,
                    ids: vec![12],
                },
            ],
            1024,
        );
        assert_eq!(
            out.frames,
            vec![
                Frame::Ack {
                    sub_id: 1,
                    ids: vec![10, 11],
                },
                Frame::Credit { sub_id: 1, n: 2 },
                Frame::Ack {
                    sub_id: 2,
                    ids: vec![20],
                },
                Frame::Unsubscribe { sub_id: 1 },
                Frame::Ack {
                    sub_id: 1,
                    ids: vec![12],
                },
            ]
        );
    }
}
