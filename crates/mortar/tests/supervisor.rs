//! `mortar up` running real services: readiness, restarts, status, logs,
//! ordered shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use mortar_test_support::{RunningNode, binary, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

fn write_manifest(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("mortar.toml");
    std::fs::write(&path, body).unwrap();
    path
}

fn shop(dir: &Path) -> PathBuf {
    write_manifest(
        dir,
        &format!(
            r#"
[app]
name = "shop"

[services.catalog]
command = ["{}"]
instances = 2
grace_period = "5s"
"#,
            binary("catalog").display()
        ),
    )
}

fn alive(pid: u64) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

#[test]
fn killed_instance_is_restarted_and_status_shows_it_ready_again() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = shop(dir.path());
    let mut node = RunningNode::start(&manifest, &dir.path().join("data"));
    let ready = node.wait_ready("catalog", 2);
    for instance in &ready {
        assert_eq!(instance["restarts"], 0, "clean start: {instance}");
    }

    // Every instance serves the catalog on its own ephemeral port.
    let ports: Vec<u64> = ready.iter().map(|i| i["port"].as_u64().unwrap()).collect();
    assert_ne!(ports[0], ports[1]);
    for instance in &ready {
        let (status, page) = node.get_json(instance, "/v1/products");
        assert_eq!(status, 200);
        assert!(!page["items"].as_array().unwrap().is_empty());
    }

    let victim = ready.iter().find(|i| i["id"] == "catalog-1").unwrap();
    let old_pid = victim["pid"].as_u64().unwrap();
    kill(Pid::from_raw(old_pid as i32), Signal::SIGKILL).unwrap();

    let restarted = wait_for(
        "catalog-1 to be ready with a new process",
        Duration::from_secs(60),
        || {
            node.instances("catalog").into_iter().find(|i| {
                i["id"] == "catalog-1"
                    && i["state"] == "ready"
                    && i["pid"].as_u64() != Some(old_pid)
            })
        },
    );
    assert_eq!(restarted["restarts"], 1);
    assert!(
        restarted["last_exit"].as_str().unwrap().contains("SIGKILL"),
        "{restarted}"
    );
    let (status, _) = node.get_json(&restarted, "/v1/products/1");
    assert_eq!(status, 200);

    // The human status view shows it too.
    let (code, text, _) = node.cli(&["status"]);
    assert_eq!(code, 0);
    assert!(text.contains("catalog") && text.contains("2/2"), "{text}");

    // The restart is in the merged log, said by the supervisor.
    let said = node.json_lines().into_iter().any(|l| {
        l["service"] == "mortar"
            && l["msg"].as_str().unwrap_or("").contains("restarting")
            && l["managed_instance"] == "catalog-1"
    });
    assert!(said, "the restart is logged: {:#?}", node.output());

    let pids: Vec<u64> = node
        .instances("catalog")
        .iter()
        .map(|i| i["pid"].as_u64().unwrap())
        .collect();
    let exit = node.stop();
    assert!(exit.success(), "node exits 0 after SIGTERM: {exit:?}");
    for pid in pids {
        assert!(!alive(pid), "instance {pid} was stopped with the node");
    }
}

#[test]
fn logs_are_merged_tagged_json_and_mortar_logs_filters_by_service() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = shop(dir.path());
    let node = RunningNode::start(&manifest, &dir.path().join("data"));
    node.wait_ready("catalog", 2);

    // Every line the node prints is a JSON object with the contract fields.
    let output = node.output();
    let lines = node.json_lines();
    assert_eq!(lines.len(), output.len(), "non-JSON output: {output:#?}");
    for line in &lines {
        for field in ["ts", "level", "msg", "service", "instance"] {
            assert!(line.get(field).is_some(), "{field} missing in {line}");
        }
    }
    let instances: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter(|l| l["service"] == "catalog")
        .filter_map(|l| l["instance"].as_str())
        .collect();
    assert_eq!(
        instances.into_iter().collect::<Vec<_>>(),
        ["catalog-1", "catalog-2"]
    );

    let (code, text, stderr) = node.cli(&["logs", "catalog", "--tail", "1000"]);
    assert_eq!(code, 0, "{stderr}");
    let logged: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!logged.is_empty());
    assert!(logged.iter().all(|l| l["service"] == "catalog"));
    assert!(logged.iter().any(|l| l["msg"] == "listening"));

    let (code, _, stderr) = node.cli(&["logs", "nosuch"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("unknown service \"nosuch\"") && stderr.contains("catalog"),
        "{stderr}"
    );
}

#[test]
fn services_start_in_dependency_order_and_stop_in_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = binary("fixture-service");
    let manifest = write_manifest(
        dir.path(),
        &format!(
            r#"
[app]
name = "ordered"

[services.front]
command = ["{f}"]
depends_on = ["back"]

[services.back]
command = ["{f}"]
"#,
            f = fixture.display()
        ),
    );
    let mut node = RunningNode::start(&manifest, &dir.path().join("data"));
    node.wait_ready("front", 1);
    node.wait_ready("back", 1);
    assert!(node.stop().success());

    let lines = node.json_lines();
    let position = |service: &str, msg: &str| {
        lines
            .iter()
            .position(|l| {
                l["service"] == "mortar"
                    && l["msg"] == msg
                    && l["managed_instance"] == format!("{service}-1")
            })
            .unwrap_or_else(|| panic!("no {msg:?} for {service}: {lines:#?}"))
    };
    assert!(
        position("back", "instance ready") < position("front", "instance launched"),
        "back is ready before front starts"
    );
    assert!(
        position("front", "instance stopped") < position("back", "instance stopped"),
        "front stops before back"
    );
}

#[test]
fn a_service_that_keeps_crashing_is_marked_failed_and_the_node_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = binary("fixture-service");
    let manifest = write_manifest(
        dir.path(),
        &format!(
            r#"
[app]
name = "crashy"

[services.crasher]
command = ["{f}"]
env = {{ FIXTURE_EXIT_AT_START = "3" }}

[services.crasher.restart]
initial_backoff = "10ms"
max_backoff = "40ms"
max_rapid_crashes = 3

[services.misconfigured]
command = ["{f}"]
env = {{ FIXTURE_EXIT_AT_START = "78" }}

[services.healthy]
command = ["{f}"]
"#,
            f = fixture.display()
        ),
    );
    let node = RunningNode::start(&manifest, &dir.path().join("data"));
    node.wait_ready("healthy", 1);
    let status = wait_for(
        "crasher and misconfigured to be failed",
        Duration::from_secs(60),
        || {
            let s = node.status()?;
            let state = |name: &str| {
                s["services"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|x| x["name"] == name)
                    .unwrap()["state"]
                    .clone()
            };
            (state("crasher") == "failed" && state("misconfigured") == "failed").then_some(s)
        },
    );
    let crasher = &status["services"][0]["instances"][0];
    assert_eq!(
        crasher["restarts"], 2,
        "3 crashes = 2 restarts, then give up: {crasher}"
    );
    assert_eq!(crasher["last_exit"], "exit status 3");
    let misconfigured = &status["services"][1]["instances"][0];
    assert_eq!(
        misconfigured["restarts"], 0,
        "a configuration error is not retried"
    );

    let lines = node.json_lines();
    assert!(
        lines
            .iter()
            .any(|l| l["msg"].as_str().unwrap_or("").contains("giving up"))
    );
    assert!(lines.iter().any(|l| {
        l["msg"]
            .as_str()
            .unwrap_or("")
            .contains("configuration error")
    }));
    // The healthy service is unaffected.
    assert_eq!(node.instances("healthy")[0]["state"], "ready");
}

#[test]
fn admin_api_answers_problem_json_and_publishes_openapi() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = shop(dir.path());
    let node = RunningNode::start(&manifest, &dir.path().join("data"));
    node.wait_ready("catalog", 2);
    let admin = node.status().unwrap()["node"]["admin_url"]
        .as_str()
        .unwrap()
        .to_owned();

    let resp = node
        .admin_http()
        .get(format!("{admin}/v1/services/nope"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let problem: Value = resp.json().unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("catalog"),
        "{problem}"
    );

    // A report with a bad body changes nothing and says what is wrong.
    let client = node.admin_http();
    let resp = client
        .post(format!("{admin}/v1/instances/catalog-1/endpoint"))
        .header("content-type", "application/json")
        .body(r#"{"port":"eighty"}"#)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 422);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    // A stale report (wrong pid) is refused with 409.
    let resp = client
        .post(format!("{admin}/v1/instances/catalog-1/endpoint"))
        .json(&serde_json::json!({"address": "127.0.0.1", "port": 1, "pid": 1}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 409);
    assert_eq!(node.instances("catalog")[0]["state"], "ready");

    let resp = client
        .get(format!("{admin}/v1/openapi.json"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().unwrap();
    assert!(doc["paths"]["/v1/status"].is_object());

    let metrics = node
        .admin_http()
        .get(format!("{admin}/metrics"))
        .send()
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().unwrap();
    assert!(
        text.contains(r#"mortar_instances{service="catalog",state="ready"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"mortar_instance_restarts_total{service="catalog",instance="catalog-1"} 0"#
        ),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"));
}

#[test]
fn one_service_can_be_stopped_and_started_while_the_node_runs() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = shop(dir.path());
    let node = RunningNode::start(&manifest, &dir.path().join("data"));
    let ready = node.wait_ready("catalog", 2);
    let pids: Vec<u64> = ready.iter().map(|i| i["pid"].as_u64().unwrap()).collect();

    let (code, out, err) = node.cli(&["stop", "catalog"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("catalog: stopped (0/2 ready)"), "{out}");
    for pid in &pids {
        assert!(!alive(*pid), "instance {pid} is stopped");
    }
    assert!(
        node.instances("catalog")
            .iter()
            .all(|i| i["state"] == "stopped")
    );

    let (code, out, err) = node.cli(&["start", "catalog"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("catalog: running (2/2 ready)"), "{out}");

    let (code, _, err) = node.cli(&["stop", "nosuch"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown service \"nosuch\""), "{err}");
}

#[test]
fn instances_drain_and_exit_when_the_node_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = shop(dir.path());
    let mut node = RunningNode::start(&manifest, &dir.path().join("data"));
    let pids: Vec<u64> = node
        .wait_ready("catalog", 2)
        .iter()
        .map(|i| i["pid"].as_u64().unwrap())
        .collect();
    // SIGKILL: the node gets no chance to stop anything itself.
    kill(Pid::from_raw(node.pid() as i32), Signal::SIGKILL).unwrap();
    node.forget();
    for pid in pids {
        wait_for(
            &format!("orphaned instance {pid} to exit"),
            Duration::from_secs(30),
            || (!alive(pid)).then_some(()),
        );
    }
}
