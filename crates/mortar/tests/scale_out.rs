//! Dev/prod parity: the shop's event-sourced services — ordering (event
//! store and outbox) and order-history (read model fed over the bus) —
//! pointed at NATS JetStream and PostgreSQL by environment alone
//! (`MORTAR_BUS_URL`, `MORTAR_STORE_URL`: one database, a schema per
//! service) take an order and show it in the customer's history: the same
//! binaries, only URLs change. (catalog and identity store in SQLite only;
//! docs/scale-out.md.) Runs when CI=true; skipped with the reason printed
//! when NATS or PostgreSQL is not there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mortar_test_support::stores::ScratchDatabase;
use mortar_test_support::{RunningNode, binary, nats, wait_for};
use reqwest::blocking::Client;
use serde_json::{Value, json};

#[test]
fn the_shop_runs_on_nats_jetstream_and_postgres_by_environment_alone() {
    const TEST: &str = "the_shop_runs_on_nats_jetstream_and_postgres_by_environment_alone";
    let Some(bus_url) = nats::shared_or_skip(TEST) else {
        return;
    };
    let Some(database) = ScratchDatabase::create(TEST) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("mortar.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
[app]
name = "shop"

[services.ordering]
command = ["{ordering}"]

[services.order-history]
command = ["{history}"]

[[gateway.routes]]
prefix = "/v1/orders"
service = "ordering"

[[gateway.routes]]
prefix = "/v1/order-history"
service = "order-history"

[bus]
topics = ["orders"]
"#,
            ordering = binary("ordering").display(),
            history = binary("order-history").display(),
        ),
    )
    .unwrap();
    let node = RunningNode::start_with_env(
        &manifest,
        &dir.path().join("data"),
        &[
            ("MORTAR_BUS_URL", bus_url.as_str()),
            ("MORTAR_STORE_URL", database.url.as_str()),
        ],
    );
    for service in ["ordering", "order-history"] {
        node.wait_ready(service, 1);
    }
    let gateway = node.gateway_url();
    let http = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let customer = format!("parity{}", std::process::id());
    let order: Value = wait_for(
        "an order through the gateway",
        Duration::from_secs(60),
        || {
            let resp = http
                .post(format!("{gateway}/v1/orders"))
                .json(&json!({"customer": customer, "lines": [
                {"sku": "MUG-001", "quantity": 2, "unit_price_cents": 1290}]}))
                .send()
                .unwrap();
            match resp.status().as_u16() {
                201 => Some(resp.json().unwrap()),
                503 => None,
                other => panic!("{other}: {}", resp.text().unwrap()),
            }
        },
    );
    let order_id = order["id"].as_str().unwrap().to_owned();
    // The event reaches order-history over JetStream, into its PostgreSQL
    // read store.
    let history: Value = wait_for("the order in the history", Duration::from_secs(60), || {
        let resp = http
            .get(format!("{gateway}/v1/order-history?customer={customer}"))
            .send()
            .unwrap();
        let body: Value = resp.json().ok()?;
        body.to_string().contains(&order_id).then_some(body)
    });
    let listed = &history["orders"][0];
    assert_eq!(listed["id"], order_id.as_str(), "{history}");
    assert_eq!(listed["total_cents"], 2580, "{history}");
    // Each service's store is its own schema of the one database.
    let schemas = database.schemas();
    for schema in ["order_history", "ordering"] {
        assert!(schemas.iter().any(|s| s == schema), "{schemas:?}");
    }
    drop(node);
}
