//! `mortar projections status|rebuild` against a node running ordering and
//! order-history: the table shows the projection catching up, a rebuild
//! goes to the owning service, and an unknown name is one line listing the
//! known ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use mortar_test_support::{RunningNode, binary, wait_for};
use serde_json::json;

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

[bus]
topics = ["orders"]
"#,
            binary("ordering").display(),
            binary("order-history").display()
        ),
    )
    .unwrap();
    RunningNode::start(&manifest, &dir.join("data"))
}

/// The (position, lag) column of the order-history row.
fn row(stdout: &str) -> Option<(String, String)> {
    let line = stdout.lines().find(|l| l.starts_with("order-history "))?;
    let cols: Vec<&str> = line.split_whitespace().collect();
    Some((cols[2].to_owned(), cols[3].to_owned()))
}

#[test]
fn status_shows_lag_and_rebuild_reaches_the_owning_service() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let ordering = node.wait_ready("ordering", 1).remove(0);
    node.wait_ready("order-history", 1);

    for quantity in 1..=3 {
        let (code, _) = node.call(
            &ordering,
            "POST",
            "/v1/orders",
            Some(&json!({"customer": "ann", "lines": [
                {"sku": "MUG-001", "quantity": quantity, "unit_price_cents": 1290}]})),
        );
        assert_eq!(code, 201);
    }

    let (code, stdout, stderr) = wait_for(
        "order-history at position 3 with lag 0",
        Duration::from_secs(60),
        || {
            let out = node.cli(&["projections", "status"]);
            (out.0 == 0 && row(&out.1) == Some(("3".into(), "0".into()))).then_some(out)
        },
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("SERVICE"), "{stdout}");

    let (code, stdout, stderr) = node.cli(&["projections", "rebuild", "order-history"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with(
            "order-history (order-history): rebuilt; 3 event(s) replayed, now at position 3"
        ),
        "{stdout}"
    );

    let (code, stdout, stderr) = node.cli(&["projections", "rebuild", "orders-by-sku"]);
    assert_ne!(code, 0, "{stdout}");
    assert_eq!(
        stderr.trim(),
        "error: unknown projection \"orders-by-sku\"; known: order-history"
    );
}
