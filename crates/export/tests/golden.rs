//! The exported manifests for each deploy strategy, for autoscaling and for
//! the shop, compared with the files under tests/golden/ (regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p mortar-export --test golden`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use mortar_export::{ExportOptions, kubernetes};
use mortar_manifest::Manifest;
use mortar_test_support::golden::assert_golden;

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn export(toml: &str, options: &ExportOptions) -> String {
    let manifest = Manifest::parse(toml, Path::new("mortar.toml")).unwrap();
    let export = kubernetes(&manifest, options).unwrap();
    let mut out = export.to_stream();
    for note in &export.notes {
        out.push_str(&format!("# note: {note}\n"));
    }
    out
}

#[test]
fn rolling_service_becomes_a_rolling_deployment_with_config_and_secret_refs() {
    let toml = r#"
[app]
name = "billing"

[services.api]
command = ["./api", "--workers", "4"]
instances = 3
grace_period = "20s"
startup_timeout = "45s"
env = { API_PAGE_SIZE = "25" }
secrets = ["STRIPE_KEY", "DB_PASSWORD"]
health = { ready = "/ready", live = "/live" }

[services.api.deploy]
strategy = "rolling"
max_surge = 2
max_unavailable = 1
min_ready = "5s"
progress_deadline = "10m"
drain_delay = "3s"

[[gateway.routes]]
prefix = "/v1/invoices"
service = "api"
"#;
    let options = ExportOptions {
        namespace: Some("billing".into()),
        registry: "registry.example.com/team".into(),
        ..ExportOptions::default()
    };
    assert_golden(&golden("rolling.yaml"), &export(toml, &options));
}

#[test]
fn recreate_service_becomes_a_recreate_deployment() {
    let toml = r#"
[app]
name = "ledger"

[services.writer]
command = ["./writer"]
grace_period = "30s"

[services.writer.deploy]
strategy = "recreate"
drain_delay = "0s"
"#;
    let mut options = ExportOptions::default();
    options
        .images
        .insert("writer".into(), "ghcr.io/acme/ledger-writer:2.1.0".into());
    options.store_url = Some("postgres://ledger@pg.db.svc:5432/ledger?sslmode=require".into());
    assert_golden(&golden("recreate.yaml"), &export(toml, &options));
}

#[test]
fn blue_green_service_becomes_an_argo_rollout_with_a_preview_service() {
    let toml = r#"
[app]
name = "shop"

[services.pages]
command = ["./pages"]
instances = 2
callers = ["gateway"]

[services.pages.deploy]
strategy = "blue-green"
analysis = "1m"
promote_delay = "30s"

[services.admin]
command = ["./admin"]

[services.admin.deploy]
strategy = "blue-green"
manual = true
"#;
    assert_golden(
        &golden("blue-green.yaml"),
        &export(toml, &ExportOptions::default()),
    );
}

#[test]
fn autoscaled_consumer_gets_a_keda_scaled_object_on_its_jetstream_consumer() {
    let toml = r#"
[app]
name = "mail"

[services.sender]
command = ["./sender"]

[services.sender.autoscale]
min = 2
max = 12
subscription = { topic = "mail.outgoing", group = "sender.v2" }
target_backlog = 250
scale_down_window = "5m"

[bus]
topics = ["mail.outgoing"]
ack_deadline = "45s"
max_deliveries = 8
"#;
    let options = ExportOptions {
        bus_url: "nats://nats.messaging.svc.cluster.local:4222".into(),
        ..ExportOptions::default()
    };
    assert_golden(&golden("autoscale.yaml"), &export(toml, &options));
}

#[test]
fn the_shop_exports_every_service_and_its_routes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop/mortar.toml");
    let toml = std::fs::read_to_string(&path).unwrap();
    let options = ExportOptions {
        namespace: Some("shop".into()),
        ..ExportOptions::default()
    };
    assert_golden(&golden("shop.yaml"), &export(&toml, &options));
}
