//! The client's offline outbox across a client restart and a broker that
//! comes up late: everything buffered arrives, in order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use mortar_bus::Broker;
use mortar_bus_client::{Client, ClientConfig, ClientError, NewMessage, Published};
use tokio_util::sync::CancellationToken;

fn config(url: &str, outbox: &std::path::Path) -> ClientConfig {
    ClientConfig::new(url, "producer", "").outbox(outbox)
}

#[tokio::test]
async fn buffered_publishes_survive_a_client_restart_and_arrive_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("svc/outbox");
    // An address where no broker runs yet.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let url = format!("mortar://{addr}");

    let first = Client::connect_with(config(&url, &outbox)).await.unwrap();
    for n in 0..100 {
        let p = first
            .publish("orders", NewMessage::new(format!("{n}")))
            .await
            .unwrap();
        assert_eq!(p, Published::Buffered);
    }
    drop(first); // the service "restarts"

    let second = Client::connect_with(config(&url, &outbox)).await.unwrap();
    assert!(
        second.outbox().unwrap().pending_bytes() > 0,
        "the outbox survived the restart"
    );
    for n in 100..150 {
        let p = second
            .publish("orders", NewMessage::new(format!("{n}")))
            .await
            .unwrap();
        assert_eq!(p, Published::Buffered, "older buffered publishes go first");
    }

    // The broker comes up.
    let broker = Broker::open(common::config(&dir.path().join("bus"), 1 << 20))
        .await
        .unwrap();
    broker.create_topic("orders").await.unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(mortar_bus_server::serve(
        listener,
        broker.clone(),
        stop.clone(),
    ));

    common::wait_until("the outbox to drain", || {
        second.outbox().unwrap().is_empty()
    })
    .await;
    assert_eq!(
        std::fs::metadata(&outbox).unwrap().len(),
        0,
        "a drained outbox is truncated"
    );

    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let _sub = second
        .subscribe("orders", "check", 8, move |m| {
            let sink = sink.clone();
            async move {
                sink.lock()
                    .unwrap()
                    .push((m.id, String::from_utf8(m.payload.to_vec()).unwrap()));
                Ok::<(), String>(())
            }
        })
        .await
        .unwrap();
    common::wait_until("150 deliveries", || got.lock().unwrap().len() >= 150).await;
    let mut got = got.lock().unwrap().clone();
    got.sort();
    got.dedup();
    let payloads: Vec<String> = got.into_iter().map(|(_, p)| p).collect();
    let expected: Vec<String> = (0..150).map(|n| n.to_string()).collect();
    assert_eq!(payloads, expected, "published order is the broker's order");

    // Connected and drained: publishes go straight to the broker again.
    let p = second
        .publish("orders", NewMessage::new("direct"))
        .await
        .unwrap();
    assert!(matches!(p, Published::Durable(_)), "{p:?}");
    stop.cancel();
}

#[tokio::test]
async fn a_full_outbox_is_an_error_not_a_silent_loss() {
    let dir = tempfile::tempdir().unwrap();
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cfg =
        config(&format!("mortar://{addr}"), &dir.path().join("outbox")).outbox_max_bytes(4096);
    let client = Client::connect_with(cfg).await.unwrap();
    let mut buffered = 0;
    let err = loop {
        match client.publish("t", NewMessage::new(vec![1u8; 500])).await {
            Ok(Published::Buffered) => buffered += 1,
            Ok(other) => panic!("no broker, yet {other:?}"),
            Err(e) => break e,
        }
    };
    assert!(buffered > 0);
    assert!(
        matches!(err, ClientError::OutboxFull { max: 4096, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn without_an_outbox_an_unreachable_bus_is_an_error() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = Client::connect(&format!("mortar://{addr}"), "p", "")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("MORTAR_BUS_URL"), "{err}");
}
