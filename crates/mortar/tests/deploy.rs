//! Deploys under constant load through the gateway, counted at a client
//! that does not retry: rolling, recreate and blue-green each complete with
//! zero failed requests; a release that never becomes ready, and one that
//! fails under analysis, are rolled back on their own; rollback runs the
//! previous release from its stored copy; history records it all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use mortar_test_support::load::{ConstantLoad, LoadReport};
use mortar_test_support::{RunningNode, binary, wait_for};

const INSTANCES: usize = 2;

/// How a release of the test service behaves.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// Answers; fails this percentage of requests.
    Serves(u32),
    /// Exits at once.
    Crashes,
    /// Runs but never reports ready.
    NeverReady,
}

/// The service's program: the fixture answering `version` on `/version`.
fn write_program(dir: &Path, version: &str, behaviour: Behaviour) {
    let fixture = binary("fixture-service");
    let body = match behaviour {
        Behaviour::Crashes => {
            "#!/bin/sh\necho 'this release crashes at start' >&2\nexit 3\n".to_owned()
        }
        Behaviour::Serves(fail_percent) => format!(
            "#!/bin/sh\nexec env FIXTURE_VERSION={version} FIXTURE_FAIL_PERCENT={fail_percent} {}\n",
            fixture.display()
        ),
        Behaviour::NeverReady => format!(
            "#!/bin/sh\nexec env FIXTURE_VERSION={version} FIXTURE_NEVER_READY=1 {}\n",
            fixture.display()
        ),
    };
    let path = dir.join("svc");
    let partial = dir.join("svc.partial");
    std::fs::write(&partial, body).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(partial, path).unwrap();
}

fn write_manifest(dir: &Path, progress_deadline: &str) {
    std::fs::write(
        dir.join("mortar.toml"),
        format!(
            r#"
[app]
name = "deploytest"

[services.web]
command = ["./svc"]
instances = {INSTANCES}
grace_period = "5s"
startup_timeout = "20s"

[services.web.deploy]
min_ready = "300ms"
drain_delay = "300ms"
progress_deadline = "{progress_deadline}"
hold_timeout = "15s"
traffic_share = 30
analysis = "2s"
min_requests = 30
promote_delay = "300ms"

[[gateway.routes]]
prefix = "/version"
service = "web"
"#
        ),
    )
    .unwrap();
}

struct App {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    node: RunningNode,
    url: String,
}

fn start() -> App {
    start_with("20s")
}

fn start_with(progress_deadline: &str) -> App {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    write_program(&path, "v1", Behaviour::Serves(0));
    write_manifest(&path, progress_deadline);
    let node = RunningNode::start(&path.join("mortar.toml"), &path.join("data"));
    node.wait_ready("web", INSTANCES);
    let url = format!("{}/version", node.gateway_url());
    wait_for("the gateway to answer", Duration::from_secs(30), || {
        let r = reqwest::blocking::get(&url).ok()?;
        r.status().is_success().then_some(())
    });
    App {
        _dir: dir,
        dir: path,
        node,
        url,
    }
}

/// Runs `mortar deploy …`; returns its exit code and output.
fn deploy(app: &App, args: &[&str]) -> (i32, String) {
    let (code, out, err) = app.node.cli(args);
    let text = format!("{out}{err}");
    println!("$ mortar {}\n{text}", args.join(" "));
    (code, text)
}

/// The versions the service's instances run, from `mortar status`.
fn versions(app: &App) -> Vec<String> {
    app.node
        .instances("web")
        .iter()
        .map(|i| i["version"].as_str().unwrap_or("?").to_owned())
        .collect()
}

fn print(what: &str, r: &LoadReport) {
    println!(
        "{what}: {} requests sent, {} failed {:?}; answers by version: {:?}; first failures: {:?}",
        r.sent, r.failed, r.failure_kinds, r.bodies, r.failures
    );
}

/// Load during a deploy: several clients, none retrying.
fn start_load(app: &App) -> ConstantLoad {
    ConstantLoad::start(&app.url, 4, Duration::from_millis(5))
}

#[test]
fn a_rolling_deploy_under_load_fails_no_request_and_rollback_runs_the_stored_release() {
    let app = start();
    let load = start_load(&app);
    write_program(&app.dir, "v2", Behaviour::Serves(0));
    let (code, out) = deploy(&app, &["deploy", "web", "--strategy", "rolling"]);
    std::thread::sleep(Duration::from_millis(500));
    let report = load.stop();
    print("rolling deploy v1 -> v2", &report);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("started web-") && out.contains("draining web-1"),
        "{out}"
    );
    assert!(out.contains("succeeded"), "{out}");
    assert_eq!(report.failed, 0, "{report:?}");
    assert!(
        report.bodies.get("v2").copied().unwrap_or(0) > 0,
        "{report:?}"
    );
    let v2 = versions(&app);
    assert_eq!(v2.len(), INSTANCES);
    assert!(v2.iter().all(|v| v != "boot" && v == &v2[0]), "{v2:?}");

    // v3 goes out, then `mortar rollback` brings v2 back although the
    // program on disk is v3 now: the release's stored copy runs.
    write_program(&app.dir, "v3", Behaviour::Serves(0));
    let (code, out) = deploy(&app, &["deploy", "web"]);
    assert_eq!(code, 0, "{out}");
    let load = start_load(&app);
    let (code, out) = deploy(&app, &["rollback", "web"]);
    let report = load.stop();
    print("rollback v3 -> v2", &report);
    assert_eq!(code, 0, "{out}");
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(versions(&app), v2);
    let answer = reqwest::blocking::get(&app.url).unwrap().text().unwrap();
    assert_eq!(answer.trim(), "v2");

    let (code, out, _) = app.node.cli(&["history", "web", "--json"]);
    assert_eq!(code, 0);
    let history: serde_json::Value = serde_json::from_str(&out).unwrap();
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 3, "{out}");
    assert!(history.iter().all(|d| d["state"] == "succeeded"), "{out}");
    assert_eq!(
        history[2]["to"], history[0]["to"],
        "the rollback went back to v2"
    );

    // A restarted node runs what was deployed, not what is on disk (v3).
    let App {
        _dir: keep,
        dir,
        mut node,
        ..
    } = app;
    node.stop();
    let node = RunningNode::start(&dir.join("mortar.toml"), &dir.join("data"));
    node.wait_ready("web", INSTANCES);
    let url = format!("{}/version", node.gateway_url());
    wait_for("v2 after the restart", Duration::from_secs(30), || {
        let text = reqwest::blocking::get(&url).ok()?.text().ok()?;
        (text.trim() == "v2").then_some(())
    });
    assert!(
        node.output()
            .iter()
            .any(|l| l.contains("runs the release its last deploy put there")),
        "the node says why"
    );
    drop(node);
    drop(keep);
}

#[test]
fn a_release_that_never_becomes_ready_is_rolled_back_without_a_failed_request() {
    let app = start();
    let load = start_load(&app);
    write_program(&app.dir, "broken", Behaviour::Crashes);
    let (code, out) = deploy(&app, &["deploy", "web", "--strategy", "rolling"]);
    let report = load.stop();
    print("rolling deploy of a crashing release", &report);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("rolled back") && out.contains("crashed"),
        "{out}"
    );
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(versions(&app), vec!["boot"; INSTANCES]);
    assert_eq!(report.bodies.keys().collect::<Vec<_>>(), ["v1"]);
    // The node counted the deploy and its rollback, and the dashboard
    // shows how it ended.
    assert_eq!(deploy_events(&app, "rolling", "started"), 1.0);
    assert_eq!(deploy_events(&app, "rolling", "rolled_back"), 1.0);
    assert_eq!(deploy_events(&app, "rolling", "succeeded"), 0.0);
    // (The snapshot is made once a second: wait for the next one.)
    let deploy = wait_for(
        "the dashboard to show the deploy",
        Duration::from_secs(30),
        || {
            let snapshot: serde_json::Value = app
                .node
                .admin_http()
                .get(format!("{}/v1/dashboard/snapshot", app.node.admin_url()))
                .send()
                .ok()?
                .json()
                .ok()?;
            let deploy = snapshot["deploys"][0].clone();
            (!deploy.is_null()).then_some(deploy)
        },
    );
    assert_eq!(deploy["state"], "rolled_back", "{deploy}");
    assert_eq!(deploy["in_progress"], false, "{deploy}");
}

/// `mortar_deploys_total` of the `web` service for `strategy` and `event`.
fn deploy_events(app: &App, strategy: &str, event: &str) -> f64 {
    let text = app
        .node
        .admin_http()
        .get(format!("{}/metrics", app.node.admin_url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let series =
        format!(r#"mortar_deploys_total{{service="web",strategy="{strategy}",event="{event}"}} "#);
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series}in:\n{text}"))
}

#[test]
fn a_recreate_deploy_holds_requests_during_the_swap_and_fails_none() {
    let app = start();
    let load = start_load(&app);
    write_program(&app.dir, "v2", Behaviour::Serves(0));
    let (code, out) = deploy(&app, &["deploy", "web", "--strategy", "recreate"]);
    std::thread::sleep(Duration::from_millis(500));
    let report = load.stop();
    print("recreate deploy v1 -> v2", &report);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("holding web's requests"), "{out}");
    assert!(out.contains("released held requests"), "{out}");
    assert_eq!(report.failed, 0, "{report:?}");
    assert!(
        report.bodies.get("v2").copied().unwrap_or(0) > 0,
        "{report:?}"
    );
    assert!(versions(&app).iter().all(|v| v != "boot"));
}

#[test]
fn blue_green_shares_traffic_promotes_on_command_and_rolls_back_a_failing_release() {
    let app = start();
    // A good release, promoted by an operator.
    let load = start_load(&app);
    write_program(&app.dir, "v2", Behaviour::Serves(0));
    let (code, out) = deploy(
        &app,
        &["deploy", "web", "--strategy", "blue-green", "--manual"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("awaiting promotion"), "{out}");
    // Both versions answer while the share is on.
    wait_for(
        "answers from both versions",
        Duration::from_secs(20),
        || {
            let r = load.report();
            (r.bodies.get("v1").copied().unwrap_or(0) > 0
                && r.bodies.get("v2").copied().unwrap_or(0) > 0)
                .then_some(())
        },
    );
    let (code, out) = deploy(&app, &["deploy", "promote", "web"]);
    let report = load.stop();
    print("blue-green v1 -> v2, promoted", &report);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("promoted: all traffic to"), "{out}");
    assert_eq!(report.failed, 0, "{report:?}");
    let v2 = versions(&app);
    assert_eq!(v2.len(), INSTANCES, "the old version is gone: {v2:?}");
    assert!(v2.iter().all(|v| v != "boot"));

    // A release failing half its requests: the analysis rolls it back.
    let load = start_load(&app);
    write_program(&app.dir, "v3", Behaviour::Serves(50));
    let (code, out) = deploy(&app, &["deploy", "web", "--strategy", "blue-green"]);
    let report = load.stop();
    print("blue-green v2 -> v3 (failing)", &report);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("analysis failed: error rate"), "{out}");
    assert_eq!(versions(&app), v2, "v2 still runs everywhere");
    // v3 got its share, and only v3 failed: its own breaker opened, not
    // the one of the version serving the rest.
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.contains("v3 failed as asked")),
        "{report:?}"
    );
    assert!(
        report.bodies.get("v2").copied().unwrap_or(0) > report.failed,
        "{report:?}"
    );
}

#[test]
fn bad_deploy_commands_name_the_problem_and_change_nothing() {
    let app = start();
    let cases: [(&[&str], &str); 6] = [
        (&["deploy", "nope"], "unknown service \"nope\""),
        (
            &["deploy", "web", "--release", "ffffffff"],
            "mortar releases",
        ),
        (
            &["deploy", "web", "--strategy", "canary"],
            "use rolling, recreate or blue-green",
        ),
        (
            &["deploy", "promote", "web"],
            "no deploy awaiting promotion",
        ),
        (&["rollback", "web"], "nothing to roll back to"),
        (&["deploy", "web", "--release", "boot"], "already runs boot"),
    ];
    for (args, expected) in cases {
        let (code, out) = deploy(&app, args);
        assert_eq!(code, 1, "{args:?}: {out}");
        let line = out.lines().last().unwrap_or_default();
        assert!(
            line.starts_with("error: ") && line.contains(expected),
            "{args:?}: {out}"
        );
    }
    assert_eq!(versions(&app), vec!["boot"; INSTANCES]);
    let (_, out, _) = app.node.cli(&["releases", "--json"]);
    assert_eq!(
        out.trim(),
        "[]",
        "no release was recorded for a bad command"
    );
    let (code, out, _) = app.node.cli(&["history", "web"]);
    assert_eq!(code, 0);
    assert!(out.contains("no finished deploys"), "{out}");
}

#[test]
fn a_release_that_runs_but_never_becomes_ready_is_rolled_back_at_the_progress_deadline() {
    let app = start_with("3s");
    let load = start_load(&app);
    write_program(&app.dir, "stuck", Behaviour::NeverReady);
    let (code, out) = deploy(&app, &["deploy", "web", "--strategy", "rolling"]);
    let report = load.stop();
    print(
        "rolling deploy of a release that never becomes ready",
        &report,
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("progress deadline of 3s"), "{out}");
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(versions(&app), vec!["boot"; INSTANCES]);
}
