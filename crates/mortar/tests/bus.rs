//! The node's embedded bus as a service sees it: `MORTAR_BUS_URL`, the HTTP
//! API under `/v1/bus`, backlog in `/metrics`, dead-letter replay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use mortar_test_support::{RunningNode, binary, wait_for};
use serde_json::{Value, json};

fn start(dir: &Path) -> RunningNode {
    write_manifest(dir, "orders");
    RunningNode::start(&dir.join("mortar.toml"), &dir.join("data"))
}

fn write_manifest(dir: &Path, topic: &str) {
    let manifest = dir.join("mortar.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
[app]
name = "bustest"

[services.worker]
command = ["{}"]

[bus]
topics = ["{topic}"]
max_deliveries = 2
ack_deadline = "30s"
"#,
            binary("fixture-service").display()
        ),
    )
    .unwrap();
}

fn http(node: &RunningNode) -> reqwest::blocking::Client {
    node.admin_http()
}

/// Long-polls up to `max` messages of `orders` for `group`.
fn pull(node: &RunningNode, admin: &str, group: &str, max: usize) -> Value {
    http(node)
        .post(format!("{admin}/v1/bus/topics/orders/groups/{group}/pull"))
        .json(&json!({"consumer": "test", "max": max, "wait_ms": 5000}))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn metric(node: &RunningNode, admin: &str, series: &str) -> Option<f64> {
    let text = http(node)
        .get(format!("{admin}/metrics"))
        .send()
        .ok()?
        .text()
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn services_get_the_bus_url_and_the_http_api_delivers_acks_and_reports_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let worker = node.wait_ready("worker", 1).remove(0);
    let status = node.status().unwrap();
    let admin = status["node"]["admin_url"].as_str().unwrap().to_owned();
    let bus_url = status["node"]["bus_url"].as_str().unwrap().to_owned();
    assert!(bus_url.starts_with("mortar://127.0.0.1:"), "{bus_url}");
    let seen = node.get_text(&worker, "/env/MORTAR_BUS_URL").1;
    assert_eq!(seen, bus_url, "the instance was given the node's bus");

    let published: Value = http(&node)
        .post(format!("{admin}/v1/bus/topics/orders/messages"))
        .json(&json!({"messages": [
            {"key": "o-1", "payload": {"order": 1}},
            {"key": "o-2", "payload": {"order": 2}},
            {"key": "o-3", "payload": {"order": 3}}
        ]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(published["ids"].as_array().unwrap().len(), 3, "{published}");

    let pulled: Value = pull(&node, &admin, "billing", 10);
    let messages = pulled["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{pulled}");
    assert_eq!(messages[0]["payload"]["order"], 1);
    let backlog = r#"mortar_bus_backlog{topic="orders",group="billing"}"#;
    assert_eq!(metric(&node, &admin, backlog), Some(3.0));

    let ids: Vec<Value> = messages.iter().map(|m| m["id"].clone()).collect();
    let resp = http(&node)
        .post(format!("{admin}/v1/bus/topics/orders/groups/billing/ack"))
        .json(&json!({"ids": ids}))
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().unwrap());
    wait_for("the backlog to drain", Duration::from_secs(10), || {
        (metric(&node, &admin, backlog) == Some(0.0)).then_some(())
    });

    // Bad input is a problem document and changes nothing.
    let resp = http(&node)
        .post(format!("{admin}/v1/bus/topics/nosuch/messages"))
        .json(&json!({"messages": [{"payload": 1}]}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
}

#[test]
fn dead_letters_can_be_replayed_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    node.wait_ready("worker", 1);
    let admin = node.status().unwrap()["node"]["admin_url"]
        .as_str()
        .unwrap()
        .to_owned();
    http(&node)
        .post(format!("{admin}/v1/bus/topics/orders/messages"))
        .json(&json!({"messages": [{"payload": "poison"}]}))
        .send()
        .unwrap();
    // Two deliveries, both refused: the message goes to orders.dlq.
    for _ in 0..2 {
        let pulled: Value = pull(&node, &admin, "g", 1);
        let id = pulled["messages"][0]["id"].clone();
        assert!(!id.is_null(), "{pulled}");
        http(&node)
            .post(format!("{admin}/v1/bus/topics/orders/groups/g/nack"))
            .json(&json!({"ids": [id], "delay_ms": 0, "reason": "cannot parse"}))
            .send()
            .unwrap();
    }
    let dead = r#"mortar_bus_dead_lettered_total{topic="orders",group="g"}"#;
    wait_for(
        "the message to be dead-lettered",
        Duration::from_secs(10),
        || (metric(&node, &admin, dead) == Some(1.0)).then_some(()),
    );

    let (code, out, err) = node.cli(&["bus", "dlq", "replay", "orders"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 dead letter(s) moved back"), "{out}");
    let pulled: Value = pull(&node, &admin, "g", 1);
    assert_eq!(pulled["messages"][0]["payload"], "poison");

    let (code, out, _) = node.cli(&["bus", "stats"]);
    assert_eq!(code, 0);
    assert!(out.contains("orders"), "{out}");
}

#[test]
fn with_a_nats_url_the_node_serves_jetstream_behind_the_same_api() {
    let Some(nats) = mortar_test_support::nats::shared_or_skip("node in NATS mode") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let topic = format!("node-nats-{nanos}");
    write_manifest(dir.path(), &topic);
    let node = RunningNode::start_with_env(
        &dir.path().join("mortar.toml"),
        &dir.path().join("data"),
        &[("MORTAR_BUS_URL", nats.as_str())],
    );
    let worker = node.wait_ready("worker", 1).remove(0);
    let status = node.status().unwrap();
    let admin = status["node"]["admin_url"].as_str().unwrap().to_owned();
    assert_eq!(status["node"]["bus_url"], nats.as_str());
    let env = |name: &str| node.get_text(&worker, &format!("/env/{name}")).1;
    assert_eq!(env("MORTAR_BUS_URL"), nats, "the instance was given NATS");
    assert_eq!(
        env("MORTAR_BUS_MAX_DELIVERIES"),
        "2",
        "and the manifest's delivery rules"
    );

    let published: Value = http(&node)
        .post(format!("{admin}/v1/bus/topics/{topic}/messages"))
        .json(&json!({"messages": [{"payload": {"order": 1}}, {"payload": {"order": 2}}]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(published["ids"].as_array().unwrap().len(), 2, "{published}");
    let backlog = format!(r#"mortar_bus_backlog{{topic="{topic}",group="billing"}}"#);
    let pulled: Value = http(&node)
        .post(format!("{admin}/v1/bus/topics/{topic}/groups/billing/pull"))
        .json(&json!({"consumer": "test", "max": 10, "wait_ms": 5000}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let messages = pulled["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{pulled}");
    wait_for(
        "the backlog from JetStream's consumer info",
        Duration::from_secs(30),
        || (metric(&node, &admin, &backlog) == Some(2.0)).then_some(()),
    );
    let ids: Vec<Value> = messages.iter().map(|m| m["id"].clone()).collect();
    let resp = http(&node)
        .post(format!("{admin}/v1/bus/topics/{topic}/groups/billing/ack"))
        .json(&json!({"ids": ids}))
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().unwrap());
    wait_for("the backlog to drain", Duration::from_secs(30), || {
        (metric(&node, &admin, &backlog) == Some(0.0)).then_some(())
    });
}

/// `mortar bus http` is configured like a service: a missing, malformed or
/// non-NATS bus URL, or a bad bus setting, is one line naming the variable
/// and exit 78, before it listens.
#[test]
fn the_bus_bridge_refuses_bad_configuration_with_one_line_and_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    for (env, names) in [
        (vec![], "MORTAR_BUS_URL is not set"),
        (
            vec![("MORTAR_BUS_URL", "mortar://127.0.0.1:4222")],
            "bridges NATS JetStream",
        ),
        (
            vec![("MORTAR_BUS_URL", "nats://nats")],
            "MORTAR_BUS_URL=\"nats://nats\" is invalid",
        ),
        (
            vec![
                ("MORTAR_BUS_URL", "nats://127.0.0.1:4222"),
                ("MORTAR_BUS_MAX_DELIVERIES", "many"),
            ],
            "MORTAR_BUS_MAX_DELIVERIES=\"many\" is invalid",
        ),
    ] {
        let mut env = env;
        env.push(("PORT", "0"));
        let out = mortar_test_support::cli::run_mortar(dir.path(), &["bus", "http"], &env, b"");
        assert_eq!(out.code, 78, "{env:?}: {}", out.stderr);
        assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
        assert!(out.stderr.contains(names), "{env:?}: {}", out.stderr);
        assert!(!out.stdout.contains("listening"), "{}", out.stdout);
    }
}

/// A delivery setting `mortar bus serve` does not know is refused before
/// anything is opened, naming both choices, on the flag and in the
/// environment.
#[test]
fn bus_serve_refuses_an_unknown_delivery_and_names_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    for (args, env) in [
        (
            vec![
                "bus",
                "serve",
                "--data-dir",
                data_arg,
                "--delivery",
                "fsynced",
            ],
            vec![],
        ),
        (
            vec!["bus", "serve", "--data-dir", data_arg],
            vec![("MORTAR_BUS_DELIVERY", "fsynced")],
        ),
    ] {
        let out = mortar_test_support::cli::run_mortar(dir.path(), &args, &env, b"");
        assert_eq!(out.code, 2, "{args:?} {env:?}: {}", out.stderr);
        let first = out.stderr.lines().next().unwrap_or_default();
        assert!(
            first.contains("unknown delivery `fsynced`")
                && first.contains("`written`")
                && first.contains("`synced`"),
            "{}",
            out.stderr
        );
        assert!(!data.exists(), "nothing created for a refused start");
    }
}
