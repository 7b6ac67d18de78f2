//! The gateway in front of real services: no failed request while an
//! instance is killed, and cached public pages while the service is stopped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use mortar_test_support::{RunningNode, binary, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

fn start(dir: &Path, instances: u32) -> RunningNode {
    let manifest = dir.join("mortar.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
[app]
name = "edge"

[services.catalog]
command = ["{}"]
instances = {instances}

[[gateway.routes]]
prefix = "/v1/products"
service = "catalog"
public = true
"#,
            binary("catalog").display()
        ),
    )
    .unwrap();
    RunningNode::start(&manifest, &dir.join("data"))
}

fn gateway_url(node: &RunningNode) -> String {
    node.status().unwrap()["node"]["gateway_url"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn killing_one_of_three_instances_under_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), 3);
    let ready = node.wait_ready("catalog", 3);
    let gateway = gateway_url(&node);
    wait_for(
        "the gateway to route to catalog",
        Duration::from_secs(30),
        || {
            reqwest::blocking::get(format!("{gateway}/v1/products/1"))
                .ok()
                .filter(|r| r.status() == 200)
        },
    );

    // Four clients that never retry, each with its own connection.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (stop, ok, failed, errors) =
                (stop.clone(), ok.clone(), failed.clone(), errors.clone());
            let url = format!("{gateway}/v1/products/{}", i % 3 + 1);
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                while !stop.load(Ordering::Relaxed) {
                    match client.get(&url).header("cache-control", "no-cache").send() {
                        Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(r) => {
                            errors.lock().unwrap().push(format!(
                                "{}: {}",
                                r.status(),
                                r.text().unwrap_or_default()
                            ));
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            errors.lock().unwrap().push(e.to_string());
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    wait_for("some load", Duration::from_secs(30), || {
        (ok.load(Ordering::Relaxed) > 200).then_some(())
    });
    let victim = ready.iter().find(|i| i["id"] == "catalog-2").unwrap();
    kill(
        Pid::from_raw(victim["pid"].as_u64().unwrap() as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    let before = ok.load(Ordering::Relaxed);
    wait_for(
        "load to continue after the kill",
        Duration::from_secs(60),
        || (ok.load(Ordering::Relaxed) > before + 500).then_some(()),
    );
    node.wait_ready("catalog", 3);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("through the gateway while killing catalog-2: {ok} ok, {failed} failed");
    assert_eq!(failed, 0, "failed requests: {:?}", errors.lock().unwrap());
}

#[test]
fn cached_public_pages_are_served_while_the_service_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), 1);
    node.wait_ready("catalog", 1);
    let gateway = gateway_url(&node);
    let page: Value = wait_for(
        "a first page through the gateway",
        Duration::from_secs(30),
        || {
            let r = reqwest::blocking::get(format!("{gateway}/v1/products?limit=3")).ok()?;
            (r.status() == 200).then(|| r.json().unwrap())
        },
    );
    assert_eq!(page["items"].as_array().unwrap().len(), 3);

    let (code, _, err) = node.cli(&["stop", "catalog"]);
    assert_eq!(code, 0, "{err}");

    // Fresh from the cache at first; once max-age has passed the upstream is
    // asked, fails, and the stale copy stands in (stale-if-error).
    let resp = wait_for(
        "the stale copy to stand in",
        Duration::from_secs(30),
        || {
            let r = reqwest::blocking::get(format!("{gateway}/v1/products?limit=3")).unwrap();
            assert_eq!(
                r.status(),
                200,
                "the page is always answered from the cache"
            );
            (r.headers()["x-mortar-cache"] == "stale").then_some(r)
        },
    );
    let cached: Value = resp.json().unwrap();
    assert_eq!(cached, page);

    // A page that was never cached gets a clear 503.
    let resp = reqwest::blocking::get(format!("{gateway}/v1/products/5")).unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");

    let (code, _, err) = node.cli(&["start", "catalog"]);
    assert_eq!(code, 0, "{err}");
    let resp = wait_for("fresh pages again", Duration::from_secs(30), || {
        let r = reqwest::blocking::get(format!("{gateway}/v1/products/5")).ok()?;
        (r.status() == 200).then_some(r)
    });
    assert!(
        resp.headers()
            .get("x-mortar-cache")
            .is_none_or(|v| v != "stale")
    );
}

#[test]
fn unknown_paths_get_problem_json_naming_the_routes() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), 1);
    node.wait_ready("catalog", 1);
    let resp = reqwest::blocking::get(format!("{}/v2/nothing", gateway_url(&node))).unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let problem: Value = resp.json().unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("/v1/products"),
        "{problem}"
    );
}
