//! The ordering service as a process: HTTP commands with problem+json
//! errors, and the outbox surviving kill -9 between commit and publish.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mortar_sdk::bus::{Client, Message};
use mortar_test_support::service::ServiceProcess;
use serde_json::{Value, json};

fn start(store: &Path, bus_url: &str) -> ServiceProcess {
    let url = format!("sqlite://{}", store.display());
    ServiceProcess::start(
        Path::new(env!("CARGO_BIN_EXE_ordering")),
        &[("MORTAR_STORE_URL", &url), ("MORTAR_BUS_URL", bus_url)],
    )
}

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = resp.json().await.unwrap();
    if status >= 400 {
        assert_eq!(ct.as_deref(), Some("application/problem+json"));
    }
    (status, body)
}

fn order() -> Value {
    json!({"customer": "ann", "lines": [{"sku": "MUG-001", "quantity": 2, "unit_price_cents": 1290}]})
}

/// A port nothing listens on (yet).
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_enforce_the_rules_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(
        &dir.path().join("store.db"),
        &format!("mortar://{}", free_addr()),
    );
    let base = svc.url();
    let (status, placed) = post(&base, "/v1/orders", order()).await;
    assert_eq!(status, 201, "{placed}");
    let id = placed["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (placed["status"].as_str(), placed["total_cents"].as_i64()),
        (Some("placed"), Some(2580))
    );

    let (status, p) = post(&base, &format!("/v1/orders/{id}/ship"), json!({})).await;
    assert_eq!(status, 409, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("only paid orders ship")
    );
    let (status, _) = post(
        &base,
        &format!("/v1/orders/{id}/pay"),
        json!({"amount_cents": 1}),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = post(
        &base,
        &format!("/v1/orders/{id}/cancel"),
        json!({"reason": "changed my mind"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, p) = post(
        &base,
        &format!("/v1/orders/{id}/pay"),
        json!({"amount_cents": 2580}),
    )
    .await;
    assert_eq!(status, 409);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("cancelled order cannot be paid")
    );
    let (status, _) = post(&base, "/v1/orders/nope/pay", json!({"amount_cents": 1})).await;
    assert_eq!(status, 404);
    let (status, _) = post(&base, "/v1/orders", json!({"customer": "ann", "lines": []})).await;
    assert_eq!(status, 422);
}

/// kill -9 after the command committed but before the relay could publish
/// (the bus is not there yet): after a restart the event is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_publishes_after_kill9_between_commit_and_publish() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.db");
    let bus_addr = free_addr();
    let bus_url = format!("mortar://{bus_addr}");

    let svc = start(&store, &bus_url);
    let (status, placed) = post(&svc.url(), "/v1/orders", order()).await;
    assert_eq!(status, 201);
    let id = placed["id"].as_str().unwrap().to_owned();
    svc.kill9();

    // The event and its message are committed; nothing was published.
    let events = mortar_cqrs::eventstore::SqliteStore::open(&store)
        .await
        .unwrap();
    use mortar_cqrs::eventstore::EventStore;
    let pending = events.outbox_pending(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    drop(events);

    let config = mortar_bus::BrokerConfig {
        data_dir: dir.path().join("bus"),
        ..mortar_bus::BrokerConfig::default()
    };
    let (_, bus) = mortar_bus_server::run_embedded(config, bus_addr)
        .await
        .unwrap();
    bus.broker().create_topic("orders").await.unwrap();
    let got: Arc<Mutex<Vec<Message>>> = Arc::default();
    let consumer = Client::connect(&bus_url, "test", "").await.unwrap();
    let sink = got.clone();
    let _sub = consumer
        .subscribe("orders", "test", 8, move |m| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(m);
                Ok::<(), std::io::Error>(())
            }
        })
        .await
        .unwrap();

    let _svc = start(&store, &bus_url);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if !got.lock().unwrap().is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the event was never published"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = got.lock().unwrap()[0].clone();
    assert_eq!(
        m.header("mortar-event-id"),
        Some(format!("order-{id}@1").as_str())
    );
    let event: Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(event["event_type"], "OrderPlaced");
    assert_eq!(event["payload"]["total_cents"], 2580);
}
