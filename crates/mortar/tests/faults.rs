//! Faults the node injects itself, as a user sees them: `mortar chaos
//! bus-outage` (an SDK publisher buffers, `/v1/bus` answers 503, nothing
//! is lost), `cut-bus` (only that service is refused), `latency` and
//! `errors` at the gateway, `faults` and `clear`, and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use mortar_sdk::bus::{Client, ClientConfig, NewMessage, Published};
use mortar_test_support::consumer::Handled;
use mortar_test_support::{RunningNode, binary, wait_for};
use serde_json::{Value, json};

/// `web` behind the gateway at `/version`; `worker` and `other` consume
/// `orders`, each in its own group, recording what they handled.
fn start(dir: &Path) -> RunningNode {
    for service in ["worker", "other"] {
        std::fs::create_dir_all(dir.join(service)).unwrap();
    }
    let fixture = binary("fixture-service");
    let consumer = |name: &str| {
        format!(
            "[services.{name}]\ncommand = [\"{}\"]\nenv = {{ FIXTURE_CONSUME = \"orders/{name}\", FIXTURE_HANDLED_DIR = \"{}\" }}\n",
            fixture.display(),
            dir.join(name).display()
        )
    };
    let manifest = format!(
        r#"
[app]
name = "faulttest"

[services.web]
command = ["{}"]
env = {{ FIXTURE_VERSION = "v1" }}

{}
{}
[bus]
topics = ["orders"]

[[gateway.routes]]
prefix = "/version"
service = "web"
public = true
"#,
        fixture.display(),
        consumer("worker"),
        consumer("other"),
    );
    std::fs::write(dir.join("mortar.toml"), manifest).unwrap();
    let node = RunningNode::start(&dir.join("mortar.toml"), &dir.join("data"));
    for service in ["web", "worker", "other"] {
        node.wait_ready(service, 1);
    }
    node
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn admin(node: &RunningNode) -> String {
    node.admin_url()
}

/// Publishes over HTTP with `token`; the status and body.
fn http_publish(node: &RunningNode, token: &str, payload: &str) -> (u16, Value, Option<String>) {
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/v1/bus/topics/orders/messages", admin(node)))
        .bearer_auth(token)
        .json(&json!({"messages": [{"payload_base64": base64(payload)}]}))
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let content_type = resp.headers().get("content-type").cloned();
    let body: Value = resp.json().unwrap_or(Value::Null);
    if status == 503 {
        assert_eq!(content_type.unwrap(), "application/problem+json", "{body}");
    }
    (status, body, retry_after)
}

/// Base64 without a dependency: payloads here are short ASCII.
fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The token the node gave `service`'s first instance.
fn instance_token(node: &RunningNode, service: &str) -> String {
    let instance = node.wait_ready(service, 1).remove(0);
    let (status, token) = node.get_text(&instance, "/env/MORTAR_NODE_TOKEN");
    assert_eq!(status, 200, "{token}");
    token
}

fn wait_handled(dir: &Path, service: &str, expected: &[String]) -> Handled {
    wait_for(
        &format!("{service} to handle {} messages", expected.len()),
        Duration::from_secs(60),
        || {
            let handled = Handled::read(&dir.join(service));
            handled
                .missing(expected.iter().map(String::as_str))
                .is_empty()
                .then_some(handled)
        },
    )
}

#[test]
fn a_bus_outage_buffers_sdk_publishes_refuses_http_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let token = node.admin_token();
    let bus_url = node.status().unwrap()["node"]["bus_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let rt = runtime();
    let mut config = ClientConfig::new(&bus_url, "faults-test", &token);
    config.outbox = Some(dir.path().join("test.outbox"));
    let client: Client = rt.block_on(Client::connect_with(config)).unwrap();
    let publish = |payload: &str| {
        rt.block_on(client.publish("orders", NewMessage::new(payload.as_bytes().to_vec())))
            .unwrap()
    };
    assert!(matches!(publish("before"), Published::Durable(_)));

    let (code, out, err) = node.cli(&["chaos", "bus-outage", "--seconds", "4"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("bus outage"), "{out}");
    let (_, listed, _) = node.cli(&["chaos", "faults"]);
    assert!(listed.contains("bus outage"), "{listed}");

    // The client's connection is dropped: its publishes go to its outbox.
    let mut sent = vec!["before".to_owned()];
    let mut n = 0;
    wait_for("a publish to be buffered", Duration::from_secs(4), || {
        n += 1;
        let payload = format!("during-{n}");
        let published = publish(&payload);
        sent.push(payload);
        (published == Published::Buffered).then_some(())
    });
    for i in 0..5 {
        let payload = format!("buffered-{i}");
        assert_eq!(
            publish(&payload),
            Published::Buffered,
            "the bus is still down"
        );
        sent.push(payload);
    }
    // The HTTP API refuses too, with Retry-After.
    let (status, body, retry_after) = http_publish(&node, &token, "http-during");
    if status == 503 {
        assert_eq!(body["status"], 503, "{body}");
        assert!(
            body["detail"].as_str().unwrap().contains("bus is down"),
            "{body}"
        );
        let secs: u64 = retry_after.expect("Retry-After").parse().unwrap();
        assert!((1..=4).contains(&secs), "{secs}");
    } else {
        // The outage ended while this machine was slow; it was accepted.
        assert_eq!(status, 200, "{body}");
        sent.push("http-during".to_owned());
    }

    // It ends by itself: HTTP works again and everything is delivered once.
    wait_for(
        "the bus to answer HTTP again",
        Duration::from_secs(30),
        || {
            let (status, _, _) = http_publish(&node, &token, "http-after");
            (status == 200).then_some(())
        },
    );
    sent.push("http-after".to_owned());
    // At least once: a delivery cut off before its ack comes again.
    wait_handled(dir.path(), "worker", &sent);
    wait_handled(dir.path(), "other", &sent);
    let (_, listed, _) = node.cli(&["chaos", "faults"]);
    assert!(listed.contains("no injected faults"), "{listed}");
}

#[test]
fn cut_bus_refuses_only_that_services_instances_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let worker = instance_token(&node, "worker");
    let other = instance_token(&node, "other");
    let bus_url = node.status().unwrap()["node"]["bus_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let rt = runtime();
    let connect = |token: &str| rt.block_on(Client::connect(&bus_url, "faults-test", token));

    let (code, out, err) = node.cli(&["chaos", "cut-bus", "worker", "--seconds", "600"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("worker cut off from the bus"), "{out}");

    let (status, body, retry_after) = http_publish(&node, &worker, "from-worker");
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("worker is cut off"),
        "{body}"
    );
    assert!(retry_after.unwrap().parse::<u64>().unwrap() > 500);
    let refused = connect(&worker).unwrap_err().to_string();
    assert!(refused.contains("worker is cut off"), "{refused}");

    let (status, body, _) = http_publish(&node, &other, "from-other");
    assert_eq!(status, 200, "{body}");
    connect(&other).unwrap();
    // The other consumer keeps working; the cut one gets it afterwards.
    let sent = vec!["from-other".to_owned()];
    wait_handled(dir.path(), "other", &sent);

    let (code, out, err) = node.cli(&["chaos", "clear"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("cleared #"), "{out}");
    let (status, body, _) = http_publish(&node, &worker, "from-worker");
    assert_eq!(status, 200, "{body}");
    connect(&worker).unwrap();
    let sent = vec!["from-other".to_owned(), "from-worker".to_owned()];
    wait_handled(dir.path(), "worker", &sent);
    wait_handled(dir.path(), "other", &sent);

    // A short cut ends by itself.
    let (code, out, err) = node.cli(&["chaos", "cut-bus", "other", "--seconds", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_for("the cut to expire", Duration::from_secs(30), || {
        (http_publish(&node, &other, "after-expiry").0 == 200).then_some(())
    });
}

#[test]
fn latency_and_errors_show_at_the_gateway_and_stop_after_clear_or_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let url = format!("{}/version", node.gateway_url());
    let http = reqwest::blocking::Client::new();
    let get = || {
        let started = Instant::now();
        let resp = http.get(&url).send().unwrap();
        let status = resp.status().as_u16();
        let injected = resp.headers().get("x-mortar-fault").is_some();
        let body = resp.text().unwrap();
        (status, body, injected, started.elapsed())
    };
    wait_for(
        "the gateway to route to web",
        Duration::from_secs(30),
        || (get().0 == 200).then_some(()),
    );

    // Latency: every request takes at least the injected delay.
    let (code, out, err) =
        node.cli(&["chaos", "latency", "web", "--ms", "400", "--seconds", "600"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("latency +400 ms on 100% of web"), "{out}");
    for _ in 0..3 {
        let (status, body, _, took) = get();
        assert_eq!((status, body.as_str()), (200, "v1"));
        assert!(took >= Duration::from_millis(400), "{took:?}");
    }
    let (code, out, _) = node.cli(&["chaos", "clear"]);
    assert_eq!(code, 0);
    assert!(out.contains("cleared #"), "{out}");
    let (_, listed, _) = node.cli(&["chaos", "faults", "--json"]);
    assert_eq!(serde_json::from_str::<Value>(&listed).unwrap(), json!([]));

    // Errors: injected 503s, marked, until cleared.
    let (code, out, err) = node.cli(&[
        "chaos",
        "errors",
        "web",
        "--rate",
        "100%",
        "--seconds",
        "600",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    for _ in 0..3 {
        let (status, body, injected, _) = get();
        assert_eq!(status, 503, "{body}");
        assert!(injected, "marked as injected");
        let problem: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            problem["type"], "urn:mortar:problem:injected-fault",
            "{problem}"
        );
        assert_eq!(problem["service"], "web");
    }
    node.cli(&["chaos", "clear"]);
    assert_eq!(get().0, 200);

    // A rate lets some through; a short fault ends by itself.
    let (code, out, err) =
        node.cli(&["chaos", "errors", "web", "--rate", "50", "--seconds", "600"]);
    assert_eq!(code, 0, "{out}{err}");
    let statuses: BTreeSet<u16> = (0..60).map(|_| get().0).collect();
    assert_eq!(statuses, BTreeSet::from([200, 503]), "about half fail");
    let (code, out, err) = node.cli(&[
        "chaos",
        "errors",
        "web",
        "--rate",
        "100",
        "--seconds",
        "600",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, listed, _) = node.cli(&["chaos", "faults", "--json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "the new one replaced the old: {listed}"
    );
    assert_eq!(listed[0]["percent"], 100.0, "{listed}");
    let (code, out, err) = node.cli(&["chaos", "errors", "web", "--rate", "100", "--seconds", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_for("the errors to expire", Duration::from_secs(30), || {
        (get().0 == 200).then_some(())
    });
    assert_eq!(get().0, 200);

    // Bad input: one line, exit 1, nothing injected.
    for (args, expected) in [
        (
            &["chaos", "errors", "ghost", "--rate", "20", "--seconds", "5"][..],
            "unknown service \"ghost\"",
        ),
        (
            &["chaos", "errors", "web", "--rate", "150", "--seconds", "5"],
            "--rate must be more than 0 and at most 100",
        ),
        (
            &["chaos", "errors", "web", "--rate", "lots", "--seconds", "5"],
            "--rate must be a percentage",
        ),
        (
            &["chaos", "latency", "web", "--ms", "0", "--seconds", "5"],
            "--ms must be from 1",
        ),
        (
            &["chaos", "cut-bus", "web", "--seconds", "0"],
            "--seconds must be more than 0",
        ),
        (
            &["chaos", "bus-outage", "--seconds=-1"],
            "--seconds must be more than 0",
        ),
    ] {
        let (code, out, err) = node.cli(args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let (_, listed, _) = node.cli(&["chaos", "faults", "--json"]);
    assert_eq!(serde_json::from_str::<Value>(&listed).unwrap(), json!([]));
}
