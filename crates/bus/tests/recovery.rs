//! Crash and corruption: what a reopened broker serves after damage or an abrupt stop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mortar_bus::{Broker, NewMessage};
use support::{config, fetch_now, ids, publish_numbered};

fn last_segment(dir: &Path, topic: &str) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("topics").join(topic))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files.pop().unwrap()
}

/// Where the records of a segment end: a segment file may carry a preallocated tail
/// of zeros after them, and a record never ends in a zero byte in these tests (the
/// payloads end in a digit).
fn data_end(segment: &Path) -> u64 {
    let bytes = std::fs::read(segment).unwrap();
    bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

async fn reopen_and_check(dir: &Path, expected: u64) {
    let broker = Broker::open(config(dir)).await.unwrap();
    broker.subscribe("t", "g").await.unwrap();
    let got = fetch_now(&broker, "t", "g", "c", 1000).await;
    assert_eq!(
        ids(&got),
        (0..expected).collect::<Vec<_>>(),
        "must serve everything before the damage and nothing after"
    );
    for m in &got {
        assert_eq!(m.payload, Bytes::from(format!("m{}", m.id)));
    }
    let next = broker
        .publish("t", vec![NewMessage::new("after")])
        .await
        .unwrap();
    assert_eq!(
        next,
        vec![expected],
        "publishing continues at the first lost offset"
    );
    let after = fetch_now(&broker, "t", "g", "c", 10).await;
    assert_eq!(ids(&after), vec![expected]);
    broker.close().await;
}

#[tokio::test]
async fn a_record_cut_short_is_truncated_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).await.unwrap();
    broker.create_topic("t").await.unwrap();
    publish_numbered(&broker, "t", 40).await;
    broker.close().await;
    drop(broker);

    let segment = last_segment(dir.path(), "t");
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    file.set_len(data_end(&segment) - 3).unwrap();

    reopen_and_check(dir.path(), 39).await;
}

#[tokio::test]
async fn a_flipped_byte_in_the_last_record_is_truncated_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).await.unwrap();
    broker.create_topic("t").await.unwrap();
    publish_numbered(&broker, "t", 40).await;
    broker.close().await;
    drop(broker);

    let segment = last_segment(dir.path(), "t");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment)
        .unwrap();
    let len = data_end(&segment);
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, len - 2).unwrap();
    file.write_all_at(&[byte[0] ^ 0x01], len - 2).unwrap();

    reopen_and_check(dir.path(), 39).await;
}

#[tokio::test]
async fn garbage_appended_after_the_last_record_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).await.unwrap();
    broker.create_topic("t").await.unwrap();
    publish_numbered(&broker, "t", 5).await;
    broker.close().await;
    drop(broker);

    let segment = last_segment(dir.path(), "t");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment)
        .unwrap();
    file.write_all_at(&[0xAB; 100], data_end(&segment)).unwrap();

    reopen_and_check(dir.path(), 5).await;
}

/// Publishes one message at a time until the topic appends into a preallocated
/// segment (a file longer than its records); returns how many were published.
async fn publish_into_a_preallocated_segment(broker: &Broker, dir: &Path) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    for n in 0.. {
        let ids = broker
            .publish("t", vec![NewMessage::new(Bytes::from(format!("m{n}")))])
            .await
            .unwrap();
        assert_eq!(ids, vec![n]);
        let segment = last_segment(dir, "t");
        if file_len(&segment) > data_end(&segment) && data_end(&segment) > 0 {
            return n + 1;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no preallocated segment was ever used"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    unreachable!()
}

#[tokio::test]
async fn a_clean_zero_tail_loses_nothing_and_appends_continue_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).await.unwrap();
    broker.create_topic("t").await.unwrap();
    let published = publish_into_a_preallocated_segment(&broker, dir.path()).await;
    broker.close().await;
    drop(broker);

    let segment = last_segment(dir.path(), "t");
    let preallocated = file_len(&segment);
    let end = data_end(&segment);
    assert!(end < preallocated);

    reopen_and_check(dir.path(), published).await;
    assert_eq!(
        file_len(&segment),
        preallocated,
        "a zero tail is not damage: the preallocation is kept"
    );
    assert!(
        data_end(&segment) > end,
        "the next record was written right after the last one, into the zeros"
    );
    assert!(
        !std::fs::read_dir(dir.path().join("topics").join("t"))
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".filling")),
        "no half-filled file is left behind"
    );
}

#[tokio::test]
async fn a_torn_record_followed_by_zeros_is_cut_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).await.unwrap();
    broker.create_topic("t").await.unwrap();
    let published = publish_into_a_preallocated_segment(&broker, dir.path()).await;
    broker.close().await;
    drop(broker);

    // The last record's final bytes never reached the disk: zeros instead.
    let segment = last_segment(dir.path(), "t");
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    file.write_all_at(&[0; 2], data_end(&segment) - 2).unwrap();

    reopen_and_check(dir.path(), published - 1).await;
}

#[tokio::test]
async fn leftover_preallocation_files_are_never_read_as_segments() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).await.unwrap();
    broker.create_topic("t").await.unwrap();
    publish_numbered(&broker, "t", 5).await;
    broker.close().await;
    drop(broker);

    // A crash while the next segment was being filled, and one after it was
    // renamed into place but before anything was written to it.
    let topic_dir = dir.path().join("topics").join("t");
    std::fs::write(topic_dir.join("next.prealloc.filling"), [0xAB; 64]).unwrap();
    std::fs::write(topic_dir.join("next.prealloc"), [0xCD; 100]).unwrap();
    let unused = topic_dir.join("00000000000000000005.log");
    if !unused.exists() {
        std::fs::write(&unused, vec![0u8; 4096]).unwrap();
    }

    reopen_and_check(dir.path(), 5).await;
    assert!(!topic_dir.join("next.prealloc.filling").exists());
}

/// Dropping the runtime kills every task mid-flight, like a crash of the process
/// without close(): every publish that returned Ok must be readable after reopening.
#[test]
fn every_acknowledged_publish_survives_an_abrupt_stop() {
    let dir = tempfile::tempdir().unwrap();
    let acknowledged: Arc<Mutex<Vec<(u64, Bytes)>>> = Arc::default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let broker = Broker::open(config(dir.path())).await.unwrap();
        broker.create_topic("t").await.unwrap();
        for publisher in 0..8 {
            let broker = broker.clone();
            let acknowledged = Arc::clone(&acknowledged);
            tokio::spawn(async move {
                for n in 0.. {
                    let payload = Bytes::from(format!("p{publisher}-{n}"));
                    let batch = vec![
                        NewMessage::new(payload.clone()),
                        NewMessage::new(payload.clone()),
                    ];
                    // Once the runtime shuts down the broker answers "closed"
                    // at once; stop then, or this loop would never yield and
                    // the runtime could not finish shutting down.
                    let Ok(ids) = broker.publish("t", batch).await else {
                        break;
                    };
                    let mut acknowledged = acknowledged.lock().unwrap();
                    acknowledged.extend(ids.into_iter().map(|id| (id, payload.clone())));
                }
            });
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while acknowledged.lock().unwrap().len() < 400 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    drop(runtime);
    // Dropping the runtime drops the broker, but its writer thread finishes
    // the batch it holds (and may roll a segment) before it sees that; the
    // reopened broker must not race it. (What a kill -9 would not need.)
    wait_for_writer_threads_to_exit("bus-writer-t");

    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 400,
        "publishers made too little progress"
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let broker = Broker::open(config(dir.path())).await.unwrap();
        broker.subscribe("t", "g").await.unwrap();
        let mut stored = std::collections::HashMap::new();
        loop {
            let batch = fetch_now(&broker, "t", "g", "c", 500).await;
            if batch.is_empty() {
                break;
            }
            for m in batch {
                stored.insert(m.id, m.payload);
            }
        }
        for (id, payload) in &acknowledged {
            assert_eq!(
                stored.get(id),
                Some(payload),
                "acknowledged publish {id} is missing"
            );
        }
        let next = broker
            .publish("t", vec![NewMessage::new("x")])
            .await
            .unwrap()[0];
        assert_eq!(next as usize, stored.len(), "ids stay dense after recovery");
        broker.close().await;
    });
}

#[tokio::test]
async fn an_offset_lost_to_damage_and_reused_is_delivered_even_if_the_old_one_was_acked() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).await.unwrap();
    broker.create_topic("t").await.unwrap();
    broker.subscribe("t", "g").await.unwrap();
    publish_numbered(&broker, "t", 5).await;
    let all = fetch_now(&broker, "t", "g", "c", 10).await;
    broker.ack("t", "g", &ids(&all)).await.unwrap();
    broker.close().await;
    drop(broker);

    let segment = last_segment(dir.path(), "t");
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    file.set_len(data_end(&segment) - 1).unwrap();

    let broker = Broker::open(config(dir.path())).await.unwrap();
    assert!(fetch_now(&broker, "t", "g", "c", 10).await.is_empty());
    assert_eq!(
        broker
            .publish("t", vec![NewMessage::new("new")])
            .await
            .unwrap(),
        vec![4]
    );
    let got = fetch_now(&broker, "t", "g", "c", 10).await;
    assert_eq!(ids(&got), vec![4]);
    assert_eq!(got[0].payload, Bytes::from("new"));
    broker.close().await;
}

/// Waits until no thread of this process is named `name` (Linux; elsewhere
/// returns at once).
fn wait_for_writer_threads_to_exit(name: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let alive = std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks.flatten().any(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim_end() == name)
                })
            })
            .unwrap_or(false);
        if !alive {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the writer thread {name} did not exit"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
