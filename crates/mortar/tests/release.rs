//! `mortar release` / `mortar releases` as a user runs them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use mortar_test_support::binary;

fn mortar(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary("mortar"))
        .args(args)
        .arg("-f")
        .arg(dir.join("mortar.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_app(dir: &Path, program: &str) {
    std::fs::write(dir.join("svc"), program).unwrap();
    std::fs::write(
        dir.join("mortar.toml"),
        "[app]\nname = \"rel\"\n\n[services.api]\ncommand = [\"./svc\"]\n",
    )
    .unwrap();
}

#[test]
fn each_change_is_a_new_immutable_release_and_unchanged_content_is_not() {
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), "#!/bin/sh\necho v1\n");
    let (code, out, err) = mortar(dir.path(), &["release"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(#1) recorded"), "{out}");
    let (code, out, _) = mortar(dir.path(), &["release"]);
    assert_eq!(code, 0);
    assert!(out.contains("already records exactly this"), "{out}");
    write_app(dir.path(), "#!/bin/sh\necho v2\n");
    let (code, out, _) = mortar(dir.path(), &["release"]);
    assert_eq!(code, 0);
    assert!(out.contains("(#2) recorded"), "{out}");

    let (code, out, _) = mortar(dir.path(), &["releases", "--json"]);
    assert_eq!(code, 0);
    let releases: serde_json::Value = serde_json::from_str(&out).unwrap();
    let releases = releases.as_array().unwrap();
    assert_eq!(releases.len(), 2);
    assert_ne!(releases[0]["id"], releases[1]["id"]);
    assert_eq!(releases[1]["prev"].as_str().map(str::len), Some(64));
    let (code, out, _) = mortar(dir.path(), &["releases"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 3, "header and two releases: {out}");
}

#[test]
fn a_missing_program_is_one_clear_line_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), "x");
    std::fs::remove_file(dir.path().join("svc")).unwrap();
    let (code, _, err) = mortar(dir.path(), &["release"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("./svc") && err.contains("mortar build"),
        "{err}"
    );
    let (_, out, _) = mortar(dir.path(), &["releases"]);
    assert!(out.contains("no releases yet"), "{out}");
}
