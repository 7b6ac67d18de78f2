//! `mortar backup`: a backup taken while the shop takes orders and the bus
//! takes messages restores every write acknowledged before it into a fresh
//! data directory a node starts from; a flipped byte in any file of a
//! backup fails `verify`, naming the file, and `restore` refuses it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mortar_test_support::cli::run_mortar;
use mortar_test_support::files::{copy_tree, flip_byte};
use mortar_test_support::node::call_as_node;
use mortar_test_support::openssl::{cms_decrypt, rsa_party};
use mortar_test_support::stores::ScratchDatabase;
use mortar_test_support::{RunningNode, binary, wait_for};
use serde_json::{Value, json};

fn write_manifest(dir: &Path) -> PathBuf {
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
topics = ["orders", "audit"]
"#,
            binary("ordering").display(),
            binary("order-history").display()
        ),
    )
    .unwrap();
    manifest
}

fn mortar(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = run_mortar(dir, args, &[], b"");
    (out.code, out.stdout, out.stderr)
}

fn place_order(data_dir: &Path, ordering: &Value, n: u64) -> Option<String> {
    let (code, body) = call_as_node(
        data_dir,
        ordering,
        "POST",
        "/v1/orders",
        Some(&json!({"customer": format!("c{n}"), "lines": [
            {"sku": "MUG-001", "quantity": 1, "unit_price_cents": 1290}]})),
    );
    let body: Value = serde_json::from_slice(&body).ok()?;
    (code == 201).then(|| body["id"].as_str().unwrap().to_owned())
}

fn publish(http: &reqwest::blocking::Client, admin: &str, n: u64) -> bool {
    http.post(format!("{admin}/v1/bus/topics/audit/messages"))
        .json(&json!({"messages": [{"key": format!("k{n}"), "payload": {"n": n}}]}))
        .send()
        .is_ok_and(|r| r.status().is_success())
}

/// Every `n` in the `audit` topic, read by a new consumer group.
fn audit_numbers(node: &RunningNode) -> BTreeSet<u64> {
    let admin = node.admin_url();
    let http = node.admin_http();
    let mut seen = BTreeSet::new();
    loop {
        let pulled: Value = http
            .post(format!(
                "{admin}/v1/bus/topics/audit/groups/restore-check/pull"
            ))
            .json(&json!({"consumer": "test", "max": 500, "wait_ms": 500}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let messages = pulled["messages"].as_array().unwrap().clone();
        if messages.is_empty() {
            return seen;
        }
        let ids: Vec<Value> = messages.iter().map(|m| m["id"].clone()).collect();
        for m in &messages {
            seen.insert(m["payload"]["n"].as_u64().unwrap());
        }
        http.post(format!(
            "{admin}/v1/bus/topics/audit/groups/restore-check/ack"
        ))
        .json(&json!({"ids": ids}))
        .send()
        .unwrap();
    }
}

/// Acknowledged writes: order ids and audit message numbers.
#[derive(Default)]
struct Acked {
    orders: Vec<String>,
    messages: Vec<u64>,
}

#[test]
fn a_backup_under_write_load_restores_every_acknowledged_write_and_a_node_serves_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path());
    let data = dir.path().join("data");
    let mut node = RunningNode::start(&manifest, &data);
    let ordering = node.wait_ready("ordering", 1).remove(0);
    node.wait_ready("order-history", 1);
    let admin = node.admin_url();
    let http = node.admin_http();

    let acked = Mutex::new(Acked::default());
    let stop = AtomicBool::new(false);
    let (before_cut, created) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                if let Some(id) = place_order(&data, &ordering, n) {
                    acked.lock().unwrap().orders.push(id);
                }
                if publish(&http, &admin, n) {
                    acked.lock().unwrap().messages.push(n);
                }
            }
        });
        wait_for(
            "some writes before the backup",
            Duration::from_secs(60),
            || {
                let a = acked.lock().unwrap();
                (a.orders.len() >= 10 && a.messages.len() >= 10).then_some(())
            },
        );
        let before_cut = {
            let a = acked.lock().unwrap();
            (a.orders.clone(), a.messages.clone())
        };
        let created = node.cli(&["backup", "create", "--keep", "2"]);
        wait_for("writes after the backup", Duration::from_secs(60), || {
            (acked.lock().unwrap().messages.len() > before_cut.1.len() + 5).then_some(())
        });
        stop.store(true, Ordering::SeqCst);
        (before_cut, created)
    });
    let (code, stdout, stderr) = created;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("backup "), "{stdout}");
    let backup = PathBuf::from(stdout.split_whitespace().nth(1).unwrap());
    assert!(
        backup.starts_with(dir.path().join("data-backups")),
        "{stdout}"
    );

    let (code, stdout, stderr) = node.cli(&["backup", "list"]);
    assert_eq!(code, 0, "{stderr}");
    let id = backup.file_name().unwrap().to_str().unwrap();
    assert!(stdout.lines().any(|l| l.starts_with(id)), "{stdout}");

    // Restoring over the running node is refused and changes nothing.
    let backup_arg = backup.to_str().unwrap();
    let (code, _, stderr) = node.cli(&["backup", "restore", backup_arg]);
    assert_ne!(code, 0);
    assert!(stderr.contains("a mortar node is running"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    node.stop();

    let (code, stdout, stderr) = mortar(dir.path(), &["backup", "verify", backup_arg]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("is good"), "{stdout}");

    let restored = dir.path().join("restored");
    let (code, stdout, stderr) = mortar(
        dir.path(),
        &[
            "backup",
            "restore",
            backup_arg,
            "--data-dir",
            restored.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("restored backup"), "{stdout}");

    let node = RunningNode::start(&manifest, &restored);
    let ordering = node.wait_ready("ordering", 1).remove(0);
    for id in &before_cut.0 {
        let (code, order) = node.get_json(&ordering, &format!("/v1/orders/{id}"));
        assert_eq!(
            code, 200,
            "order {id} acknowledged before the backup: {order}"
        );
    }
    let seen = audit_numbers(&node);
    let missing: Vec<&u64> = before_cut.1.iter().filter(|n| !seen.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "messages acknowledged before the backup are missing: {missing:?}"
    );
}

#[test]
fn a_flipped_byte_in_any_file_fails_verify_naming_it_and_restore_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path());
    let data = dir.path().join("data");
    let mut node = RunningNode::start(&manifest, &data);
    let ordering = node.wait_ready("ordering", 1).remove(0);
    node.wait_ready("order-history", 1);
    let http = node.admin_http();
    for n in 0..3 {
        assert!(place_order(&data, &ordering, n).is_some());
        assert!(publish(&http, &node.admin_url(), n));
    }
    let backups = dir.path().join("backups");
    let (code, stdout, stderr) = node.cli(&["backup", "create", "--to", backups.to_str().unwrap()]);
    node.stop();
    assert_eq!(code, 0, "{stderr}");
    let good = PathBuf::from(stdout.split_whitespace().nth(1).unwrap());
    let listed: Value =
        serde_json::from_slice(&std::fs::read(good.join("backup.json")).unwrap()).unwrap();
    let files: Vec<String> = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .collect();
    for kind in ["store", "read-store", "bus-segment"] {
        assert!(
            listed["files"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["kind"] == kind),
            "no {kind} in {listed}"
        );
    }

    let target = dir.path().join("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("keep.txt"), b"current data").unwrap();
    for (i, file) in files.iter().enumerate() {
        let bad = dir.path().join(format!("bad-{i}"));
        copy_tree(&good, &bad);
        flip_byte(&bad.join(file));
        let bad_arg = bad.to_str().unwrap();

        let (code, stdout, stderr) = mortar(dir.path(), &["backup", "verify", bad_arg]);
        assert_ne!(code, 0, "a flipped byte in {file} passed verify: {stdout}");
        assert!(
            stderr.contains(&format!("FAIL {file}: sha256 check failed"))
                || stderr.contains(&format!("FAIL {file}: size check failed")),
            "{file}: {stderr}"
        );

        let (code, _, stderr) = mortar(
            dir.path(),
            &[
                "backup",
                "restore",
                bad_arg,
                "--data-dir",
                target.to_str().unwrap(),
            ],
        );
        assert_ne!(code, 0, "restore accepted a flipped byte in {file}");
        assert!(stderr.contains(file.as_str()), "{file}: {stderr}");
        assert_eq!(
            std::fs::read(target.join("keep.txt")).unwrap(),
            b"current data",
            "a refused restore changed the data directory"
        );
        std::fs::remove_dir_all(&bad).unwrap();
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("restoring"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

/// Waits until order-history shows order `id` of customer `c{n}`.
fn wait_for_history(node: &RunningNode, history: &Value, n: u64, id: &str) {
    wait_for(
        "the order in order-history",
        Duration::from_secs(60),
        || {
            let (code, body) = node.get_json(history, &format!("/v1/order-history?customer=c{n}"));
            (code == 200 && body.to_string().contains(id)).then_some(())
        },
    );
}

/// Recomputes one file's size and SHA-256 in a backup's manifest, so that
/// only a check of its contents can tell it was changed.
fn reseal(backup: &Path, file: &str) {
    let mut manifest = mortar_backup::BackupManifest::load(backup).unwrap();
    let (size, sha256) = mortar_backup::digest_file(&backup.join(file)).unwrap();
    let entry = manifest.files.iter_mut().find(|f| f.path == file).unwrap();
    entry.size = size;
    entry.sha256 = sha256;
    manifest.save(backup).unwrap();
}

#[test]
fn verify_replays_the_events_and_catches_a_read_model_that_disagrees_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path());
    let data = dir.path().join("data");
    let mut node = RunningNode::start(&manifest, &data);
    let ordering = node.wait_ready("ordering", 1).remove(0);
    let history = node.wait_ready("order-history", 1).remove(0);
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = place_order(&data, &ordering, n).unwrap();
        wait_for_history(&node, &history, n, &id);
        ids.push(id);
    }
    let backups = dir.path().join("backups");
    let (code, stdout, stderr) = node.cli(&["backup", "create", "--to", backups.to_str().unwrap()]);
    node.stop();
    assert_eq!(code, 0, "{stderr}");
    let good = PathBuf::from(stdout.split_whitespace().nth(1).unwrap());

    let (code, stdout, stderr) = mortar(dir.path(), &["backup", "verify", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("replay order-history"))
        .unwrap_or_else(|| panic!("no replay check of order-history: {stdout}"));
    assert!(
        line.contains("projection order-history: 3 event(s)") && line.ends_with("equal"),
        "{line}"
    );

    // Change one row of the backed-up read model, and fix up the manifest
    // so that every checksum still matches: only the replay can tell.
    let read_db = "data/services/order-history/read.db";
    let bad = dir.path().join("tampered");
    copy_tree(&good, &bad);
    let conn = rusqlite::Connection::open(bad.join(read_db)).unwrap();
    let changed = conn
        .execute(
            "UPDATE order_history SET status = 'cancelled' WHERE order_id = ?1",
            [&ids[1]],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);
    reseal(&bad, read_db);

    let (code, stdout, stderr) = mortar(dir.path(), &["backup", "verify", bad.to_str().unwrap()]);
    assert_ne!(code, 0, "a tampered read model passed verify: {stdout}");
    let expected = format!(
        "FAIL {read_db}: replay check failed: service order-history, projection order-history, table order_history: 1 row(s) differ"
    );
    assert!(stderr.contains(&expected), "{stderr}");
    let difference = format!(
        "order_id='{}': status is 'cancelled' in the read model, 'placed' replayed",
        ids[1]
    );
    assert!(stderr.contains(&difference), "{stderr}");
    assert!(stdout.contains("DIFFERENT"), "{stdout}");
}

/// Every file under `dir`, relative, `/`-separated.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_string_lossy();
                out.push(rel.replace('\\', "/"));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn an_encrypted_backup_needs_the_recipients_key_to_verify_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path());
    let data = dir.path().join("data");
    let ops = rsa_party(dir.path(), "ops");
    let stranger = rsa_party(dir.path(), "stranger");
    let mut node = RunningNode::start(&manifest, &data);
    let ordering = node.wait_ready("ordering", 1).remove(0);
    let history = node.wait_ready("order-history", 1).remove(0);
    let id = place_order(&data, &ordering, 7).unwrap();
    wait_for_history(&node, &history, 7, &id);
    let backups = dir.path().join("backups");
    let (code, stdout, stderr) = node.cli(&[
        "backup",
        "create",
        "--to",
        backups.to_str().unwrap(),
        "--encrypt-to",
        ops.cert.to_str().unwrap(),
    ]);
    node.stop();
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("encrypted for"), "{stdout}");
    let backup = PathBuf::from(stdout.split_whitespace().nth(1).unwrap());
    let arg = backup.to_str().unwrap();

    // Nothing in the backup is readable without the key.
    let stored = files_under(&backup.join("data"));
    assert!(!stored.is_empty());
    for file in &stored {
        assert!(file.ends_with(".cms"), "{file} is not encrypted");
        let bytes = std::fs::read(backup.join("data").join(file)).unwrap();
        assert!(
            !bytes.windows(15).any(|w| w == b"SQLite format 3"),
            "{file} holds a plaintext database"
        );
    }
    // Standard CMS: openssl decrypts it with the recipient's key.
    let store = backup.join("data/services/ordering/store.db.cms");
    assert!(cms_decrypt(&store, "DER", &ops.key).starts_with(b"SQLite format 3\0"));

    let (code, _, stderr) = mortar(dir.path(), &["backup", "verify", arg]);
    assert_ne!(code, 0);
    assert!(stderr.contains("is encrypted; pass --key"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let (code, _, stderr) = mortar(
        dir.path(),
        &[
            "backup",
            "verify",
            arg,
            "--key",
            stranger.key.to_str().unwrap(),
        ],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("cannot decrypt this backup"), "{stderr}");
    assert!(stderr.contains("ops"), "the recipient is named: {stderr}");

    let key = ops.key.to_str().unwrap();
    let (code, stdout, stderr) = mortar(dir.path(), &["backup", "verify", arg, "--key", key]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("is good"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("replay order-history") && l.ends_with("equal")),
        "{stdout}"
    );

    // A flipped byte in an encrypted file fails verify, naming it.
    let bad = dir.path().join("bad");
    copy_tree(&backup, &bad);
    flip_byte(&bad.join("data/services/ordering/store.db.cms"));
    let (code, _, stderr) = mortar(
        dir.path(),
        &["backup", "verify", bad.to_str().unwrap(), "--key", key],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("FAIL data/services/ordering/store.db"),
        "{stderr}"
    );

    // Restore without the key is refused; with it, a node serves from it.
    let restored = dir.path().join("restored");
    let restored_arg = restored.to_str().unwrap();
    let (code, _, stderr) = mortar(
        dir.path(),
        &["backup", "restore", arg, "--data-dir", restored_arg],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("is encrypted"), "{stderr}");
    assert!(
        !restored.exists(),
        "a refused restore created the data directory"
    );
    let (code, stdout, stderr) = mortar(
        dir.path(),
        &[
            "backup",
            "restore",
            arg,
            "--data-dir",
            restored_arg,
            "--key",
            key,
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let node = RunningNode::start(&manifest, &restored);
    let ordering = node.wait_ready("ordering", 1).remove(0);
    let (code, order) = node.get_json(&ordering, &format!("/v1/orders/{id}"));
    assert_eq!(code, 200, "{order}");
}

/// Whether `pg_dump` and `pg_restore` run; under CI=true they must.
fn pg_tools_or_skip(test: &str) -> bool {
    let found = ["pg_dump", "pg_restore", "psql"].iter().all(|tool| {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: CI=true requires pg_dump, pg_restore and psql (apt-get install -y postgresql-client)"
        );
        eprintln!(
            "SKIPPED {test}: pg_dump/pg_restore/psql not found (apt-get install -y postgresql-client)"
        );
    }
    found
}

fn psql(url: &str, sql: &str) {
    let out = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn postgres_stores_are_backed_up_with_pg_dump_verified_in_a_scratch_database_and_restored() {
    const TEST: &str =
        "postgres_stores_are_backed_up_with_pg_dump_verified_in_a_scratch_database_and_restored";
    if !pg_tools_or_skip(TEST) {
        return;
    }
    let Some(database) = ScratchDatabase::create(TEST) else {
        return;
    };
    let db = database.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path());
    let data = dir.path().join("data");
    let env = [("MORTAR_STORE_URL", db)];
    let mut node = RunningNode::start_with_env(&manifest, &data, &env);
    let ordering = node.wait_ready("ordering", 1).remove(0);
    let history = node.wait_ready("order-history", 1).remove(0);
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = place_order(&data, &ordering, n).unwrap();
        wait_for_history(&node, &history, n, &id);
        ids.push(id);
    }
    let backups = dir.path().join("backups");
    let (code, stdout, stderr) = node.cli(&[
        "backup",
        "create",
        "--to",
        backups.to_str().unwrap(),
        "--store-url",
        db,
    ]);
    node.stop();
    assert_eq!(code, 0, "{stderr}");
    let backup = PathBuf::from(stdout.split_whitespace().nth(1).unwrap());
    let arg = backup.to_str().unwrap();
    let listed = mortar_backup::BackupManifest::load(&backup).unwrap();
    let dump = listed.postgres.clone().expect("a PostgreSQL dump");
    assert_eq!(dump.schemas, vec!["order_history", "ordering"]);
    assert!(dump.rows["ordering.events"] >= 3, "{:?}", dump.rows);
    assert_eq!(
        dump.rows["order_history.order_history"], 3,
        "{:?}",
        dump.rows
    );
    assert!(
        listed
            .files
            .iter()
            .any(|f| f.path == dump.file && f.kind == mortar_backup::FileKind::PostgresDump),
        "{listed:?}"
    );

    let (code, _, stderr) = mortar(dir.path(), &["backup", "verify", arg]);
    assert_ne!(code, 0);
    assert!(stderr.contains("pass --store-url"), "{stderr}");

    let (code, stdout, stderr) = mortar(dir.path(), &["backup", "verify", arg, "--store-url", db]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("checked with pg_restore into a scratch database"),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("replay order-history")
            && l.contains("3 event(s)")
            && l.ends_with("equal")),
        "{stdout}"
    );

    let bad = dir.path().join("bad");
    copy_tree(&backup, &bad);
    flip_byte(&bad.join(&dump.file));
    let (code, _, stderr) = mortar(
        dir.path(),
        &["backup", "verify", bad.to_str().unwrap(), "--store-url", db],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains(&format!("FAIL {}", dump.file)), "{stderr}");

    // Lose the read model, then restore over the same database: the
    // current schemas are kept aside and the backup's come back.
    psql(db, "DELETE FROM order_history.order_history");
    let restored = dir.path().join("restored");
    let (code, stdout, stderr) = mortar(
        dir.path(),
        &[
            "backup",
            "restore",
            arg,
            "--data-dir",
            restored.to_str().unwrap(),
            "--store-url",
            db,
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("restored PostgreSQL schema(s) order_history, ordering"),
        "{stdout}"
    );
    assert!(stdout.contains("_before_restore_"), "{stdout}");
    assert!(
        !restored.join("postgres").exists(),
        "the dump was left in the data directory"
    );

    let node = RunningNode::start_with_env(&manifest, &restored, &env);
    let ordering = node.wait_ready("ordering", 1).remove(0);
    let history = node.wait_ready("order-history", 1).remove(0);
    for (n, id) in ids.iter().enumerate() {
        let (code, order) = node.get_json(&ordering, &format!("/v1/orders/{id}"));
        assert_eq!(code, 200, "{order}");
        let (code, body) = node.get_json(&history, &format!("/v1/order-history?customer=c{n}"));
        assert_eq!(code, 200);
        assert!(body.to_string().contains(id.as_str()), "{body}");
    }
}

#[test]
fn restore_with_force_over_a_running_node_stops_restores_and_starts_the_services() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path());
    let data = dir.path().join("data");
    let node = RunningNode::start(&manifest, &data);
    let ordering = node.wait_ready("ordering", 1).remove(0);
    let history = node.wait_ready("order-history", 1).remove(0);
    let kept = place_order(&data, &ordering, 1).unwrap();
    wait_for_history(&node, &history, 1, &kept);
    let backups = dir.path().join("backups");
    let (code, stdout, stderr) = node.cli(&["backup", "create", "--to", backups.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let backup = stdout.split_whitespace().nth(1).unwrap().to_owned();
    let later = place_order(&data, &ordering, 2).unwrap();
    wait_for_history(&node, &history, 2, &later);

    let (code, stdout, stderr) = node.cli(&["backup", "restore", &backup, "--force"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("stopped ordering, order-history"),
        "{stdout}"
    );
    assert!(
        stdout.contains("restored the stores of ordering, order-history")
            && stdout.contains("all ready"),
        "{stdout}"
    );

    // The same node serves the backup's state: the order taken after the
    // backup is gone from both the event store and the read model.
    let ordering = node.wait_ready("ordering", 1).remove(0);
    let history = node.wait_ready("order-history", 1).remove(0);
    let (code, order) = node.get_json(&ordering, &format!("/v1/orders/{kept}"));
    assert_eq!(code, 200, "{order}");
    let (code, _) = node.get_json(&ordering, &format!("/v1/orders/{later}"));
    assert_eq!(code, 404);
    let (code, body) = node.get_json(&history, "/v1/order-history?customer=c2");
    assert_eq!(code, 200);
    assert!(!body.to_string().contains(&later), "{body}");
    let kept_aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("data.before-restore-"))
        .collect();
    assert_eq!(kept_aside.len(), 1, "{kept_aside:?}");
    assert!(kept_aside[0].join("services/ordering/store.db").is_file());
}
