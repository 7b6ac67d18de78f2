//! The NATS backend when its server dies: kill -9 a private `nats-server`
//! repeatedly while producers publish through the mortar client; every
//! publish that was acknowledged is delivered afterwards. Also: a server
//! without JetStream, or none at all, is reported once and clearly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mortar_bus_client::{Client, ClientConfig, ClientError, Message, NewMessage};
use mortar_test_support::nats::PrivateNats;

const ROUNDS: usize = 3;
const PRODUCERS: usize = 3;

fn private_or_skip(test: &str, dir: &std::path::Path) -> Option<PrivateNats> {
    let server = PrivateNats::new(dir);
    if server.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: nats-server is not installed, and CI=true requires the NATS tests to run"
        );
        eprintln!("SKIPPED {test}: nats-server is not installed");
    }
    server
}

fn config(url: &str, name: &str) -> ClientConfig {
    let mut config = ClientConfig::new(url, name, "");
    config.publish_timeout = Duration::from_secs(2);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_the_nats_server_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut server) = private_or_skip("nats kill -9", &dir.path().join("store")) else {
        return;
    };
    server.start();
    let url = server.url();
    let admin = Client::connect_with(config(&url, "admin")).await.unwrap();
    admin.create_topic("orders").await.unwrap();

    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let client = Client::connect_with(config(&url, &format!("producer-{p}")))
            .await
            .unwrap();
        let (acked, stop) = (acked.clone(), stop.clone());
        producers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("p{p}-{n}");
                n += 1;
                match client.publish("orders", NewMessage::new(key.clone())).await {
                    Ok(published) if published.ids().is_some() => {
                        acked.lock().unwrap().insert(key);
                    }
                    Ok(other) => panic!("no outbox, yet {other:?}"),
                    // The server is down: not acknowledged, so not promised.
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    for round in 0..ROUNDS {
        let before = acked.lock().unwrap().len();
        common::wait_until("publishes to be acknowledged", || {
            acked.lock().unwrap().len() >= before + 200
        })
        .await;
        server.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.start();
        eprintln!(
            "round {round}: {} acknowledged so far",
            acked.lock().unwrap().len()
        );
    }
    let before = acked.lock().unwrap().len();
    common::wait_until("publishes after the last restart", || {
        acked.lock().unwrap().len() >= before + 100
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await.unwrap();
    }

    let acked = acked.lock().unwrap().clone();
    let seen: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let sink = seen.clone();
    let consumer = Client::connect_with(config(&url, "checker")).await.unwrap();
    let sub = consumer
        .subscribe("orders", "checker", 256, move |m: Message| {
            sink.lock()
                .unwrap()
                .insert(String::from_utf8_lossy(&m.payload).into_owned());
            async { Ok::<(), String>(()) }
        })
        .await
        .unwrap();
    common::wait_until("every acknowledged publish to be delivered", || {
        let seen = seen.lock().unwrap();
        acked.iter().all(|k| seen.contains(k))
    })
    .await;
    sub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_server_or_one_without_jetstream_is_reported_with_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut server) = private_or_skip("nats startup checks", dir.path()) else {
        return;
    };
    let with_secret = server.url().replace("nats://", "nats://app:s3cret@");
    let error = Client::connect_with(config(&with_secret, "svc"))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, ClientError::Unavailable { .. }), "{text}");
    assert!(
        text.contains(&server.url().replace("nats://", "nats://***@")),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "credentials leaked: {text}");

    server.start_without_jetstream();
    let error = Client::connect_with(config(&server.url(), "svc"))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("JetStream"), "{text}");
    assert!(text.contains(&server.url()), "{text}");
}
