//! Autoscaling on queue backlog, with real processes: a burst raises the
//! consumer count to the max, the backlog drains, the count falls back to
//! the min after the stabilization window — while messages keep flowing,
//! so scale-in happens with work in hand — and every message is handled
//! exactly once (scale-in drains a consumer instead of handing its
//! messages to another).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mortar_test_support::consumer::Handled;
use mortar_test_support::{RunningNode, binary, wait_for};
use serde_json::{Value, json};

const MIN: usize = 1;
const MAX: usize = 3;
const BURST: u64 = 600;

fn write_manifest(dir: &Path, handled: &Path) {
    std::fs::write(
        dir.join("mortar.toml"),
        format!(
            r#"
[app]
name = "scaletest"

[services.worker]
command = ["{}"]
grace_period = "30s"
env = {{ FIXTURE_CONSUME = "jobs/workers", FIXTURE_WORK_MS = "200", FIXTURE_CONCURRENCY = "4", FIXTURE_HANDLED_DIR = "{}" }}

[services.worker.autoscale]
min = {MIN}
max = {MAX}
subscription = {{ topic = "jobs", group = "workers" }}
target_backlog = 50
scale_down_window = "3s"

[bus]
topics = ["jobs"]
ack_deadline = "120s"
"#,
            binary("fixture-service").display(),
            handled.display(),
        ),
    )
    .unwrap();
}

/// Publishes through the node's bus HTTP API with the admin's credentials.
fn publish(http: &reqwest::blocking::Client, admin: &str, seqs: std::ops::Range<u64>) {
    let messages: Vec<Value> = seqs.map(|n| json!({ "payload": n })).collect();
    let answer = http
        .post(format!("{admin}/v1/bus/topics/jobs/messages"))
        .json(&json!({ "messages": messages }))
        .send()
        .unwrap();
    assert!(answer.status().is_success(), "publish: {}", answer.status());
}

fn metric(http: &reqwest::blocking::Client, admin: &str, series: &str) -> Option<f64> {
    let text = http
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

/// Instances of `worker` that are not stopped (running, starting or draining).
fn live_instances(node: &RunningNode) -> usize {
    node.instances("worker")
        .iter()
        .filter(|i| i["state"] != "stopped")
        .count()
}

#[test]
fn a_burst_scales_consumers_up_to_max_and_back_to_min_with_every_message_handled_once() {
    let dir = tempfile::tempdir().unwrap();
    let handled_dir = dir.path().join("handled");
    std::fs::create_dir_all(&handled_dir).unwrap();
    write_manifest(dir.path(), &handled_dir);
    let node = RunningNode::start(&dir.path().join("mortar.toml"), &dir.path().join("data"));
    node.wait_ready("worker", MIN);
    let admin = node.admin_url();
    let http = node.admin_http();

    publish(&http, &admin, 0..BURST);
    println!("published a burst of {BURST}");
    wait_for(
        "the consumer count to reach the max",
        Duration::from_secs(120),
        || (node.ready_count("worker") == MAX).then_some(()),
    );
    println!("scaled up to {MAX} ready consumers");

    // Keep messages flowing while the count falls back, so consumers are
    // stopped with messages in hand (each holds up to 4, 200 ms of work each).
    let next = Arc::new(AtomicU64::new(BURST));
    let done = Arc::new(AtomicBool::new(false));
    let trickle = {
        let (admin, next, done) = (admin.clone(), next.clone(), done.clone());
        let http = http.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let from = next.load(Ordering::SeqCst);
                // 12 a second: below what one consumer handles (4 at a
                // time, 200 ms each), so the count can fall to the min.
                publish(&http, &admin, from..from + 3);
                next.store(from + 3, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    wait_for(
        "the consumer count to fall back to the min",
        Duration::from_secs(180),
        || (live_instances(&node) == MIN).then_some(()),
    );
    println!("scaled back down to {MIN}");
    // A little more traffic on the remaining consumer, then stop publishing.
    std::thread::sleep(Duration::from_secs(1));
    done.store(true, Ordering::SeqCst);
    trickle.join().unwrap();
    let published = next.load(Ordering::SeqCst);

    let backlog = r#"mortar_bus_backlog{topic="jobs",group="workers"}"#;
    wait_for("the backlog to drain", Duration::from_secs(120), || {
        (metric(&http, &admin, backlog) == Some(0.0)).then_some(())
    });
    let desired = metric(
        &http,
        &admin,
        r#"mortar_autoscale_desired_instances{service="worker"}"#,
    );
    assert_eq!(desired, Some(MIN as f64), "desired instances once drained");
    // Scaling actions in both directions were counted.
    let ups = metric(
        &http,
        &admin,
        r#"mortar_autoscale_events_total{service="worker",direction="up"}"#,
    );
    let downs = metric(
        &http,
        &admin,
        r#"mortar_autoscale_events_total{service="worker",direction="down"}"#,
    );
    assert!(ups.is_some_and(|n| n >= 1.0), "{ups:?}");
    assert!(downs.is_some_and(|n| n >= 1.0), "{downs:?}");

    let decisions: Vec<Value> = node
        .json_lines()
        .into_iter()
        .filter(|l| l["msg"] == "autoscale decision")
        .collect();
    for d in &decisions {
        println!(
            "decision: backlog={} target={} current={} desired={} decided={} action={}",
            d["backlog"],
            d["target_backlog"],
            d["current"],
            d["desired"],
            d["decided"],
            d["action"]
        );
    }
    assert!(
        decisions
            .iter()
            .any(|d| d["action"] == "scale_up" && d["decided"] == MAX)
    );
    assert!(
        decisions
            .iter()
            .any(|d| d["action"] == "scale_down" && d["decided"] == MIN)
    );

    let handled = Handled::read(&handled_dir);
    let expected: Vec<String> = (0..published).map(|n| n.to_string()).collect();
    let missing = handled.missing(expected.iter().map(String::as_str));
    let duplicates = handled.duplicates();
    println!(
        "published {published}, handled {} distinct by {} processes, missing {}, duplicates {}, redelivered {}",
        handled.counts.len(),
        handled.files,
        missing.len(),
        duplicates.len(),
        handled.redelivered
    );
    if !duplicates.is_empty() || handled.redelivered > 0 {
        // What the node saw: restarts, kills, failed probes.
        for line in node.json_lines() {
            if line["level"] == "warn" || line["level"] == "error" {
                println!("node: {line}");
            }
        }
        for (payload, _) in &duplicates {
            println!("{payload}: {:?}", handled.records.get(*payload));
        }
    }
    assert!(missing.is_empty(), "never handled: {missing:?}");
    assert!(
        duplicates.is_empty(),
        "handled more than once: {duplicates:?}"
    );
    assert_eq!(handled.redelivered, 0, "scale-in caused redeliveries");
    assert!(
        handled.files >= MAX,
        "only {} consumer processes ran",
        handled.files
    );
}
