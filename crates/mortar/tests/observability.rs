//! Observability through a real node: one order placed through the
//! gateway is followed by its trace id across the gateway, ordering, the
//! bus delivery to order-history and the projection, by grepping the merged
//! log stream for one id, and `mortar logs --trace` filters that stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use mortar_test_support::{RunningNode, binary, wait_for};
use serde_json::{Value, json};

fn start(dir: &Path) -> RunningNode {
    let manifest = dir.join("mortar.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
[app]
name = "shop"

[services.ordering]
command = ["{}"]

[services.order-history]
command = ["{}"]

# Never scales (the target is far above any backlog here): present so the
# autoscaler's series exist.
[services.order-history.autoscale]
min = 1
max = 2
subscription = {{ topic = "orders", group = "order-history" }}
target_backlog = 100000

[bus]
topics = ["orders"]

[[gateway.routes]]
prefix = "/v1/orders"
service = "ordering"
public = true
"#,
            binary("ordering").display(),
            binary("order-history").display()
        ),
    )
    .unwrap();
    RunningNode::start_with_env(
        &manifest,
        &dir.join("data"),
        &[(
            "MORTAR_LOG_LEVEL",
            "info,mortar_gateway=debug,mortar_bus_client=debug,order_history=debug",
        )],
    )
}

#[test]
fn one_order_is_followed_by_its_trace_id_across_gateway_service_bus_and_projection() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    node.wait_ready("ordering", 1);
    node.wait_ready("order-history", 1);
    let gateway = node.gateway_url();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = wait_for(
        "the order placed through the gateway",
        Duration::from_secs(60),
        || {
            let resp = http
                .post(format!("{gateway}/v1/orders"))
                .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
                .json(&json!({"customer": "ann", "lines": [
                {"sku": "MUG-001", "quantity": 1, "unit_price_cents": 1290}]}))
                .send()
                .ok()?;
            (resp.status() == 201).then_some(resp)
        },
    );
    let answered = response.headers()["traceparent"].to_str().unwrap();
    assert!(
        answered.starts_with(&format!("00-{trace_id}-")),
        "{answered}"
    );

    let has = |lines: &[Value], what: &dyn Fn(&Value) -> bool| {
        lines.iter().any(|l| l["trace_id"] == trace_id && what(l))
    };
    let lines = wait_for(
        "the trace id in the gateway's, ordering's, the delivery's and the projection's lines",
        Duration::from_secs(60),
        || {
            let lines = node.json_lines();
            let all = has(&lines, &|l| {
                l["target"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("mortar_gateway"))
                    && l["msg"] == "gateway request"
            }) && has(&lines, &|l| {
                l["service"] == "ordering" && l["msg"] == "order placed"
            }) && has(&lines, &|l| {
                l["service"] == "order-history" && l["msg"] == "bus delivery"
            }) && has(&lines, &|l| {
                l["service"] == "order-history" && l["msg"] == "order event projected"
            });
            all.then_some(lines)
        },
    );
    // Nothing else shares the id: it names this order's trace only.
    let traced: Vec<&Value> = lines.iter().filter(|l| l["trace_id"] == trace_id).collect();
    assert!(traced.len() >= 4, "{traced:?}");

    // `mortar logs --trace` keeps exactly that trace's lines, as raw JSON
    // when piped.
    let (code, stdout, stderr) = node.cli(&["logs", "--tail", "10000", "--trace", trace_id]);
    assert_eq!(code, 0, "{stderr}");
    let printed: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(printed.len() >= 4, "{stdout}");
    assert!(
        printed.iter().all(|l| l["trace_id"] == trace_id),
        "{stdout}"
    );
    assert!(
        printed.iter().any(|l| l["service"] == "ordering"),
        "{stdout}"
    );

    // The node's and the service's /metrics parse as Prometheus text and
    // hold the key series, this order included. The autoscaler's gauges
    // exist from its first decision, which needs the bus's first statistics:
    // on a loaded machine that can come after the order is projected.
    let node_metrics = wait_for(
        "the autoscaler's first decision in the node's /metrics",
        Duration::from_secs(60),
        || {
            let text = node
                .admin_http()
                .get(format!("{}/metrics", node.admin_url()))
                .send()
                .ok()?
                .text()
                .ok()?;
            text.contains("\nmortar_autoscale_current_instances{")
                .then_some(text)
        },
    );
    let scrape = parse(&node_metrics);
    for key in [
        "mortar_instances",
        "mortar_instance_restarts_total",
        "mortar_bus_backlog",
        "mortar_bus_lag",
        "mortar_bus_dead_lettered_total",
        "mortar_client_retries_total",
        "mortar_client_upstream_duration_seconds",
        "mortar_bus_published_total",
        "mortar_bus_commit_seconds",
        "mortar_service_desired_instances",
        "mortar_service_ready_instances",
        "mortar_autoscale_current_instances",
        "mortar_autoscale_desired_instances",
    ] {
        assert!(
            scrape.samples.iter().any(|s| s.metric == key),
            "{key}: {node_metrics}"
        );
    }
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "mortar_client_upstream_calls_total"
                && s.labels.get("upstream") == Some("ordering")),
        "{node_metrics}"
    );
    let has_series = |metric: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .any(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
    };
    // Where the gateway's connections are served shows per thread.
    assert!(
        has_series("mortar_gateway_open_connections", &[("thread", "0")]),
        "{node_metrics}"
    );
    // Deploy and autoscale events exist (at zero) before the first one.
    for event in ["started", "succeeded", "rolled_back"] {
        assert!(
            has_series(
                "mortar_deploys_total",
                &[
                    ("service", "ordering"),
                    ("strategy", "rolling"),
                    ("event", event)
                ]
            ),
            "{event}: {node_metrics}"
        );
    }
    for direction in ["up", "down"] {
        assert!(
            has_series(
                "mortar_autoscale_events_total",
                &[("service", "order-history"), ("direction", direction)]
            ),
            "{direction}: {node_metrics}"
        );
    }
    // The projection consumed the order: the group's deliveries count it.
    let delivered = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "mortar_bus_delivered_total"
                && s.labels.get("topic") == Some("orders")
                && s.labels.get("group") == Some("order-history")
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        });
    assert!(delivered.is_some_and(|d| d >= 1.0), "{node_metrics}");
    let ordering = node.wait_ready("ordering", 1).remove(0);
    let (code, service_metrics) = node.get_text(&ordering, "/metrics");
    assert_eq!(code, 200);
    let scrape = parse(&service_metrics);
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "mortar_http_requests_total"
                && s.labels.get("route") == Some("/v1/orders")
                && s.labels.get("status") == Some("201")),
        "{service_metrics}"
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "mortar_http_request_duration_seconds"),
        "{service_metrics}"
    );

    let (code, _, stderr) = node.cli(&["logs", "--level", "loud"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("unknown level \"loud\""), "{stderr}");
}

/// Parses Prometheus text with a real parser; panics on invalid text.
fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}
