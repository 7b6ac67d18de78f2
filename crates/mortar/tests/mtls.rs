//! Service-to-service mTLS with real processes: instances accept only
//! callers with a certificate from the node's CA, only the callers the
//! manifest lists, and certificates renew without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use mortar_test_support::tls::{
    get_as, identity_for, request_without_certificate, served_certificate,
};
use mortar_test_support::{RunningNode, binary, wait_for};
use mortar_tls::InstanceTls;

fn start(dir: &Path, env: &[(&str, &str)]) -> RunningNode {
    let manifest = dir.join("mortar.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
[app]
name = "shop"

[services.catalog]
command = ["{catalog}"]
callers = ["gateway"]

[services.ordering]
command = ["{ordering}"]
callers = ["gateway"]

[[gateway.routes]]
prefix = "/v1/products"
service = "catalog"
public = true
"#,
            catalog = binary("catalog").display(),
            ordering = binary("ordering").display(),
        ),
    )
    .unwrap();
    RunningNode::start_with_env(&manifest, &dir.join("data"), env)
}

fn through_gateway(node: &RunningNode, path: &str) -> u16 {
    let gateway = node.gateway_url();
    reqwest::blocking::get(format!("{gateway}{path}"))
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[test]
fn only_certified_callers_listed_in_the_manifest_get_in() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[]);
    let catalog = node.wait_ready("catalog", 1).remove(0);
    node.wait_ready("ordering", 1);
    let data = node.data_dir().to_owned();

    // The gateway is an allowed caller: the shop works end to end.
    wait_for(
        "the gateway to reach catalog",
        Duration::from_secs(30),
        || (through_gateway(&node, "/v1/products/1") == 200).then_some(()),
    );

    // No certificate: the handshake fails, nothing is served.
    let as_gateway = identity_for(&data, "shop", "gateway", &dir.path().join("gw"));
    let refused = request_without_certificate(&as_gateway, &catalog);
    assert!(
        refused.is_err(),
        "answered without a client certificate: {refused:?}"
    );
    // Plain HTTP gets no HTTP answer either.
    let url = mortar_test_support::node::instance_url(&catalog);
    let plain = reqwest::blocking::get(format!("{url}/v1/products/1"));
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");

    // A certificate from the node's CA, for a service of the app that the
    // manifest does not list as a caller of catalog: 403, problem+json.
    let as_ordering = identity_for(&data, "shop", "ordering", &dir.path().join("ord"));
    let (code, body) = get_as(&as_ordering, &catalog, "/v1/products/1").unwrap();
    assert_eq!(code, 403, "{body}");
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["status"], 403);
    assert_eq!(problem["caller"], "ordering");
    assert!(
        problem["detail"].as_str().unwrap().contains("callers"),
        "{problem}"
    );

    // The listed caller gets in.
    let (code, body) = get_as(&as_gateway, &catalog, "/v1/products/1").unwrap();
    assert_eq!(code, 200, "{body}");

    // A certificate for the right name from another CA is refused at the
    // handshake.
    let foreign = tempfile::tempdir().unwrap();
    let impostor = identity_for(
        foreign.path(),
        "shop",
        "gateway",
        &foreign.path().join("gw"),
    );
    let impostor = InstanceTls {
        ca: as_gateway.ca.clone(),
        ..impostor
    };
    let refused = get_as(&impostor, &catalog, "/v1/products/1");
    assert!(
        refused.is_err(),
        "a foreign CA's certificate got in: {refused:?}"
    );
}

#[test]
fn certificates_renew_without_restarting_anything() {
    let dir = tempfile::tempdir().unwrap();
    // Renewed at two thirds: every 2 s.
    let node = start(dir.path(), &[("MORTAR_CERT_LIFETIME", "3s")]);
    let catalog = node.wait_ready("catalog", 1).remove(0);
    let data = node.data_dir().to_owned();
    let as_gateway = identity_for(&data, "shop", "gateway", &dir.path().join("gw"));
    let first = served_certificate(&as_gateway, &catalog);

    // Past the first certificate's expiry.
    std::thread::sleep(Duration::from_millis(4500));
    let second = served_certificate(&as_gateway, &catalog);
    assert_ne!(
        first, second,
        "the instance still serves its first certificate"
    );

    // Same process, still ready to the node's probes (the node's own
    // certificate renewed too), still reachable through the gateway.
    let now = node.wait_ready("catalog", 1).remove(0);
    assert_eq!(now["pid"], catalog["pid"], "the instance was restarted");
    assert_eq!(now["restarts"], 0);
    let (code, _) = node.get_json(&now, "/v1/products/1");
    assert_eq!(code, 200);
    wait_for(
        "the gateway to reach catalog",
        Duration::from_secs(10),
        || (through_gateway(&node, "/v1/products/1") == 200).then_some(()),
    );
}

/// The bus's answer to a `Hello` carrying `token`.
fn bus_hello(bus_url: &str, token: &str) -> mortar_bus_proto::Frame {
    use futures::{SinkExt, StreamExt};
    use mortar_bus_proto::{BusCodec, Frame, Hello};
    let addr = bus_url.trim_start_matches("mortar://").to_owned();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut framed = tokio_util::codec::Framed::new(tcp, BusCodec::new(1 << 20));
            framed
                .send(Frame::Hello(Hello::new("test", token)))
                .await
                .unwrap();
            framed.next().await.unwrap().unwrap()
        })
}

#[test]
fn node_apis_refuse_requests_without_the_credentials_the_node_issued() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[]);
    node.wait_ready("catalog", 1);
    let admin = node.admin_url();
    let anonymous = reqwest::blocking::Client::new();
    for path in [
        "/v1/status",
        "/v1/logs",
        "/v1/registry/services/catalog",
        "/v1/bus/stats",
    ] {
        for token in [None, Some("not-a-token-the-node-issued")] {
            let mut req = anonymous.get(format!("{admin}{path}"));
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            let resp = req.send().unwrap();
            assert_eq!(resp.status(), 401, "{path} with {token:?}");
            assert_eq!(resp.headers()["content-type"], "application/problem+json");
            let problem: serde_json::Value = resp.json().unwrap();
            assert_eq!(problem["status"], 401);
            assert!(
                problem["detail"].as_str().unwrap().contains("token"),
                "{problem}"
            );
        }
    }
    // A stop request without credentials stops nothing.
    let resp = anonymous
        .post(format!("{admin}/v1/services/catalog/stop"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(node.instances("catalog")[0]["state"], "ready");
    // The admin token (what the CLI reads from the data directory) works,
    // and so does the CLI.
    let resp = node
        .admin_http()
        .get(format!("{admin}/v1/status"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (code, out, err) = node.cli(&["status"]);
    assert_eq!(code, 0, "{out}{err}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(node.data_dir().join("admin.token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the admin token is private");

    // The bus refuses a Hello without a valid token, and takes the node's.
    let bus_url = node.status().unwrap()["node"]["bus_url"]
        .as_str()
        .unwrap()
        .to_owned();
    for token in ["", "forged"] {
        match bus_hello(&bus_url, token) {
            mortar_bus_proto::Frame::Error { code, .. } => {
                assert_eq!(code, mortar_bus_proto::ErrorCode::Unauthorized, "{token:?}")
            }
            other => panic!("the bus accepted {token:?}: {other:?}"),
        }
    }
    assert!(matches!(
        bus_hello(&bus_url, &node.admin_token()),
        mortar_bus_proto::Frame::HelloOk { .. }
    ));
}
