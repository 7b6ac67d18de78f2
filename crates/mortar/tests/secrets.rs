//! `mortar secrets` and secrets at launch, as a user meets them: files that
//! `openssl cms` reads and writes, one-line errors that change nothing, an
//! editor that never leaves plaintext behind, services that each see only
//! their own secrets, and logs without a single secret value.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use mortar_test_support::cli::{Outcome, run_mortar};
use mortar_test_support::openssl::{Party, cms_decrypt, cms_encrypt, rsa_party, run_openssl};
use mortar_test_support::{RunningNode, binary};

const TABLE: &str = "DB_PASSWORD = \"s3cr3t-db-Xq7\"\nAPI_KEY = \"s3cr3t-api-Zk9\"\n";

/// Runs `mortar secrets <args>` in `dir`.
fn secrets(dir: &Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Outcome {
    let mut all = vec!["secrets"];
    all.extend_from_slice(args);
    run_mortar(dir, &all, env, stdin.as_bytes())
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A failed command: non-zero, one line on stderr that says `wants`.
fn assert_one_line_error(out: &Outcome, wants: &str) {
    assert_ne!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {out:?}");
    assert!(lines[0].starts_with("error: "), "{out:?}");
    assert!(lines[0].contains(wants), "wanted {wants:?} in {out:?}");
}

/// A secrets file in `dir` holding `TABLE`, encrypted for `party`.
fn encrypted_for(dir: &Path, party: &Party) -> PathBuf {
    let out = secrets(
        dir,
        &["encrypt", "-r", path(&party.cert), "secrets.cms"],
        &[],
        TABLE,
    );
    assert_eq!(out.code, 0, "{out:?}");
    dir.join("secrets.cms")
}

#[test]
fn openssl_cms_decrypts_what_mortar_writes_and_mortar_decrypts_what_openssl_writes() {
    let dir = tempfile::tempdir().unwrap();
    let ops = rsa_party(dir.path(), "ops");
    let file = encrypted_for(dir.path(), &ops);
    let pem = std::fs::read_to_string(&file).unwrap();
    assert!(pem.starts_with("-----BEGIN CMS-----"), "{pem}");
    assert!(!pem.contains("s3cr3t"));

    // mortar → openssl: the plaintext is the table mortar shows.
    let by_openssl = String::from_utf8(cms_decrypt(&file, "PEM", &ops.key)).unwrap();
    let key = format!("--key={}", path(&ops.key));
    let by_mortar = secrets(dir.path(), &["decrypt", &key, "secrets.cms"], &[], "");
    assert_eq!(by_mortar.code, 0, "{by_mortar:?}");
    assert_eq!(by_openssl, by_mortar.stdout);
    assert!(
        by_openssl.contains("DB_PASSWORD = \"s3cr3t-db-Xq7\""),
        "{by_openssl}"
    );

    // openssl → mortar, in openssl's default S/MIME output and in PEM.
    let smime = run_openssl(
        &["cms", "-encrypt", "-aes256", path(&ops.cert)],
        TABLE.as_bytes(),
    );
    std::fs::write(dir.path().join("smime.cms"), smime).unwrap();
    let pem = cms_encrypt(TABLE.as_bytes(), &[&ops.cert], "PEM", &[]);
    std::fs::write(dir.path().join("pem.cms"), pem).unwrap();
    for name in ["smime.cms", "pem.cms"] {
        let out = secrets(
            dir.path(),
            &["decrypt", name],
            &[("MORTAR_SECRETS_KEY", path(&ops.key))],
            "",
        );
        assert_eq!(out.code, 0, "{name}: {out:?}");
        assert_eq!(out.stdout, by_openssl, "{name}");
    }
}

#[test]
fn bad_input_is_one_line_and_changes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let ops = rsa_party(dir.path(), "ops");
    let file = encrypted_for(dir.path(), &ops);
    let recipients = dir.path().join("secrets.recipients.pem");
    let before = (
        std::fs::read(&file).unwrap(),
        std::fs::read(&recipients).unwrap(),
    );
    let key = [("MORTAR_SECRETS_KEY", path(&ops.key))];
    let unchanged = || {
        assert_eq!(
            (
                std::fs::read(&file).unwrap(),
                std::fs::read(&recipients).unwrap()
            ),
            before,
            "the files are unchanged"
        );
    };

    let out = secrets(
        dir.path(),
        &["encrypt", "secrets.cms"],
        &[],
        "DB_PASSWORD = s3cr3t-new\n",
    );
    assert_one_line_error(&out, "stdin: line 1, column 15: not valid TOML");
    assert!(!out.stderr.contains("s3cr3t"), "{out:?}");
    unchanged();

    let out = secrets(
        dir.path(),
        &["set", "db-password", "secrets.cms"],
        &key,
        "x",
    );
    assert_one_line_error(&out, "invalid secret name \"db-password\"");
    unchanged();

    let out = secrets(dir.path(), &["unset", "NOPE", "secrets.cms"], &key, "");
    assert_one_line_error(&out, "has no secret NOPE; it holds: API_KEY, DB_PASSWORD");
    unchanged();

    let out = secrets(
        dir.path(),
        &["rotate", "-r", path(&ops.key), "secrets.cms"],
        &key,
        "",
    );
    assert_one_line_error(&out, "holds a private key and no certificate");
    unchanged();

    let out = secrets(
        dir.path(),
        &["encrypt", "-r", "missing.crt", "secrets.cms"],
        &[],
        TABLE,
    );
    assert_one_line_error(&out, "missing.crt");
    unchanged();

    // An edit that leaves invalid TOML, without a terminal to ask on.
    let editor = [
        ("MORTAR_SECRETS_KEY", path(&ops.key)),
        ("EDITOR", "sed -i s/=/:/"),
    ];
    let out = secrets(dir.path(), &["edit", "secrets.cms"], &editor, "");
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("the edited secrets: line"), "{out:?}");
    assert!(out.stderr.contains("nothing changed"), "{out:?}");
    assert!(!out.stderr.contains("s3cr3t"), "{out:?}");
    unchanged();
}

#[test]
fn a_wrong_key_and_a_damaged_file_are_named_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let ops = rsa_party(dir.path(), "ops");
    let eve = rsa_party(dir.path(), "eve");
    let file = encrypted_for(dir.path(), &ops);
    let decrypt = |name: &str, party: &Party| {
        secrets(
            dir.path(),
            &["decrypt", name],
            &[("MORTAR_SECRETS_KEY", path(&party.key))],
            "",
        )
    };

    let out = decrypt("secrets.cms", &eve);
    assert_one_line_error(&out, "is not encrypted for the key");
    assert!(
        out.stderr.contains("eve.key") && out.stderr.contains("CN=ops"),
        "{out:?}"
    );
    assert!(out.stdout.is_empty());

    let out = secrets(dir.path(), &["decrypt", "secrets.cms"], &[], "");
    assert_one_line_error(&out, "MORTAR_SECRETS_KEY");

    // One flipped bit in the last ciphertext block (DER, so it is exact).
    let der = run_openssl(
        &[
            "cms",
            "-cmsout",
            "-inform",
            "PEM",
            "-outform",
            "DER",
            "-in",
            path(&file),
        ],
        b"",
    );
    let mut tampered = der.clone();
    *tampered.last_mut().unwrap() ^= 0x01;
    std::fs::write(dir.path().join("tampered.cms"), tampered).unwrap();
    // Without the key's certificate OpenSSL cannot tell damage from a
    // wrong key, and the message says so …
    let out = decrypt("tampered.cms", &ops);
    assert_one_line_error(&out, "not the key of any recipient, or the file is corrupt");
    // … with it (here from the recorded recipients), it can.
    let recipients = dir.path().join("secrets.recipients.pem");
    std::fs::copy(&recipients, dir.path().join("tampered.recipients.pem")).unwrap();
    let out = decrypt("tampered.cms", &ops);
    assert_one_line_error(&out, "is corrupt or was tampered with");

    let pem = std::fs::read_to_string(&file).unwrap();
    std::fs::write(dir.path().join("cut.cms"), &pem[..pem.len() / 2]).unwrap();
    assert_one_line_error(&decrypt("cut.cms", &ops), "is corrupt or was tampered with");

    std::fs::write(dir.path().join("plain.cms"), TABLE).unwrap();
    let out = decrypt("plain.cms", &ops);
    assert_one_line_error(&out, "is not a CMS file (it looks like plaintext");
    assert!(!out.stderr.contains("s3cr3t"), "{out:?}");

    let out = decrypt("nowhere.cms", &ops);
    assert_one_line_error(&out, "nowhere.cms does not exist");
}

#[test]
fn edit_keeps_the_plaintext_in_a_private_directory_that_is_gone_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let ops = rsa_party(dir.path(), "ops");
    encrypted_for(dir.path(), &ops);
    // The editor notes where it was and with which permissions, then edits.
    let seen = dir.path().join("seen");
    let script = dir.path().join("editor.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\nd=$(dirname \"$1\")\necho \"$d $(stat -c %a \"$d\") $(stat -c %a \"$1\")\" > {seen}\n\
             sed -i 's/s3cr3t-api-Zk9/s3cr3t-api-NEW/' \"$1\"\necho 'NEW_ONE = \"s3cr3t-added\"' >> \"$1\"\n",
            seen = seen.display()
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let env = [
        ("MORTAR_SECRETS_KEY", path(&ops.key)),
        ("EDITOR", path(&script)),
    ];
    let out = secrets(dir.path(), &["edit", "secrets.cms"], &env, "");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("changed: API_KEY") && out.stderr.contains("added: NEW_ONE"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("s3cr3t"), "{out:?}");

    let seen = std::fs::read_to_string(&seen).unwrap();
    let parts: Vec<&str> = seen.split_whitespace().collect();
    assert_eq!(parts[1..], ["700", "600"], "{seen}");
    assert!(!Path::new(parts[0]).exists(), "{} was removed", parts[0]);

    let out = secrets(dir.path(), &["decrypt", "secrets.cms"], &env[..1], "");
    assert!(
        out.stdout.contains("API_KEY = \"s3cr3t-api-NEW\""),
        "{out:?}"
    );
    assert!(out.stdout.contains("NEW_ONE = \"s3cr3t-added\""), "{out:?}");
    assert!(
        out.stdout.contains("DB_PASSWORD = \"s3cr3t-db-Xq7\""),
        "{out:?}"
    );
}

#[test]
fn rotate_re_encrypts_for_a_new_recipient_set_and_set_reads_the_value_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let ops = rsa_party(dir.path(), "ops");
    let new = rsa_party(dir.path(), "new");
    let file = encrypted_for(dir.path(), &ops);
    let old_key = [("MORTAR_SECRETS_KEY", path(&ops.key))];
    let new_key = [("MORTAR_SECRETS_KEY", path(&new.key))];

    let out = secrets(
        dir.path(),
        &["set", "TOKEN", "secrets.cms"],
        &old_key,
        "s3cr3t-token\n",
    );
    assert_eq!(out.code, 0, "{out:?}");
    let before = secrets(dir.path(), &["decrypt", "secrets.cms"], &old_key, "").stdout;
    assert!(
        before.contains("TOKEN = \"s3cr3t-token\"\n"),
        "one newline dropped: {before}"
    );
    let old_bytes = std::fs::read(&file).unwrap();

    let out = secrets(
        dir.path(),
        &["rotate", "-r", path(&new.cert), "secrets.cms"],
        &old_key,
        "",
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("1 recipient(s) (CN=new"), "{out:?}");
    assert_ne!(std::fs::read(&file).unwrap(), old_bytes);
    let after = secrets(dir.path(), &["decrypt", "secrets.cms"], &new_key, "");
    assert_eq!(after.stdout, before, "same secrets: {after:?}");
    let out = secrets(dir.path(), &["decrypt", "secrets.cms"], &old_key, "");
    assert_one_line_error(&out, "is not encrypted for the key");
    // Later edits go to the recorded (new) recipients.
    let out = secrets(dir.path(), &["unset", "TOKEN", "secrets.cms"], &new_key, "");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("CN=new") && out.stderr.contains("removed: TOKEN"),
        "{out:?}"
    );
}

/// A manifest in `dir` with two fixture services, `billing` (DB_PASSWORD)
/// and `search` (API_KEY), and `extra` appended.
fn two_services(dir: &Path, extra: &str) -> PathBuf {
    let manifest = dir.join("mortar.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"[app]
name = "vault"

[secrets]
file = "secrets.cms"

[services.billing]
command = ["{f}"]
secrets = ["DB_PASSWORD"]

[services.search]
command = ["{f}"]
secrets = ["API_KEY"]
{extra}"#,
            f = binary("fixture-service").display()
        ),
    )
    .unwrap();
    manifest
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn each_service_sees_only_its_own_secrets_and_no_log_holds_a_secret_value() {
    let dir = tempfile::tempdir().unwrap();
    let ops = rsa_party(dir.path(), "ops");
    encrypted_for(dir.path(), &ops);
    let manifest = two_services(dir.path(), "");
    let data = dir.path().join("data");
    // The most verbose logs (trace: the supervisor's launch line names the
    // secrets, HTTP internals log requests); API_KEY in the node's own
    // environment must not reach billing either.
    let mut node = RunningNode::start_with_env(
        &manifest,
        &data,
        &[
            ("MORTAR_SECRETS_KEY", path(&ops.key)),
            ("MORTAR_LOG_LEVEL", "trace"),
            ("API_KEY", "from-the-node-env"),
        ],
    );
    let billing = node.wait_ready("billing", 1).remove(0);
    let search = node.wait_ready("search", 1).remove(0);
    let get = |instance: &serde_json::Value, path: &str| node.get_text(instance, path).1;

    assert_eq!(get(&billing, "/env/DB_PASSWORD"), "s3cr3t-db-Xq7");
    assert_eq!(get(&billing, "/env/API_KEY"), "");
    assert_eq!(get(&search, "/env/API_KEY"), "s3cr3t-api-Zk9");
    assert_eq!(get(&search, "/env/DB_PASSWORD"), "");
    assert_eq!(get(&billing, "/env/MORTAR_SECRET_NAMES"), "DB_PASSWORD");
    assert_eq!(get(&billing, "/env/MORTAR_SECRETS_KEY"), "");

    let (code, logs, _) = node.cli(&["logs", "--tail", "10000"]);
    assert_eq!(code, 0);
    let (_, status, _) = node.cli(&["status", "--json"]);
    assert!(node.stop().success());

    let mut captured = node.output().join("\n");
    captured.push_str(&logs);
    captured.push_str(&status);
    assert!(
        captured.contains("\"secrets\":\"{\\\"DB_PASSWORD\\\": <redacted>}\"")
            || captured.contains("DB_PASSWORD\\\": <redacted>"),
        "the launch line names the secret, redacted: {captured}"
    );
    for value in ["s3cr3t-db-Xq7", "s3cr3t-api-Zk9"] {
        assert!(!captured.contains(value), "{value} leaked into the logs");
        for file in files(&data) {
            let bytes = std::fs::read(&file).unwrap();
            let leaked = bytes.windows(value.len()).any(|w| w == value.as_bytes());
            assert!(!leaked, "{value} is in {}", file.display());
        }
    }
}

#[test]
fn a_secret_the_file_lacks_or_a_missing_key_stops_the_launch_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let ops = rsa_party(dir.path(), "ops");
    let eve = rsa_party(dir.path(), "eve");
    encrypted_for(dir.path(), &ops);
    let manifest = two_services(
        dir.path(),
        "\n[services.mailer]\ncommand = [\"/bin/true\"]\nsecrets = [\"SMTP_PASSWORD\", \"DB_PASSWORD\"]\n",
    );
    let data = dir.path().join("data");
    let up = |key: Option<&Path>| {
        let mut env = Vec::new();
        if let Some(key) = key {
            env.push(("MORTAR_SECRETS_KEY", path(key)));
        }
        let out = run_mortar(
            dir.path(),
            &["up", "-f", path(&manifest), "--data-dir", path(&data)],
            &env,
            b"",
        );
        assert!(!data.exists(), "nothing was started: {out:?}");
        out
    };

    let out = up(Some(&ops.key));
    assert_eq!(out.code, 78, "{out:?}");
    assert!(
        out.stderr.contains("service mailer needs SMTP_PASSWORD")
            && out.stderr.contains("secrets.cms")
            && out.stderr.contains("it holds: API_KEY, DB_PASSWORD"),
        "{out:?}"
    );

    let out = up(None);
    assert_eq!(out.code, 78, "{out:?}");
    assert!(out.stderr.contains("MORTAR_SECRETS_KEY"), "{out:?}");

    let out = up(Some(&eve.key));
    assert_eq!(out.code, 78, "{out:?}");
    assert!(
        out.stderr.contains("is not encrypted for the key"),
        "{out:?}"
    );
}
