//! A bad manifest is reported in full before anything starts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use mortar_test_support::binary;

#[test]
fn three_mistakes_are_all_reported_with_line_and_field_and_nothing_starts() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("mortar.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"[app]
name = "shop"

[services.catalog]
command = ["{}"]
instances = 0
depends_on = ["inventory"]

[services.orders]
comand = ["/bin/true"]
"#,
            binary("fixture-service").display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let out = Command::new(binary("mortar"))
        .args(["up", "-f"])
        .arg(&manifest)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("mortar.toml:"))
        .collect();
    let expect = [
        (":6:", "services.catalog.instances"),
        (":7:", "services.catalog.depends_on[0]"),
        (":10:", "services.orders.comand"),
    ];
    for (line, field) in expect {
        assert!(
            errors.iter().any(|e| e.contains(line) && e.contains(field)),
            "expected an error at line {line} for {field} in:\n{stderr}"
        );
    }
    assert!(stderr.contains("nothing was started"), "{stderr}");
    assert!(!data.exists(), "nothing was created or started");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_missing_program_is_reported_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("mortar.toml");
    std::fs::write(
        &manifest,
        r#"[app]
name = "shop"

[services.catalog]
build = ["cargo", "build", "-p", "catalog"]
command = ["./target/nowhere/catalog"]
"#,
    )
    .unwrap();
    let out = Command::new(binary("mortar"))
        .args(["up", "-f"])
        .arg(&manifest)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not exist") && stderr.contains("mortar build"),
        "{stderr}"
    );
}

#[test]
fn check_accepts_the_shop_manifest() {
    let shop = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/shop/mortar.toml"
    );
    let out = Command::new(binary("mortar"))
        .args(["check", "-f", shop])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok; app shop"));
}
