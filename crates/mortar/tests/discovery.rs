//! Discovery by name: the node's registry and DNS follow instances as they
//! come and go, and other processes can register over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use mortar_test_support::dns::query;
use mortar_test_support::{RunningNode, binary, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

fn start(dir: &Path) -> RunningNode {
    let manifest = dir.join("mortar.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
[app]
name = "disc"

[services.web]
command = ["{}"]
instances = 3
"#,
            binary("fixture-service").display()
        ),
    )
    .unwrap();
    RunningNode::start(&manifest, &dir.join("data"))
}

fn dns_addr(node: &RunningNode) -> SocketAddr {
    node.status().unwrap()["node"]["dns_addr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn ports(instances: &[Value]) -> Vec<u16> {
    let mut ports: Vec<u16> = instances
        .iter()
        .map(|i| i["port"].as_u64().unwrap() as u16)
        .collect();
    ports.sort_unstable();
    ports
}

#[test]
fn dns_finds_every_instance_and_follows_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let ready = node.wait_ready("web", 3);
    let dns = dns_addr(&node);

    let srv = wait_for(
        "SRV to list all three instances",
        Duration::from_secs(30),
        || {
            let answer = query(dns, "_http._tcp.web.disc.mortar.", RecordType::SRV);
            (answer.srv_ports() == ports(&ready)).then_some(answer)
        },
    );
    assert_eq!(srv.code, ResponseCode::NoError);
    assert_eq!(
        srv.additionals.len(),
        3,
        "targets resolve in the additional section"
    );
    let a = query(dns, "web.disc.mortar.", RecordType::A);
    assert_eq!(a.a_records().len(), 3);
    assert!(a.a_records().iter().all(|ip| ip.is_loopback()));
    let one = query(dns, "web-2.web.disc.mortar.", RecordType::A);
    assert_eq!(one.a_records().len(), 1);

    // Kill one instance: it leaves the answers, and its restart joins them.
    let victim = ready.iter().find(|i| i["id"] == "web-1").unwrap();
    let old_port = victim["port"].as_u64().unwrap() as u16;
    kill(
        Pid::from_raw(victim["pid"].as_u64().unwrap() as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    let restarted = wait_for("web-1 to come back", Duration::from_secs(60), || {
        let now = node.instances("web");
        let all_ready = now.iter().all(|i| i["state"] == "ready");
        let new_port = now.iter().find(|i| i["id"] == "web-1")?["port"].as_u64()? as u16;
        (all_ready && new_port != old_port).then_some(now)
    });
    wait_for("DNS to follow the restart", Duration::from_secs(30), || {
        let answer = query(dns, "_http._tcp.web.disc.mortar.", RecordType::SRV);
        (answer.srv_ports() == ports(&restarted)).then_some(())
    });

    assert_eq!(
        query(dns, "nosuch.disc.mortar.", RecordType::A).code,
        ResponseCode::NXDomain
    );
    assert_eq!(
        query(dns, "example.com.", RecordType::A).code,
        ResponseCode::Refused
    );
}

#[test]
fn registry_http_api_registers_under_a_lease_and_watches() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    node.wait_ready("web", 3);
    let admin = node.status().unwrap()["node"]["admin_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let dns = dns_addr(&node);
    let http = node.admin_http();

    // A process the node does not run registers itself with a 2 s lease.
    let resp = http
        .post(format!("{admin}/v1/registry/instances"))
        .json(&json!({"id": "ext-1", "service": "legacy", "port": 9999, "ttl_ms": 2000}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 201);
    let answer = query(dns, "_http._tcp.legacy.disc.mortar.", RecordType::SRV);
    assert_eq!(answer.srv_ports(), [9999]);

    // A blocking query returns at once without an index, then waits for a change.
    let now: Value = http
        .get(format!("{admin}/v1/registry/services/legacy"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(now["instances"].as_array().unwrap().len(), 1);
    let index = now["index"].as_u64().unwrap();
    let watcher = {
        let http = http.clone();
        let url = format!("{admin}/v1/registry/services/legacy?index={index}&wait_ms=20000");
        std::thread::spawn(move || http.get(url).send().unwrap().json::<Value>().unwrap())
    };

    // Without heartbeats the lease runs out and the instance disappears.
    let changed = watcher.join().unwrap();
    assert!(changed["index"].as_u64().unwrap() > index);
    wait_for("the lease to expire", Duration::from_secs(30), || {
        (query(dns, "legacy.disc.mortar.", RecordType::A).code == ResponseCode::NXDomain)
            .then_some(())
    });
    let resp = http
        .put(format!("{admin}/v1/registry/instances/ext-1/heartbeat"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");

    // Bad registrations are refused with a reason and change nothing.
    let resp = http
        .post(format!("{admin}/v1/registry/instances"))
        .json(&json!({"id": "Bad_Id", "service": "legacy", "port": 1, "ttl_ms": 2000}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 422);
    let problem: Value = resp.json().unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("instance id"),
        "{problem}"
    );
    let all: Value = http
        .get(format!("{admin}/v1/registry/instances"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .all(|i| i["service"] == "web")
    );
}
