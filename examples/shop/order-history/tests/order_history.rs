//! order-history as a process, fed by a real ordering process through an
//! embedded broker: events published on the bus show up in "my orders", a
//! duplicated message changes nothing, and a rebuild from ordering's feed
//! gives exactly the live read model — on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mortar_sdk::bus::{Client, NewMessage};
use mortar_test_support::registry::FakeRegistry;
use mortar_test_support::service::ServiceProcess;
use mortar_test_support::stores::TestStores;
use serde_json::{Value, json};

/// The broker, ordering, the fake registry that lets order-history find
/// ordering by name, and order-history itself.
struct Shop {
    bus_url: String,
    ordering: ServiceProcess,
    history: ServiceProcess,
    _registry: FakeRegistry,
    _broker: mortar_bus_server::EmbeddedBus,
    _dir: tempfile::TempDir,
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn start(events_url: &str, read_url: &str) -> Shop {
    let dir = tempfile::tempdir().unwrap();
    let bus_addr = free_addr();
    let bus_url = format!("mortar://{bus_addr}");
    let config = mortar_bus::BrokerConfig {
        data_dir: dir.path().join("bus"),
        ..mortar_bus::BrokerConfig::default()
    };
    let (_, broker) = mortar_bus_server::run_embedded(config, bus_addr)
        .await
        .unwrap();
    broker.broker().create_topic("orders").await.unwrap();
    let ordering = ServiceProcess::start(
        &mortar_test_support::binary("ordering"),
        &[
            ("MORTAR_STORE_URL", events_url),
            ("MORTAR_BUS_URL", &bus_url),
        ],
    );
    let registry = FakeRegistry::start(&[(
        "ordering",
        SocketAddr::from(([127, 0, 0, 1], ordering.port)),
    )])
    .await;
    let history = ServiceProcess::start(
        Path::new(env!("CARGO_BIN_EXE_order-history")),
        &[
            ("MORTAR_READ_STORE_URL", read_url),
            ("MORTAR_BUS_URL", &bus_url),
            ("MORTAR_NODE_URL", &registry.url),
        ],
    );
    Shop {
        bus_url,
        ordering,
        history,
        _registry: registry,
        _broker: broker,
        _dir: dir,
    }
}

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    if status >= 400 {
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "application/problem+json"
        );
    }
    (status, resp.json().await.unwrap())
}

async fn get(url: String) -> (u16, Value) {
    call(reqwest::Method::GET, url, None).await
}

impl Shop {
    async fn place(&self, customer: &str, quantity: u32) -> (String, i64) {
        let body = json!({"customer": customer, "lines": [
            {"sku": "MUG-001", "quantity": quantity, "unit_price_cents": 1290}]});
        let (status, order) = call(
            reqwest::Method::POST,
            format!("{}/v1/orders", self.ordering.url()),
            Some(body),
        )
        .await;
        assert_eq!(status, 201, "{order}");
        (
            order["id"].as_str().unwrap().to_owned(),
            order["total_cents"].as_i64().unwrap(),
        )
    }

    async fn command(&self, id: &str, action: &str, body: Value) {
        let (status, answer) = call(
            reqwest::Method::POST,
            format!("{}/v1/orders/{id}/{action}", self.ordering.url()),
            Some(body),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }

    async fn my_orders(&self, customer: &str) -> Value {
        let (status, body) = get(format!(
            "{}/v1/order-history?customer={customer}",
            self.history.url()
        ))
        .await;
        assert_eq!(status, 200, "{body}");
        body["orders"].clone()
    }

    async fn projection(&self) -> Value {
        let (status, body) = get(format!("{}/v1/projections", self.history.url())).await;
        assert_eq!(status, 200, "{body}");
        body["projections"][0].clone()
    }

    async fn ordering_events(&self) -> Vec<Value> {
        let (_, body) = get(format!("{}/v1/events?after=0", self.ordering.url())).await;
        body["events"].as_array().unwrap().clone()
    }

    /// Waits until order-history applied (or recognised) every event
    /// ordering has: `applied + duplicates` covers the head.
    async fn settled(&self, duplicates: u64) -> Value {
        let head = self.ordering_events().await.len() as u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let p = self.projection().await;
            // Settled: every event applied and the checkpoint at ordering's
            // head (both are read at different moments, so wait for both).
            if p["applied"].as_u64() == Some(head)
                && p["duplicates"].as_u64() == Some(duplicates)
                && p["lag"].as_u64() == Some(0)
            {
                return p;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order-history never caught up with {head} event(s): {p}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Places, pays, cancels and ships a few orders of ann and bob.
    async fn some_history(&self) -> Vec<String> {
        let (a1, t1) = self.place("ann", 1).await;
        let (a2, _) = self.place("ann", 2).await;
        let (a3, t3) = self.place("ann", 3).await;
        let (b1, _) = self.place("bob", 4).await;
        self.command(&a1, "pay", json!({"amount_cents": t1})).await;
        self.command(&a1, "ship", json!({"carrier": "post"})).await;
        self.command(&a2, "cancel", json!({})).await;
        self.command(&a3, "pay", json!({"amount_cents": t3})).await;
        vec![a1, a2, a3, b1]
    }
}

fn statuses(orders: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = orders
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["id"].as_str().unwrap().to_owned(),
                o["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_events_show_up_in_my_orders_and_a_duplicate_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
    let shop = start(&url("events.db"), &url("read.db")).await;
    let ids = shop.some_history().await;
    let status = shop.settled(0).await;
    assert_eq!(status["name"], "order-history");
    assert_eq!(status["source"], "ordering");
    assert_eq!(status["lag"], 0, "{status}");
    assert_eq!(status["position"], status["head"]);

    let ann = shop.my_orders("ann").await;
    let mut expected = vec![
        (ids[0].clone(), "shipped".to_owned()),
        (ids[1].clone(), "cancelled".to_owned()),
        (ids[2].clone(), "paid".to_owned()),
    ];
    expected.sort();
    assert_eq!(statuses(&ann), expected);
    let bob = shop.my_orders("bob").await;
    assert_eq!(statuses(&bob), vec![(ids[3].clone(), "placed".to_owned())]);

    // Only what the page shows, newest first.
    let first = ann[0].as_object().unwrap();
    let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["id", "placed_at", "status", "total_cents", "updated_at"]
    );
    let placed: Vec<&str> = ann
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["placed_at"].as_str().unwrap())
        .collect();
    assert!(placed.windows(2).all(|w| w[0] >= w[1]), "{placed:?}");
    let a3 = ann
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == ids[2])
        .unwrap();
    assert_eq!(a3["total_cents"], 3 * 1290);

    // The same event delivered again: recognised, nothing changes.
    let events = shop.ordering_events().await;
    let paid = events
        .iter()
        .find(|e| e["event_type"] == "OrderPaid")
        .unwrap();
    let event_id = format!(
        "{}@{}",
        paid["stream_id"].as_str().unwrap(),
        paid["version"]
    );
    let bus = Client::connect(&shop.bus_url, "test", "").await.unwrap();
    bus.publish(
        "orders",
        NewMessage {
            key: paid["stream_id"].as_str().map(str::to_owned),
            headers: vec![("mortar-event-id".into(), event_id)],
            payload: serde_json::to_vec(paid).unwrap().into(),
        },
    )
    .await
    .unwrap();
    let status = shop.settled(1).await;
    assert_eq!(status["lag"], 0);
    assert_eq!(shop.my_orders("ann").await, ann);
    assert_eq!(shop.my_orders("bob").await, bob);
    assert_eq!(shop.my_orders("nobody").await, json!([]));

    // Bad queries name the field.
    for (query, field) in [
        ("", "customer"),
        ("?customer=ann&limit=0", "limit"),
        ("?customer=ann&limit=1000", "limit"),
        ("?customer=ann&limit=ten", "limit"),
        ("?customer=ann&page=2", "page"),
    ] {
        let (status, problem) =
            get(format!("{}/v1/order-history{query}", shop.history.url())).await;
        assert_eq!(status, 422, "{query}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{query}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains(field));
    }
    let (status, page) = get(format!(
        "{}/v1/order-history?customer=ann&limit=1",
        shop.history.url()
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["orders"].as_array().unwrap().len(), 1);
    assert_eq!(page["orders"][0], ann[0]);
}

async fn rebuild_yields_exactly_the_live_read_model(stores: TestStores) {
    let shop = start(&stores.events_url, &stores.read_url).await;
    let ids = shop.some_history().await;
    shop.settled(0).await;
    let live = (shop.my_orders("ann").await, shop.my_orders("bob").await);
    assert_eq!(live.0.as_array().unwrap().len(), 3);

    let rebuild = |name: &str| {
        call(
            reqwest::Method::POST,
            format!("{}/v1/projections/{name}/rebuild", shop.history.url()),
            None,
        )
    };
    let (status, done) = rebuild("order-history").await;
    assert_eq!(status, 200, "{done}");
    let events = shop.ordering_events().await;
    assert_eq!(done["replayed"], events.len());
    assert_eq!(done["position"], events.last().unwrap()["position"]);
    let rebuilt = (shop.my_orders("ann").await, shop.my_orders("bob").await);
    assert_eq!(rebuilt, live);

    let (status, problem) = rebuild("orders-by-sku").await;
    assert_eq!(status, 404);
    assert_eq!(problem["known"], json!(["order-history"]));

    // Live updates resume after the rebuild.
    shop.command(&ids[3], "cancel", json!({})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let bob = shop.my_orders("bob").await;
        if bob[0]["status"] == "cancelled" {
            assert_ne!(bob[0]["updated_at"], live.1[0]["updated_at"]);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cancel never showed up: {bob}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = shop.projection().await;
    assert_eq!(status["lag"], 0, "{status}");
    assert_eq!(status["state"], "live");
}

mortar_test_support::backend_suite!(rebuild_yields_exactly_the_live_read_model);
