//! Dev/prod parity: the whole shop — catalog, identity, ordering,
//! order-history and the Python notifier — pointed at NATS JetStream and
//! PostgreSQL by environment alone (`MORTAR_BUS_URL`, `MORTAR_STORE_URL`:
//! one database, a schema per service) passes the shop's end-to-end flow:
//! sign up and log in, browse the catalog, place an order, see it in the
//! history and get notified. The same binaries and script as on SQLite and
//! the embedded bus; only URLs change (and the notifier runs on a python
//! with psycopg, scripts/notifier-venv). Runs when CI=true; skipped with the
//! reason printed when nats-server or PostgreSQL is not there.
//!
//! And the shape of the Kubernetes export, where there is no node: ordering
//! alone on JetStream and PostgreSQL, and the Python notifier beside its bus
//! bridge (`mortar bus http`), configured as the exported pod is.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mortar_test_support::nats::PrivateNats;
use mortar_test_support::service::ServiceProcess;
use mortar_test_support::stores::ScratchDatabase;
use mortar_test_support::{RunningNode, shop, wait_for};
use reqwest::blocking::Client;
use serde_json::{Value, json};

fn call(http: &Client, url: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let mut req = match body {
        Some(b) => http.post(url).json(b),
        None => http.get(url),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

/// A JetStream server of this test's own (`nats-server -js` on a free
/// loopback port), so no other run shares its `orders` stream or consumer
/// groups; `None` (reason printed) without nats-server, a failure under CI.
fn jetstream(test: &str, dir: &std::path::Path) -> Option<PrivateNats> {
    let Some(mut nats) = PrivateNats::new(&dir.join("nats")) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: nats-server is not installed, and CI=true requires the NATS tests to run"
        );
        eprintln!("SKIPPED {test}: nats-server is not installed");
        return None;
    };
    nats.start();
    Some(nats)
}

/// What both tests run on: a JetStream server of their own, a scratch
/// database, and the python with psycopg for the notifier; `None` (reason
/// printed) where one is missing outside CI.
fn backends(
    test: &str,
    dir: &std::path::Path,
) -> Option<(PrivateNats, ScratchDatabase, std::path::PathBuf)> {
    let nats = jetstream(test, dir)?;
    let database = ScratchDatabase::create(test)?;
    let python = shop::notifier_python_for_postgres(test)?;
    Some((nats, database, python))
}

#[test]
fn the_whole_shop_runs_on_nats_jetstream_and_postgres_by_environment_alone() {
    const TEST: &str = "the_whole_shop_runs_on_nats_jetstream_and_postgres_by_environment_alone";
    let dir = tempfile::tempdir().unwrap();
    let Some((nats, database, python)) = backends(TEST, dir.path()) else {
        return;
    };
    let manifest = shop::write_manifest_with_python(dir.path(), "shop", &python);
    let bus_url = nats.url();
    let node = RunningNode::start_with_env(
        &manifest,
        &dir.path().join("data"),
        &[
            ("MORTAR_BUS_URL", bus_url.as_str()),
            ("MORTAR_STORE_URL", database.url.as_str()),
        ],
    );
    shop::wait_ready(&node);
    let gateway = node.gateway_url();
    let http = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // Browse: the catalog's seeded products, from its PostgreSQL schema.
    let (status, products) = call(&http, &format!("{gateway}/v1/products"), None, None);
    assert_eq!(status, 200, "{products}");
    let skus: Vec<&str> = products["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sku"].as_str().unwrap())
        .collect();
    assert!(skus.contains(&"MUG-001"), "{products}");

    // Sign up and log in: identity's users and keys in its schema.
    let credentials = json!({"username": "ann", "password": "correct horse battery"});
    let (status, body) = call(
        &http,
        &format!("{gateway}/v1/identity/signup"),
        None,
        Some(&credentials),
    );
    assert_eq!(status, 201, "{body}");
    let (status, tokens) = call(
        &http,
        &format!("{gateway}/v1/identity/login"),
        None,
        Some(&credentials),
    );
    assert_eq!(status, 200, "{tokens}");
    let token = tokens["access_token"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &http,
        &format!("{gateway}/v1/identity/login"),
        None,
        Some(&json!({"username": "ann", "password": "wrong horse"})),
    );
    assert_eq!(status, 401, "a wrong password is refused");

    // Order: the event store and outbox in ordering's schema, published
    // to JetStream.
    let order = json!({"customer": "ann", "lines": [
        {"sku": "MUG-001", "quantity": 2, "unit_price_cents": 1290}]});
    let placed: Value = wait_for(
        "an order through the gateway",
        Duration::from_secs(60),
        || {
            let (status, body) = call(
                &http,
                &format!("{gateway}/v1/orders"),
                Some(&token),
                Some(&order),
            );
            match status {
                201 => Some(body),
                503 => None,
                other => panic!("{other}: {body}"),
            }
        },
    );
    let order_id = placed["id"].as_str().unwrap().to_owned();

    // History: order-history consumed the event over JetStream.
    let history: Value = wait_for("the order in the history", Duration::from_secs(60), || {
        let (_, body) = call(
            &http,
            &format!("{gateway}/v1/order-history?customer=ann"),
            Some(&token),
            None,
        );
        body.to_string().contains(&order_id).then_some(body)
    });
    assert_eq!(history["orders"][0]["total_cents"], 2580, "{history}");

    // Notification: the Python notifier pulled it through the node's HTTP
    // bus API (backed by JetStream) into its PostgreSQL schema.
    let notes: Vec<Value> = wait_for("the notification", Duration::from_secs(60), || {
        let (status, body) = call(
            &http,
            &format!("{gateway}/v1/notifications?customer=ann"),
            Some(&token),
            None,
        );
        let notes = body["notifications"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (status == 200 && !notes.is_empty()).then_some(notes)
    });
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["kind"], "OrderPlaced");
    assert_eq!(notes[0]["order_id"], order_id.as_str());

    // Each service's data is in its own schema of the one database, and
    // nothing is in a SQLite file.
    assert_eq!(
        database.schemas(),
        [
            "catalog",
            "identity",
            "notifier",
            "order_history",
            "ordering"
        ]
    );
    assert_eq!(database.count("SELECT count(*) FROM catalog.products"), 6);
    assert_eq!(
        database.count("SELECT count(*) FROM identity.users WHERE username = 'ann'"),
        1
    );
    assert!(database.count("SELECT count(*) FROM identity.signing_keys") >= 1);
    assert!(database.count("SELECT count(*) FROM ordering.events") >= 1);
    assert_eq!(
        database.count("SELECT count(*) FROM order_history.order_history"),
        1
    );
    assert_eq!(
        database.count("SELECT count(*) FROM notifier.notifications"),
        1
    );
    let sqlite_files: Vec<_> = walk(&dir.path().join("data"))
        .into_iter()
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                ["store.db", "read.db", "notifications.db"].contains(&&*n.to_string_lossy())
            })
        })
        .collect();
    assert!(sqlite_files.is_empty(), "{sqlite_files:?}");
    drop(node);
}

/// `url` with `?schema=` (or `&schema=`) added.
fn with_schema(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}schema={schema}")
}

/// The bus bridge on `port`, as the export's sidecar runs it.
fn bus_bridge(nats: &str, port: u16, token: &str) -> ServiceProcess {
    let port = port.to_string();
    ServiceProcess::start_with_args(
        &mortar_test_support::binary("mortar"),
        &["bus", "http"],
        &[
            ("MORTAR_BUS_URL", nats),
            ("PORT", &port),
            ("MORTAR_SERVICE", "notifier-bus-http"),
            ("MORTAR_BUS_HTTP_TOKEN", token),
            ("MORTAR_BUS_NATS_REPLICAS", "1"),
            // A delivery held by a killed bridge comes again this soon.
            ("MORTAR_BUS_ACK_DEADLINE_MS", "2000"),
        ],
    )
}

#[test]
fn without_a_node_the_notifier_runs_beside_its_bus_bridge_and_survives_its_crash() {
    const TEST: &str =
        "without_a_node_the_notifier_runs_beside_its_bus_bridge_and_survives_its_crash";
    let dir = tempfile::tempdir().unwrap();
    let Some((nats, database, python)) = backends(TEST, dir.path()) else {
        return;
    };
    let bus_url = nats.url();
    let token = "a-token-from-the-bus-http-secret";
    let bridge_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bridge_url = format!("http://127.0.0.1:{bridge_port}");

    let ordering_store = with_schema(&database.url, "ordering");
    let ordering = ServiceProcess::start(
        &mortar_test_support::binary("ordering"),
        &[
            ("MORTAR_SERVICE", "ordering"),
            ("MORTAR_STORE_URL", &ordering_store),
            ("MORTAR_BUS_URL", &bus_url),
            ("MORTAR_BUS_NATS_REPLICAS", "1"),
        ],
    );
    let mut bridge = bus_bridge(&bus_url, bridge_port, token);
    // The environment of the exported notifier pod: no node.
    let script = shop::notifier_script();
    let notifier_store = with_schema(&database.url, "notifier");
    let notifier = ServiceProcess::start_with_args(
        &python,
        &[script.to_str().unwrap()],
        &[
            ("MORTAR_SERVICE", "notifier"),
            ("MORTAR_APP", "shop"),
            ("MORTAR_BIND_ADDR", "127.0.0.1"),
            ("MORTAR_STORE_URL", &notifier_store),
            ("MORTAR_BUS_URL", &bus_url),
            ("MORTAR_BUS_HTTP_URL", &bridge_url),
            ("MORTAR_BUS_HTTP_TOKEN", token),
        ],
    );
    let http = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // The bridge takes nothing without the token.
    let (status, body) = call(
        &http,
        &format!("{bridge_url}/v1/bus/topics/orders/groups/x/pull"),
        None,
        Some(&json!({"consumer": "x", "wait_ms": 0})),
    );
    assert_eq!(status, 401, "{body}");

    let place = |n: usize| -> String {
        let order = json!({"customer": "ann", "lines": [
            {"sku": "MUG-001", "quantity": n, "unit_price_cents": 1290}]});
        let (status, body) = call(
            &http,
            &format!("{}/v1/orders", ordering.url()),
            None,
            Some(&order),
        );
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    };
    let notified = |http: &Client| -> Vec<String> {
        let (status, body) = call(
            http,
            &format!("{}/v1/notifications?customer=ann", notifier.url()),
            None,
            None,
        );
        assert_eq!(status, 200, "{body}");
        body["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["order_id"].as_str().unwrap().to_owned())
            .collect()
    };

    let mut placed: Vec<String> = (1..=10).map(place).collect();
    wait_for(
        "the first ten orders notified through the bridge",
        Duration::from_secs(60),
        || (notified(&http).len() >= 10).then_some(()),
    );

    // kill -9 of the bridge; orders keep coming (ordering publishes to
    // JetStream itself) and the notifier keeps retrying its pulls.
    bridge.child.kill().unwrap();
    bridge.child.wait().unwrap();
    placed.extend((11..=20).map(place));
    std::thread::sleep(Duration::from_millis(500));
    bridge = bus_bridge(&bus_url, bridge_port, token);

    let mut got = wait_for(
        "all twenty orders notified after the bridge came back",
        Duration::from_secs(90),
        || {
            let got = notified(&http);
            (got.len() >= placed.len()).then_some(got)
        },
    );
    // Each order once: redeliveries after the crash changed nothing.
    got.sort();
    placed.sort();
    assert_eq!(got, placed);
    assert_eq!(
        database.count("SELECT count(*) FROM notifier.notifications"),
        20
    );
    drop(bridge);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
