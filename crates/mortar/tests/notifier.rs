//! The shop's Python notifier under a real node: it consumes order events
//! through the node's HTTP bus API only, records one notification per
//! event, serves them over mTLS behind the gateway, and loses or repeats
//! nothing when it is killed -9 in the middle.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mortar_test_support::shop::{self, notifier_script};
use mortar_test_support::stores::ScratchDatabase;
use mortar_test_support::wait_for;
use reqwest::blocking::Client;
use serde_json::{Value, json};

fn call(http: &Client, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut req = match &body {
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

/// Signs up and logs in through the gateway; the access token.
fn token(http: &Client, gateway: &str) -> String {
    let credentials = json!({"username": "ann", "password": "correct horse battery"});
    wait_for(
        "identity through the gateway",
        Duration::from_secs(30),
        || {
            let (status, _) = call(
                http,
                &format!("{gateway}/v1/identity/signup"),
                None,
                Some(credentials.clone()),
            );
            (status == 201).then_some(())
        },
    );
    let (status, tokens) = call(
        http,
        &format!("{gateway}/v1/identity/login"),
        None,
        Some(credentials),
    );
    assert_eq!(status, 200);
    tokens["access_token"].as_str().unwrap().to_owned()
}

fn place_order(http: &Client, gateway: &str, token: &str) -> String {
    let order = json!({"customer": "ann", "lines": [
        {"sku": "MUG-001", "quantity": 1, "unit_price_cents": 1290}]});
    wait_for(
        "an order through the gateway",
        Duration::from_secs(30),
        || {
            let (status, body) = call(
                http,
                &format!("{gateway}/v1/orders"),
                Some(token),
                Some(order.clone()),
            );
            match status {
                201 => Some(
                    body["id"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| body["order_id"].to_string()),
                ),
                503 => None,
                other => panic!("{other}: {body}"),
            }
        },
    )
}

fn notifications(http: &Client, gateway: &str, token: &str) -> Vec<Value> {
    let (status, body) = call(
        http,
        &format!("{gateway}/v1/notifications?customer=ann"),
        Some(token),
        None,
    );
    if status != 200 {
        return Vec::new();
    }
    body["notifications"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn every_order_is_notified_once_also_across_a_kill_9_of_the_python_service() {
    let dir = tempfile::tempdir().unwrap();
    let node = shop::start(dir.path(), "notifyshop");
    let gateway = node.gateway_url();
    let http = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let token = token(&http, &gateway);
    for _ in 0..3 {
        place_order(&http, &gateway, &token);
    }
    let notes = wait_for("3 notifications", Duration::from_secs(30), || {
        let notes = notifications(&http, &gateway, &token);
        (notes.len() >= 3).then_some(notes)
    });
    assert_eq!(notes.len(), 3, "{notes:#?}");
    assert!(
        notes.iter().all(|n| n["kind"] == "OrderPlaced"),
        "{notes:#?}"
    );

    // Kill -9 the Python process; the node restarts it; orders placed
    // meanwhile are notified once each, and nothing earlier repeats.
    let instance = node.instances("notifier")[0].clone();
    let pid = instance["pid"].as_u64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    for _ in 0..3 {
        place_order(&http, &gateway, &token);
    }
    let notes = wait_for(
        "6 notifications after the restart",
        Duration::from_secs(60),
        || {
            let notes = notifications(&http, &gateway, &token);
            (notes.len() >= 6).then_some(notes)
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    let notes_after = notifications(&http, &gateway, &token);
    assert_eq!(notes_after.len(), 6, "{notes:#?}");
    let mut ids: Vec<&str> = notes_after
        .iter()
        .map(|n| n["event_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 6, "one notification per event");
    let restarted = node.instances("notifier")[0]["restarts"].as_u64().unwrap();
    assert!(restarted >= 1, "the node restarted it");

    // Its log lines are JSON in the node's merged stream.
    assert!(
        node.json_lines()
            .iter()
            .any(|l| l["service"] == "notifier" && l["msg"] == "notification recorded"),
        "the notifier logs JSON lines"
    );

    // Without naming a customer or an order: problem+json.
    let resp = http
        .get(format!("{gateway}/v1/notifications"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
}

/// The notifier's own unit tests (Python's unittest), so CI runs them.
#[test]
fn the_notifiers_python_unit_tests_pass() {
    let dir = notifier_script().parent().unwrap().to_owned();
    let out = std::process::Command::new("python3")
        .args(["-m", "unittest", "-v"])
        .current_dir(&dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs");
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("OK"), "{report}");
}

/// The notifier's store tests on PostgreSQL too (psycopg from
/// scripts/notifier-venv, a scratch database), so CI runs them.
#[test]
fn the_notifiers_python_store_tests_pass_on_postgres() {
    const TEST: &str = "the_notifiers_python_store_tests_pass_on_postgres";
    let Some(database) = ScratchDatabase::create(TEST) else {
        return;
    };
    let Some(python) = shop::notifier_python_for_postgres(TEST) else {
        return;
    };
    let dir = notifier_script().parent().unwrap().to_owned();
    let out = std::process::Command::new(python)
        .args(["-m", "unittest", "-v", "test_notifier.PostgresStoreTest"])
        .current_dir(&dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NOTIFIER_TEST_POSTGRES", &database.url)
        .output()
        .expect("the venv's python runs");
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(!report.contains("skipped"), "{report}");
    assert!(
        report.contains("test_a_dropped_session_is_replaced"),
        "{report}"
    );
}

/// The storefront page comes through the gateway from the catalog.
#[test]
fn the_storefront_page_is_served_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let node = shop::start(dir.path(), "storeshop");
    let gateway = node.gateway_url();
    let resp = reqwest::blocking::get(format!("{gateway}/shop")).unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = resp.text().unwrap();
    for api in [
        "/v1/products",
        "/v1/identity/login",
        "/v1/orders",
        "/v1/order-history",
        "/v1/notifications",
    ] {
        assert!(page.contains(api), "the page calls {api}");
    }
}
