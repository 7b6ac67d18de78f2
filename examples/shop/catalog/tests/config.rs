//! The catalog refuses to start without its configuration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn missing_store_url_exits_78_naming_the_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_catalog"))
        .env_remove("MORTAR_STORE_URL")
        .env("PORT", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("MORTAR_STORE_URL is not set"), "{stderr}");
    assert!(
        stderr.contains("sqlite://"),
        "names the expected form: {stderr}"
    );
}

#[test]
fn wrong_scheme_exits_78_explaining_the_value() {
    let out = Command::new(env!("CARGO_BIN_EXE_catalog"))
        .env("MORTAR_STORE_URL", "mysql://db/catalog")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("MORTAR_STORE_URL=\"mysql://db/catalog\""),
        "{stderr}"
    );
}
