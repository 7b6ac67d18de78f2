//! The reference shop as cross-process tests run it: the same services and
//! routes as examples/shop/mortar.toml, with the workspace's debug binaries.

use std::path::{Path, PathBuf};

use crate::{RunningNode, binary};

/// The Python notifier's script in the repository.
pub fn notifier_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/shop/notifier/notifier.py")
        .canonicalize()
        .expect("examples/shop/notifier/notifier.py exists")
}

/// Services of the whole shop, in start order.
pub const SERVICES: [&str; 5] = [
    "catalog",
    "ordering",
    "order-history",
    "identity",
    "notifier",
];

/// The python that runs the notifier on a PostgreSQL store: the venv
/// `scripts/notifier-venv` installs psycopg into (pinned; once), or `None`
/// (after printing why) when it cannot be installed here. Under `CI=true`
/// that fails the test instead: CI must run the notifier on PostgreSQL.
pub fn notifier_python_for_postgres(test: &str) -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/notifier-venv");
    let out = std::process::Command::new(&script)
        .output()
        .expect("scripts/notifier-venv runs");
    let python = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && python.exists() {
        return Some(python);
    }
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: scripts/notifier-venv failed ({}), and CI=true requires the notifier on PostgreSQL to be tested: {why}",
        out.status
    );
    eprintln!("SKIPPED {test}: scripts/notifier-venv cannot install psycopg here: {why}");
    None
}

/// Writes the shop's manifest into `dir` (app `name`); its path.
pub fn write_manifest(dir: &Path, name: &str) -> PathBuf {
    write_manifest_with_python(dir, name, Path::new("python3"))
}

/// [`write_manifest`], the notifier run by `python` (e.g. the one from
/// [`notifier_python_for_postgres`]).
pub fn write_manifest_with_python(dir: &Path, name: &str, python: &Path) -> PathBuf {
    let manifest = dir.join("mortar.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
[app]
name = "{name}"

[services.catalog]
command = ["{catalog}"]
instances = 2
callers = ["gateway"]

[services.ordering]
command = ["{ordering}"]
callers = ["gateway", "order-history"]

[services.order-history]
command = ["{order_history}"]
callers = ["gateway"]

[services.identity]
command = ["{identity}"]
callers = ["gateway"]

[services.notifier]
command = ["{python}", "{notifier}"]
callers = ["gateway"]
bus_api = "http"

[services.notifier.autoscale]
max = 2
subscription = {{ topic = "orders", group = "notifier" }}
target_backlog = 100

[bus]
topics = ["orders"]

[gateway.auth]
issuer_service = "identity"

[[gateway.routes]]
prefix = "/v1/products"
service = "catalog"
public = true

[[gateway.routes]]
prefix = "/v1/orders"
service = "ordering"
authenticated = true
scopes = ["orders"]

[[gateway.routes]]
prefix = "/v1/order-history"
service = "order-history"
authenticated = true
scopes = ["orders"]

[[gateway.routes]]
prefix = "/v1/notifications"
service = "notifier"
authenticated = true
scopes = ["orders"]

[[gateway.routes]]
prefix = "/shop"
service = "catalog"
public = true

[[gateway.routes]]
prefix = "/v1/identity"
service = "identity"
public = true
"#,
            catalog = binary("catalog").display(),
            ordering = binary("ordering").display(),
            order_history = binary("order-history").display(),
            identity = binary("identity").display(),
            notifier = notifier_script().display(),
            python = python.display(),
        ),
    )
    .expect("the manifest is written");
    manifest
}

/// Writes the manifest and runs the shop in `dir` until every service is
/// ready.
pub fn start(dir: &Path, name: &str) -> RunningNode {
    let node = RunningNode::start(&write_manifest(dir, name), &dir.join("data"));
    wait_ready(&node);
    node
}

/// Waits until every service of the shop started by `node` is ready.
pub fn wait_ready(node: &RunningNode) {
    node.wait_ready("catalog", 2);
    for service in &SERVICES[1..] {
        node.wait_ready(service, 1);
    }
}
