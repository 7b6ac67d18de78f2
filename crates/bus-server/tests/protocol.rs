//! The TCP protocol end to end: a real server on 127.0.0.1:0, the real
//! client, and raw sockets for what a well-behaved client never sends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use mortar_bus_client::{Client, ClientError, ErrorCode, NewMessage, Published};
use mortar_bus_proto::{BusCodec, Frame, Hello};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Encoder, Framed};

fn authority(url: &str) -> &str {
    url.trim_start_matches("mortar://")
}

async fn raw(url: &str) -> Framed<TcpStream, BusCodec> {
    let stream = TcpStream::connect(authority(url)).await.unwrap();
    let mut framed = Framed::new(stream, BusCodec::new(1 << 20));
    framed
        .send(Frame::Hello(Hello::new("raw", "")))
        .await
        .unwrap();
    match framed.next().await.unwrap().unwrap() {
        Frame::HelloOk { version: 1, .. } => {}
        other => panic!("expected HelloOk, got {other:?}"),
    }
    framed
}

/// Reads frames until the server closes; returns them.
async fn read_to_close(framed: &mut Framed<TcpStream, BusCodec>) -> Vec<Frame> {
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, framed.next()).await {
            Ok(Some(Ok(f))) => frames.push(f),
            Ok(_) => return frames,
            Err(_) => panic!("the server did not close the connection; got {frames:?}"),
        }
    }
}

#[tokio::test]
async fn published_messages_reach_a_subscriber_and_are_acked() {
    let dir = tempfile::tempdir().unwrap();
    let (url, bus) = common::start(dir.path(), 1 << 20, &["orders"]).await;
    let client = Client::connect(&url, "test", "").await.unwrap();

    let ids = client
        .publish_batch(
            "orders",
            (0..50)
                .map(|n| NewMessage::new(format!("order {n}")).with_key("k"))
                .collect(),
        )
        .await
        .unwrap();
    let Published::Durable(ids) = ids else {
        panic!("expected durable")
    };
    assert_eq!(ids.len(), 50);
    client
        .publish_json("orders", Some("k"), &serde_json::json!({"n": 50}))
        .await
        .unwrap();

    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let sub = client
        .subscribe("orders", "billing", 4, move |m| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(m);
                Ok::<(), String>(())
            }
        })
        .await
        .unwrap();
    common::wait_until("51 deliveries", || seen.lock().unwrap().len() >= 51).await;
    let seen = seen.lock().unwrap().clone();
    let payloads: BTreeSet<_> = seen.iter().map(|m| m.payload.clone()).collect();
    assert!(payloads.contains(&bytes::Bytes::from("order 0")));
    let json = seen.iter().find(|m| m.payload.starts_with(b"{")).unwrap();
    assert_eq!(json.header("content-type"), Some("application/json"));
    assert_eq!(json.topic, "orders");
    assert_eq!(json.key.as_deref(), Some("k"));

    // Everything is acked: the group's backlog drains to zero.
    let broker = bus.broker().clone();
    common::wait_until("backlog 0", || {
        broker.stats().iter().any(|t| {
            t.topic == "orders"
                && t.groups
                    .iter()
                    .any(|g| g.group == "billing" && g.backlog == 0)
        })
    })
    .await;
    sub.stop().await;
    bus.shutdown().await;
}

#[tokio::test]
async fn a_failing_handler_gets_the_message_again() {
    let dir = tempfile::tempdir().unwrap();
    let (url, bus) = common::start(dir.path(), 1 << 20, &["jobs"]).await;
    let client = Client::connect(&url, "test", "").await.unwrap();
    client
        .publish("jobs", NewMessage::new("flaky"))
        .await
        .unwrap();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let sink = attempts.clone();
    let _sub = client
        .subscribe("jobs", "workers", 1, move |m| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(m.attempt);
                if m.attempt < 2 {
                    Err("not yet")
                } else {
                    Ok(())
                }
            }
        })
        .await
        .unwrap();
    common::wait_until("a second attempt", || attempts.lock().unwrap().len() >= 2).await;
    assert_eq!(attempts.lock().unwrap()[..2], [1, 2]);
    bus.shutdown().await;
}

#[tokio::test]
async fn many_pipelined_publishes_all_get_distinct_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (url, bus) = common::start(dir.path(), 1 << 20, &["events"]).await;
    let client = Client::connect(&url, "test", "").await.unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .publish("events", NewMessage::new(format!("e{n}")))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for t in tasks {
        let Published::Durable(got) = t.await.unwrap() else {
            panic!("expected durable")
        };
        ids.extend(got);
    }
    assert_eq!(ids.len(), 200);
    bus.shutdown().await;
}

#[tokio::test]
async fn unknown_topic_and_oversize_message_are_refused_and_the_connection_lives() {
    let dir = tempfile::tempdir().unwrap();
    let (url, bus) = common::start(dir.path(), 1024, &["small"]).await;
    let client = Client::connect(&url, "test", "").await.unwrap();

    let err = client
        .publish("nope", NewMessage::new("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Broker {
                code: ErrorCode::UnknownTopic,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("nope"), "{err}");

    let err = client
        .publish("small", NewMessage::new(vec![7u8; 2000]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Broker {
                code: ErrorCode::MessageTooLarge,
                ..
            }
        ),
        "{err}"
    );

    // Same connection, still fine; nothing of the refused batch was stored.
    client
        .publish("small", NewMessage::new("ok"))
        .await
        .unwrap();
    let stats = bus.broker().stats();
    let small = stats.iter().find(|t| t.topic == "small").unwrap();
    assert_eq!(small.next_offset - small.first_offset, 1);

    let err = client
        .subscribe("nope", "g", 1, |_m| async { Ok::<(), String>(()) })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Broker {
                code: ErrorCode::UnknownTopic,
                ..
            }
        ),
        "{err}"
    );
    bus.shutdown().await;
}

#[tokio::test]
async fn a_malformed_frame_closes_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (url, bus) = common::start(dir.path(), 1 << 20, &["t"]).await;
    let good = Client::connect(&url, "good", "").await.unwrap();
    let mut bad = raw(&url).await;

    // A frame of unknown type 0x7f.
    bad.get_mut()
        .write_all(&[0, 0, 0, 3, 0x7f, 1, 2])
        .await
        .unwrap();
    let frames = read_to_close(&mut bad).await;
    assert!(
        matches!(&frames[..], [Frame::Error { request_id: 0, code: ErrorCode::MalformedFrame, message }] if message.contains("0x7f")),
        "{frames:?}"
    );

    // The other connection keeps working.
    let published = good
        .publish("t", NewMessage::new("still here"))
        .await
        .unwrap();
    assert!(matches!(published, Published::Durable(_)));
    bus.shutdown().await;
}

#[tokio::test]
async fn an_oversize_frame_gets_an_error_then_close() {
    let dir = tempfile::tempdir().unwrap();
    let (url, bus) = common::start(dir.path(), 1024, &["t"]).await;
    let mut bad = raw(&url).await;
    let max = mortar_bus_proto::max_frame_bytes(1024);
    let announced = (max + 1) as u32;
    let mut header = announced.to_be_bytes().to_vec();
    header.push(0x10);
    bad.get_mut().write_all(&header).await.unwrap();
    let frames = read_to_close(&mut bad).await;
    assert!(
        matches!(
            &frames[..],
            [Frame::Error {
                code: ErrorCode::FrameTooLarge,
                ..
            }]
        ),
        "{frames:?}"
    );
    bus.shutdown().await;
}

#[tokio::test]
async fn a_bad_handshake_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (url, bus) = common::start(dir.path(), 1024, &[]).await;

    for (hello, code) in [
        (
            Hello {
                magic: *b"HTTP",
                ..Hello::new("x", "")
            },
            ErrorCode::BadHandshake,
        ),
        (
            Hello {
                version: 99,
                ..Hello::new("x", "")
            },
            ErrorCode::UnsupportedVersion,
        ),
    ] {
        let mut stream = TcpStream::connect(authority(&url)).await.unwrap();
        let mut buf = BytesMut::new();
        BusCodec::new(1 << 16)
            .encode(Frame::Hello(hello), &mut buf)
            .unwrap();
        stream.write_all(&buf).await.unwrap();
        let mut framed = Framed::new(stream, BusCodec::new(1 << 16));
        let frames = read_to_close(&mut framed).await;
        assert!(
            matches!(&frames[..], [Frame::Error { code: c, .. }] if *c == code),
            "{frames:?}"
        );
    }

    // A frame other than Hello first.
    let mut stream = TcpStream::connect(authority(&url)).await.unwrap();
    let mut buf = BytesMut::new();
    BusCodec::new(1 << 16)
        .encode(Frame::Ping { nonce: 1 }, &mut buf)
        .unwrap();
    stream.write_all(&buf).await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(!rest.is_empty(), "an error frame comes before the close");
    bus.shutdown().await;
}

#[tokio::test]
async fn credits_bound_unacked_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let (url, bus) = common::start(dir.path(), 1 << 20, &["q"]).await;
    let client = Client::connect(&url, "test", "").await.unwrap();
    client
        .publish_batch(
            "q",
            (0..20).map(|n| NewMessage::new(format!("{n}"))).collect(),
        )
        .await
        .unwrap();
    let mut framed = raw(&url).await;
    framed
        .send(Frame::Subscribe {
            sub_id: 9,
            topic: "q".into(),
            group: "g".into(),
            credits: 3,
        })
        .await
        .unwrap();
    let mut delivered = Vec::new();
    while delivered.len() < 3 {
        match framed.next().await.unwrap().unwrap() {
            Frame::SubscribeOk { sub_id: 9 } => {}
            Frame::Deliver {
                sub_id: 9,
                messages,
            } => delivered.extend(messages),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(delivered.len(), 3, "no more than the credits");
    // Without more credit nothing else arrives; a ping proves the stream is idle.
    framed.send(Frame::Ping { nonce: 5 }).await.unwrap();
    match framed.next().await.unwrap().unwrap() {
        Frame::Pong { nonce: 5 } => {}
        other => panic!("expected only a pong, got {other:?}"),
    }
    let ids: Vec<u64> = delivered.iter().map(|m| m.id).collect();
    framed.send(Frame::Ack { sub_id: 9, ids }).await.unwrap();
    framed
        .send(Frame::Credit { sub_id: 9, n: 2 })
        .await
        .unwrap();
    let mut more = Vec::new();
    while more.len() < 2 {
        match framed.next().await.unwrap().unwrap() {
            Frame::Deliver { messages, .. } => more.extend(messages),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(more.len(), 2);
    bus.shutdown().await;
}

#[tokio::test]
async fn the_client_reconnects_and_resubscribes_after_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (url, bus) = common::start(dir.path(), 1 << 20, &["t"]).await;
    let client = Client::connect(&url, "test", "").await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let _sub = client
        .subscribe("t", "g", 2, move |m| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(m.payload);
                Ok::<(), String>(())
            }
        })
        .await
        .unwrap();
    client
        .publish("t", NewMessage::new("before"))
        .await
        .unwrap();
    common::wait_until("the first delivery", || seen.lock().unwrap().len() == 1).await;

    let addr = bus.addr();
    bus.shutdown().await;
    common::wait_until("the client to notice", || !client.is_connected()).await;
    let (_, bus) = mortar_bus_server::run_embedded(common::config(dir.path(), 1 << 20), addr)
        .await
        .unwrap();

    let published = client.publish("t", NewMessage::new("after")).await.unwrap();
    assert!(matches!(published, Published::Durable(_)));
    common::wait_until("the delivery after the restart", || {
        seen.lock().unwrap().iter().any(|p| p.as_ref() == b"after")
    })
    .await;
    bus.shutdown().await;
}

#[tokio::test]
async fn messages_of_a_dropped_connection_go_to_another_member_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // An ack deadline far beyond the test's patience: only `release` can
    // hand the messages over in time.
    let config = mortar_bus::BrokerConfig {
        ack_deadline: Duration::from_secs(3600),
        ..common::config(dir.path(), 1 << 20)
    };
    let (bound, bus) = mortar_bus_server::run_embedded(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    bus.broker().create_topic("work").await.unwrap();
    let url = format!("mortar://{bound}");
    let client = Client::connect(&url, "test", "").await.unwrap();
    client
        .publish_batch(
            "work",
            (0..5).map(|n| NewMessage::new(format!("{n}"))).collect(),
        )
        .await
        .unwrap();

    let mut quitter = raw(&url).await;
    quitter
        .send(Frame::Subscribe {
            sub_id: 1,
            topic: "work".into(),
            group: "g".into(),
            credits: 5,
        })
        .await
        .unwrap();
    let mut taken = 0;
    while taken < 5 {
        if let Frame::Deliver { messages, .. } = quitter.next().await.unwrap().unwrap() {
            taken += messages.len();
        }
    }
    drop(quitter); // gone without acking

    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let sink = seen.clone();
    let _sub = client
        .subscribe("work", "g", 5, move |m| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().insert(m.id);
                Ok::<(), String>(())
            }
        })
        .await
        .unwrap();
    common::wait_until("the released messages", || seen.lock().unwrap().len() == 5).await;
    bus.shutdown().await;
}

#[tokio::test]
async fn unsubscribing_hands_unacked_messages_to_another_member_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // An ack deadline far beyond the test's patience: only `release` can
    // hand the messages over in time.
    let config = mortar_bus::BrokerConfig {
        ack_deadline: Duration::from_secs(3600),
        ..common::config(dir.path(), 1 << 20)
    };
    let (bound, bus) = mortar_bus_server::run_embedded(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    bus.broker().create_topic("work").await.unwrap();
    let url = format!("mortar://{bound}");
    let client = Client::connect(&url, "test", "").await.unwrap();
    client
        .publish_batch(
            "work",
            (0..5).map(|n| NewMessage::new(format!("{n}"))).collect(),
        )
        .await
        .unwrap();

    let mut quitter = raw(&url).await;
    quitter
        .send(Frame::Subscribe {
            sub_id: 1,
            topic: "work".into(),
            group: "g".into(),
            credits: 5,
        })
        .await
        .unwrap();
    let mut taken = 0;
    while taken < 5 {
        if let Frame::Deliver { messages, .. } = quitter.next().await.unwrap().unwrap() {
            taken += messages.len();
        }
    }
    quitter
        .send(Frame::Unsubscribe { sub_id: 1 })
        .await
        .unwrap();
    // Still connected; a ping round trip proves the unsubscribe was handled.
    quitter.send(Frame::Ping { nonce: 2 }).await.unwrap();
    loop {
        match quitter.next().await.unwrap().unwrap() {
            Frame::Pong { nonce: 2 } => break,
            Frame::Deliver { .. } => panic!("a delivery after Unsubscribe"),
            _ => {}
        }
    }

    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let sink = seen.clone();
    let _sub = client
        .subscribe("work", "g", 5, move |m| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().insert(m.id);
                Ok::<(), String>(())
            }
        })
        .await
        .unwrap();
    common::wait_until("the released messages", || seen.lock().unwrap().len() == 5).await;
    bus.shutdown().await;
}

#[tokio::test]
async fn a_drained_subscription_gets_nothing_after_drained_and_gives_nothing_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = mortar_bus::BrokerConfig {
        ack_deadline: Duration::from_secs(3600),
        ..common::config(dir.path(), 1 << 20)
    };
    let (bound, bus) = mortar_bus_server::run_embedded(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    bus.broker().create_topic("work").await.unwrap();
    let url = format!("mortar://{bound}");
    let client = Client::connect(&url, "test", "").await.unwrap();
    client
        .publish_batch(
            "work",
            (0..10).map(|n| NewMessage::new(format!("{n}"))).collect(),
        )
        .await
        .unwrap();

    let mut drainer = raw(&url).await;
    drainer
        .send(Frame::Subscribe {
            sub_id: 1,
            topic: "work".into(),
            group: "g".into(),
            credits: 4,
        })
        .await
        .unwrap();
    let mut held = Vec::new();
    while held.len() < 4 {
        if let Frame::Deliver { messages, .. } = drainer.next().await.unwrap().unwrap() {
            held.extend(messages.into_iter().map(|m| m.id));
        }
    }
    drainer.send(Frame::Drain { sub_id: 1 }).await.unwrap();
    // Credits after Drain are ignored.
    drainer
        .send(Frame::Credit { sub_id: 1, n: 10 })
        .await
        .unwrap();
    loop {
        match drainer.next().await.unwrap().unwrap() {
            Frame::Drained { sub_id: 1 } => break,
            Frame::Deliver { messages, .. } => held.extend(messages.into_iter().map(|m| m.id)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(held.len(), 4, "only what the first credits allowed");
    // Acks still work after Drained; then nothing is left to give back.
    drainer
        .send(Frame::Ack {
            sub_id: 1,
            ids: held.clone(),
        })
        .await
        .unwrap();
    drainer
        .send(Frame::Unsubscribe { sub_id: 1 })
        .await
        .unwrap();
    drainer.send(Frame::Ping { nonce: 7 }).await.unwrap();
    match drainer.next().await.unwrap().unwrap() {
        Frame::Pong { nonce: 7 } => {}
        Frame::Deliver { .. } => panic!("a delivery after Drained"),
        other => panic!("unexpected {other:?}"),
    }
    let stats = bus.broker().stats();
    let group = &stats.iter().find(|t| t.topic == "work").unwrap().groups[0];
    assert_eq!(
        (group.backlog, group.in_flight, group.redelivered),
        (6, 0, 0)
    );
    bus.shutdown().await;
}

#[tokio::test]
async fn stopping_a_busy_subscription_finishes_and_acks_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let config = mortar_bus::BrokerConfig {
        ack_deadline: Duration::from_secs(3600),
        ..common::config(dir.path(), 1 << 20)
    };
    let (bound, bus) = mortar_bus_server::run_embedded(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    bus.broker().create_topic("work").await.unwrap();
    let url = format!("mortar://{bound}");
    let client = Client::connect(&url, "test", "").await.unwrap();
    client
        .publish_batch(
            "work",
            (0..40).map(|n| NewMessage::new(format!("{n}"))).collect(),
        )
        .await
        .unwrap();
    let handled = Arc::new(Mutex::new(Vec::new()));
    let sink = handled.clone();
    let sub = client
        .subscribe("work", "g", 8, move |m| {
            let sink = sink.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                sink.lock().unwrap().push(m.id);
                Ok::<(), String>(())
            }
        })
        .await
        .unwrap();
    common::wait_until("some handled", || handled.lock().unwrap().len() >= 3).await;
    sub.stop().await;
    let done = handled.lock().unwrap().len() as u64;
    assert!(
        done >= 8,
        "what was delivered was handled, not dropped: {done}"
    );
    // `stop` returns once the broker has applied the acks and the
    // unsubscribe (the process may exit right after): nothing in flight,
    // nothing given back.
    let stats = bus.broker().stats();
    let group = &stats.iter().find(|t| t.topic == "work").unwrap().groups[0];
    assert_eq!(group.in_flight, 0, "everything delivered was settled");
    assert_eq!(group.redelivered, 0, "stopping gave nothing back");
    assert_eq!(group.backlog, 40 - done);
    bus.shutdown().await;
}

#[tokio::test]
async fn a_batch_too_large_for_one_frame_is_refused_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    let (url, bus) = common::start(dir.path(), 1024, &["t"]).await;
    let client = Client::connect(&url, "test", "").await.unwrap();
    let max = mortar_bus_proto::max_frame_bytes(1024);
    let batch: Vec<_> = (0..(max / 1000 + 2))
        .map(|_| NewMessage::new(vec![0u8; 1000]))
        .collect();
    let err = client.publish_batch("t", batch).await.unwrap_err();
    assert!(matches!(err, ClientError::BatchTooLarge { .. }), "{err}");
    // The connection was never at risk.
    client.publish("t", NewMessage::new("fine")).await.unwrap();
    bus.shutdown().await;
}

/// A "broker" that completes the handshake and then never answers again,
/// like a host that froze or a cable that was pulled: the client must give
/// up on the connection, not wait forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_goes_silent_is_dropped_and_the_publish_fails_clearly() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("mortar://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            let mut framed = Framed::new(stream, BusCodec::new(1 << 20));
            if let Some(Ok(Frame::Hello(_))) = framed.next().await {
                let _ = framed
                    .send(Frame::HelloOk {
                        version: 1,
                        max_message_bytes: 1024,
                    })
                    .await;
            }
            // Keep the socket open, read nothing, answer nothing.
            held.push(framed);
        }
    });
    let mut config = mortar_bus_client::ClientConfig::new(&url, "silent", "");
    config.publish_timeout = Duration::from_secs(1);
    let client = Client::connect_with(config).await.unwrap();
    let outcome = tokio::time::timeout(
        Duration::from_secs(120),
        client.publish("orders", NewMessage::new("x")),
    )
    .await
    .expect("the publish must not hang on a silent broker");
    match outcome {
        Err(ClientError::Unavailable { url: named, .. }) => assert_eq!(named, url),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// A "broker" that delivers 300 messages in three `Deliver` frames to a
/// subscription with 100 credits and records what the client sends back:
/// every message must be acked exactly once and earn back exactly one
/// credit, and a busy subscription settles in batches — far fewer `Ack`
/// frames than messages (each costs the broker a read and a lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_subscription_settles_in_batches_with_one_credit_per_message() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("mortar://{}", listener.local_addr().unwrap());
    let (report_tx, report_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut framed = Framed::new(stream, BusCodec::new(1 << 20));
        let Some(Ok(Frame::Hello(_))) = framed.next().await else {
            panic!("no Hello")
        };
        framed
            .send(Frame::HelloOk {
                version: 1,
                max_message_bytes: 1 << 20,
            })
            .await
            .unwrap();
        let sub_id = loop {
            match framed.next().await.unwrap().unwrap() {
                Frame::Subscribe {
                    sub_id, credits, ..
                } => {
                    assert_eq!(credits, 100);
                    break sub_id;
                }
                Frame::Ping { nonce } => framed.send(Frame::Pong { nonce }).await.unwrap(),
                other => panic!("expected Subscribe, got {other:?}"),
            }
        };
        framed.send(Frame::SubscribeOk { sub_id }).await.unwrap();
        let (mut acked, mut ack_frames, mut credits) = (Vec::new(), 0, 0u32);
        for frame in 0..3u64 {
            let messages = (0..100)
                .map(|i| mortar_bus_proto::Message {
                    id: frame * 100 + i,
                    topic: "t".into(),
                    payload: bytes::Bytes::from_static(b"m"),
                    attempt: 1,
                    ..Default::default()
                })
                .collect();
            framed
                .send(Frame::Deliver { sub_id, messages })
                .await
                .unwrap();
            // Like the broker: the next frame only once credits allow it.
            while credits < 100 * (frame as u32 + 1) {
                match framed.next().await.unwrap().unwrap() {
                    Frame::Ack { ids, .. } => {
                        ack_frames += 1;
                        acked.extend(ids);
                    }
                    Frame::Credit { n, .. } => credits += n,
                    Frame::Ping { nonce } => framed.send(Frame::Pong { nonce }).await.unwrap(),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        let _ = report_tx.send((acked, ack_frames, credits));
        // Keep the connection until the client goes.
        while let Some(Ok(_)) = framed.next().await {}
    });
    let client = Client::connect(&url, "batcher", "").await.unwrap();
    let _subscription = client
        .subscribe("t", "g", 100, |_m| async { Ok::<(), std::io::Error>(()) })
        .await
        .unwrap();
    let (mut acked, ack_frames, credits) = tokio::time::timeout(Duration::from_secs(30), report_rx)
        .await
        .expect("the client settled all 300 messages")
        .unwrap();
    acked.sort_unstable();
    assert_eq!(acked, (0..300).collect::<Vec<u64>>(), "each acked once");
    assert_eq!(credits, 300, "one credit back per message");
    // Settled one by one they took about 190 frames (the writer merged
    // some); in batches 4-15. A third of the messages leaves room for a
    // loaded machine.
    assert!(
        ack_frames <= 100,
        "300 quick handlers were settled in {ack_frames} Ack frames; expected batches"
    );
}
