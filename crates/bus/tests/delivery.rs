//! Delivery semantics a consumer sees: competing consumers, groups, deadlines, nacks,
//! dead letters, replay, errors and restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use mortar_bus::dead_letter::{
    HEADER_ATTEMPTS, HEADER_ORIGINAL_ID, HEADER_ORIGINAL_TOPIC, HEADER_REASON,
};
use mortar_bus::{Broker, BrokerConfig, BusError, Delivery, NewMessage};
use support::{config, fetch_now, fetch_patiently, ids, publish_numbered};
use tokio::time::Instant;

async fn broker_with(config: BrokerConfig) -> Broker {
    let broker = Broker::open(config).await.unwrap();
    broker.create_topic("t").await.unwrap();
    broker.subscribe("t", "g").await.unwrap();
    broker
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn competing_consumers_each_get_different_messages() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(config(dir.path())).await;
    publish_numbered(&broker, "t", 20).await;

    let a = fetch_now(&broker, "t", "g", "a", 10).await;
    let b = fetch_now(&broker, "t", "g", "b", 50).await;
    assert_eq!(a.len(), 10);
    assert_eq!(b.len(), 10);
    let a_ids: BTreeSet<u64> = ids(&a).into_iter().collect();
    let b_ids: BTreeSet<u64> = ids(&b).into_iter().collect();
    assert!(a_ids.is_disjoint(&b_ids));
    assert_eq!(a_ids.union(&b_ids).count(), 20);
    assert!(a.iter().chain(&b).all(|m| m.attempt == 1 && m.topic == "t"));

    let more = broker
        .fetch("t", "g", "c", 10, Duration::from_millis(200))
        .await
        .unwrap();
    assert!(
        more.is_empty(),
        "in-flight messages must not go to a third consumer before the deadline"
    );
    let stats = broker.stats();
    let group = &stats.iter().find(|s| s.topic == "t").unwrap().groups[0];
    assert_eq!((group.in_flight, group.backlog, group.lag), (20, 20, 20));

    broker.ack("t", "g", &ids(&a)).await.unwrap();
    broker.ack("t", "g", &ids(&b)).await.unwrap();
    let group = &broker
        .stats()
        .into_iter()
        .find(|s| s.topic == "t")
        .unwrap()
        .groups[0];
    assert_eq!((group.in_flight, group.backlog, group.lag), (0, 0, 0));
}

#[tokio::test]
async fn every_group_sees_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(config(dir.path())).await;
    broker.subscribe("t", "other").await.unwrap();
    publish_numbered(&broker, "t", 5).await;
    let first = fetch_now(&broker, "t", "g", "a", 10).await;
    let second = fetch_now(&broker, "t", "other", "a", 10).await;
    assert_eq!(ids(&first), vec![0, 1, 2, 3, 4]);
    assert_eq!(ids(&second), vec![0, 1, 2, 3, 4]);
    assert_eq!(second[3].payload, Bytes::from("m3"));
}

#[tokio::test]
async fn a_long_poll_returns_when_a_message_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(config(dir.path())).await;
    let waiting = tokio::spawn({
        let broker = broker.clone();
        async move { fetch_patiently(&broker, "t", "g", "a", 10).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    broker
        .publish("t", vec![NewMessage::new("late")])
        .await
        .unwrap();
    let got = waiting.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, Bytes::from("late"));
}

#[tokio::test]
async fn an_unacked_message_is_redelivered_after_the_deadline_with_attempt_two() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(BrokerConfig {
        ack_deadline: Duration::from_millis(300),
        ..config(dir.path())
    })
    .await;
    publish_numbered(&broker, "t", 1).await;
    let first = fetch_now(&broker, "t", "g", "a", 10).await;
    assert_eq!(first[0].attempt, 1);
    let again = fetch_patiently(&broker, "t", "g", "b", 10).await;
    assert_eq!(ids(&again), vec![0]);
    assert_eq!(again[0].attempt, 2);
    assert_eq!(again[0].payload, Bytes::from("m0"));
    let stats = broker.stats();
    let group = &stats.iter().find(|s| s.topic == "t").unwrap().groups[0];
    assert_eq!(group.redelivered, 1);
}

#[tokio::test]
async fn a_nacked_message_waits_for_its_delay() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(config(dir.path())).await;
    publish_numbered(&broker, "t", 1).await;
    fetch_now(&broker, "t", "g", "a", 1).await;
    let delay = Duration::from_secs(2);
    let nacked_at = Instant::now();
    broker
        .nack("t", "g", &[0], Some(delay), "try later")
        .await
        .unwrap();

    let early = broker
        .fetch("t", "g", "a", 1, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(
        early.is_empty(),
        "a message nacked with a 2 s delay was delivered early"
    );
    let later = fetch_patiently(&broker, "t", "g", "a", 1).await;
    assert_eq!(ids(&later), vec![0]);
    assert_eq!(later[0].attempt, 2);
    assert!(nacked_at.elapsed() >= delay);
}

#[tokio::test]
async fn a_nack_without_delay_backs_off_and_a_release_redelivers_now() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(BrokerConfig {
        nack_base_delay: Duration::from_millis(50),
        ..config(dir.path())
    })
    .await;
    publish_numbered(&broker, "t", 2).await;
    fetch_now(&broker, "t", "g", "a", 2).await;
    broker.nack("t", "g", &[0], None, "").await.unwrap();
    let retried = fetch_patiently(&broker, "t", "g", "b", 1).await;
    assert_eq!((retried[0].id, retried[0].attempt), (0, 2));

    broker.release("t", "g", "a").await;
    let released = fetch_now(&broker, "t", "g", "b", 5).await;
    assert_eq!(ids(&released), vec![1]);
    assert_eq!(released[0].attempt, 2);
}

#[tokio::test]
async fn a_message_goes_to_the_dead_letter_topic_after_max_deliveries_and_can_be_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(BrokerConfig {
        max_deliveries: 2,
        ..config(dir.path())
    })
    .await;
    assert_eq!(broker.topics(), vec!["t".to_string(), "t.dlq".to_string()]);
    let batch = vec![NewMessage {
        key: Some("k1".into()),
        headers: vec![("traceparent".into(), "00-1-2-01".into())],
        payload: Bytes::from("poison"),
    }];
    broker.publish("t", batch).await.unwrap();
    for attempt in 1..=2 {
        let got = fetch_now(&broker, "t", "g", "a", 1).await;
        assert_eq!((got[0].id, got[0].attempt), (0, attempt));
        broker
            .nack("t", "g", &[0], Some(Duration::ZERO), "cannot parse")
            .await
            .unwrap();
    }
    assert!(fetch_now(&broker, "t", "g", "a", 1).await.is_empty());

    broker.subscribe("t.dlq", "inspect").await.unwrap();
    let dead = fetch_now(&broker, "t.dlq", "inspect", "a", 10).await;
    assert_eq!(dead.len(), 1);
    let headers = &dead[0].headers;
    assert_eq!(header(headers, HEADER_REASON), Some("cannot parse"));
    assert_eq!(header(headers, HEADER_ATTEMPTS), Some("2"));
    assert_eq!(header(headers, HEADER_ORIGINAL_TOPIC), Some("t"));
    assert_eq!(header(headers, HEADER_ORIGINAL_ID), Some("0"));
    assert_eq!(header(headers, "traceparent"), Some("00-1-2-01"));
    assert_eq!(dead[0].key.as_deref(), Some("k1"));
    assert_eq!(dead[0].payload, Bytes::from("poison"));
    let stats = broker.stats();
    let source = &stats.iter().find(|s| s.topic == "t").unwrap().groups[0];
    assert_eq!((source.dead_lettered, source.backlog), (1, 0));

    assert_eq!(broker.replay_dead_letters("t", 10).await.unwrap(), 1);
    assert_eq!(broker.replay_dead_letters("t", 10).await.unwrap(), 0);
    let replayed = fetch_now(&broker, "t", "g", "a", 10).await;
    assert_eq!(ids(&replayed), vec![1]);
    assert_eq!(replayed[0].attempt, 1);
    assert_eq!(replayed[0].payload, Bytes::from("poison"));
    assert_eq!(
        replayed[0].headers,
        vec![("traceparent".to_string(), "00-1-2-01".to_string())]
    );
}

#[tokio::test]
async fn an_expired_message_out_of_deliveries_is_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(BrokerConfig {
        max_deliveries: 1,
        ack_deadline: Duration::from_millis(100),
        ..config(dir.path())
    })
    .await;
    publish_numbered(&broker, "t", 1).await;
    fetch_now(&broker, "t", "g", "a", 1).await;
    broker.subscribe("t.dlq", "inspect").await.unwrap();
    let dead = fetch_patiently(&broker, "t.dlq", "inspect", "a", 1).await;
    assert_eq!(
        header(&dead[0].headers, HEADER_REASON),
        Some("ack deadline exceeded")
    );
}

#[tokio::test]
async fn bad_names_and_unknown_topics_groups_and_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(config(dir.path())).await;
    let err = broker
        .publish("nope", vec![NewMessage::new("x")])
        .await
        .unwrap_err();
    assert!(
        matches!(err, BusError::UnknownTopic { ref topic } if topic == "nope"),
        "{err}"
    );
    assert!(err.to_string().contains("create it first"));
    assert!(matches!(
        broker.subscribe("nope", "g").await,
        Err(BusError::UnknownTopic { .. })
    ));
    assert!(matches!(
        broker.fetch("t", "missing", "a", 1, Duration::ZERO).await,
        Err(BusError::UnknownGroup { .. })
    ));
    assert!(matches!(
        broker.create_topic("Bad/Name").await,
        Err(BusError::InvalidName { .. })
    ));
    assert!(matches!(
        broker.create_topic("..").await,
        Err(BusError::InvalidName { .. })
    ));
    assert!(matches!(
        broker.subscribe("t", "a b").await,
        Err(BusError::InvalidName { .. })
    ));
    publish_numbered(&broker, "t", 2).await;
    assert!(matches!(
        broker.ack("t", "g", &[0, 7]).await,
        Err(BusError::UnknownMessage { id: 7, .. })
    ));
    let all = fetch_now(&broker, "t", "g", "a", 10).await;
    assert_eq!(ids(&all), vec![0, 1], "a refused ack must ack nothing");
}

#[tokio::test]
async fn an_oversize_message_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(BrokerConfig {
        max_message_bytes: 100,
        ..config(dir.path())
    })
    .await;
    let batch = vec![NewMessage::new("small"), NewMessage::new(vec![0u8; 101])];
    let err = broker.publish("t", batch).await.unwrap_err();
    assert!(
        matches!(
            err,
            BusError::TooLarge {
                size: 101,
                limit: 100
            }
        ),
        "{err}"
    );
    let stats = broker.stats();
    let topic = stats.iter().find(|s| s.topic == "t").unwrap();
    assert_eq!((topic.next_offset, topic.bytes), (0, 0));
    assert_eq!(
        broker
            .publish("t", vec![NewMessage::new("ok")])
            .await
            .unwrap(),
        vec![0]
    );
}

#[tokio::test]
async fn a_restart_keeps_acks_and_redelivers_only_unacked_messages() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(config(dir.path())).await;
    publish_numbered(&broker, "t", 10).await;
    let got = fetch_now(&broker, "t", "g", "a", 10).await;
    assert_eq!(got.len(), 10);
    broker.ack("t", "g", &[0, 1, 2, 3, 4, 7]).await.unwrap();
    broker.close().await;
    assert!(matches!(
        broker.publish("t", vec![NewMessage::new("x")]).await,
        Err(BusError::Closed)
    ));
    drop(broker);

    let broker = Broker::open(config(dir.path())).await.unwrap();
    let again = fetch_now(&broker, "t", "g", "a", 100).await;
    assert_eq!(ids(&again), vec![5, 6, 8, 9]);
    assert_eq!(again[0].payload, Bytes::from("m5"));
    broker.close().await;
}

#[tokio::test]
async fn acks_are_persisted_in_the_background_without_close() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = broker_with(config(dir.path())).await;
        publish_numbered(&broker, "t", 4).await;
        fetch_now(&broker, "t", "g", "a", 4).await;
        broker.ack("t", "g", &[0, 1]).await.unwrap();
        let acks = dir.path().join("groups/t/g.acks");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&acks).unwrap().len() < 3 * 13 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let broker = Broker::open(config(dir.path())).await.unwrap();
    assert_eq!(
        ids(&fetch_now(&broker, "t", "g", "a", 100).await),
        vec![2, 3]
    );
}

#[tokio::test]
async fn retention_removes_old_segments_only_once_every_group_acked_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(BrokerConfig {
        segment_bytes: 512,
        retention_age: None,
        retention_bytes: Some(1024),
        ..config(dir.path())
    })
    .await;
    let payload = vec![7u8; 100];
    for _ in 0..30 {
        broker
            .publish("t", vec![NewMessage::new(payload.clone())])
            .await
            .unwrap();
    }
    broker.enforce_retention().await;
    let topic_stats =
        |broker: &Broker| broker.stats().into_iter().find(|s| s.topic == "t").unwrap();
    assert_eq!(
        topic_stats(&broker).first_offset,
        0,
        "nothing unacked may be removed"
    );

    let all = fetch_now(&broker, "t", "g", "a", 100).await;
    broker.ack("t", "g", &ids(&all)).await.unwrap();
    broker.enforce_retention().await;
    let stats = topic_stats(&broker);
    assert!(
        stats.first_offset > 0,
        "acked old segments were kept: {stats:?}"
    );
    assert!(stats.bytes <= 1024 + 512);
    assert_eq!(stats.next_offset, 30);

    broker.subscribe("t", "late").await.unwrap();
    let late = fetch_now(&broker, "t", "late", "a", 100).await;
    assert_eq!(late.first().map(|m| m.id), Some(stats.first_offset));
    assert_eq!(late.last().map(|m| m.id), Some(29));
    broker.close().await;
    drop(broker);
    let reopened = Broker::open(config(dir.path())).await.unwrap();
    assert_eq!(topic_stats(&reopened).first_offset, stats.first_offset);
}

#[tokio::test]
async fn a_fetch_stops_at_its_byte_budget_and_the_rest_stays_deliverable() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(BrokerConfig {
        segment_bytes: 64 * 1024 * 1024,
        ..config(dir.path())
    })
    .await;
    let big = Bytes::from(vec![1u8; 1024 * 1024]);
    let count = mortar_bus::MAX_FETCH_BYTES / big.len() + 4;
    let batch = (0..count).map(|_| NewMessage::new(big.clone())).collect();
    broker.publish("t", batch).await.unwrap();

    let first = fetch_now(&broker, "t", "g", "a", 1000).await;
    assert_eq!(first.len(), mortar_bus::MAX_FETCH_BYTES / big.len());
    let rest = fetch_now(&broker, "t", "g", "b", 1000).await;
    assert_eq!(
        ids(&rest),
        (first.len() as u64..count as u64).collect::<Vec<_>>()
    );
    assert!(rest.iter().all(|m| m.attempt == 1));
}

#[tokio::test]
async fn every_commit_is_timed_in_the_topic_stats() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(config(dir.path())).await;
    let commits = |broker: &Broker| {
        broker
            .stats()
            .into_iter()
            .find(|s| s.topic == "t")
            .unwrap()
            .commits
    };
    assert_eq!(commits(&broker).count, 0);
    publish_numbered(&broker, "t", 3).await;
    let after = commits(&broker);
    assert_eq!(after.count, broker.fsyncs(), "one timing per group commit");
    assert!(after.count >= 1);
    assert_eq!(
        after.buckets.len(),
        mortar_bus::COMMIT_BUCKETS_SECONDS.len() + 1
    );
    assert_eq!(after.buckets.iter().sum::<u64>(), after.count);
    assert!(after.sum_micros > 0, "an fsync takes time");
}

#[tokio::test]
async fn either_delivery_acknowledges_every_concurrent_publish_once_durable_and_in_order() {
    for delivery in [Delivery::Written, Delivery::Synced] {
        let dir = tempfile::tempdir().unwrap();
        let settings = || BrokerConfig {
            delivery,
            ..config(dir.path())
        };
        let broker = broker_with(settings()).await;
        let publishers: Vec<_> = (0..8)
            .map(|p| {
                let broker = broker.clone();
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for i in 0..25 {
                        let m = NewMessage::new(Bytes::from(format!("p{p}-{i}")));
                        ids.extend(broker.publish("t", vec![m]).await.unwrap());
                    }
                    ids
                })
            })
            .collect();
        let mut acknowledged = BTreeSet::new();
        for publisher in publishers {
            let ids = publisher.await.unwrap();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "{delivery}: {ids:?}");
            acknowledged.extend(ids);
        }
        assert_eq!(acknowledged, (0..200).collect(), "{delivery}");
        assert!(
            broker.fsyncs() >= 1,
            "{delivery}: acknowledged before any fsync"
        );
        // Nothing the publishers were told is durable goes missing on a reopen.
        broker.close().await;
        drop(broker);
        let broker = Broker::open(settings()).await.unwrap();
        let got = fetch_patiently(&broker, "t", "g", "a", 200).await;
        assert_eq!(ids(&got), (0..200).collect::<Vec<_>>(), "{delivery}");
        broker.close().await;
    }
}
