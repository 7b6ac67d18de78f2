//! The web dashboard and `mortar top` against a real node: the login link
//! and its session cookie (and every way to be refused), the live event
//! stream, the terminal view, and the page in headless Chromium.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use mortar_test_support::browser::Browser;
use mortar_test_support::{RunningNode, binary, wait_for};
use serde_json::{Value, json};

/// A node with a web service behind the gateway and a slow consumer of
/// `jobs`, so published jobs pile up as the `workers` group's backlog.
fn start(dir: &Path) -> RunningNode {
    let manifest = dir.join("mortar.toml");
    std::fs::create_dir_all(dir.join("handled")).unwrap();
    std::fs::write(
        &manifest,
        format!(
            r#"
[app]
name = "dash"

[services.web]
command = ["{fixture}"]

[services.worker]
command = ["{fixture}"]
env = {{ FIXTURE_CONSUME = "jobs/workers", FIXTURE_WORK_MS = "600000", FIXTURE_CONCURRENCY = "1", FIXTURE_HANDLED_DIR = "{handled}" }}

[bus]
topics = ["jobs"]
ack_deadline = "900s"

[[gateway.routes]]
prefix = "/slow"
service = "web"
public = true
"#,
            fixture = binary("fixture-service").display(),
            handled = dir.join("handled").display()
        ),
    )
    .unwrap();
    let node = RunningNode::start(&manifest, &dir.join("data"));
    node.wait_ready("web", 1);
    node.wait_ready("worker", 1);
    node
}

/// A client that neither follows redirects nor sends credentials.
fn anonymous() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A fresh login link from `mortar dashboard`.
fn login_link(node: &RunningNode) -> String {
    let (code, stdout, stderr) = node.cli(&["dashboard"]);
    assert_eq!(code, 0, "{stderr}");
    let url = stdout.trim().to_owned();
    assert!(
        url.starts_with(&format!("{}/dashboard/login?token=", node.admin_url())),
        "{url}"
    );
    url
}

fn content_type(resp: &reqwest::blocking::Response) -> String {
    resp.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn login_link_session_cookie_event_stream_and_top() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let admin = node.admin_url();
    let http = anonymous();

    // No credentials: the page explains how to log in, the API answers
    // problem+json.
    let resp = http.get(format!("{admin}/dashboard")).send().unwrap();
    assert_eq!(resp.status(), 401);
    assert!(content_type(&resp).starts_with("text/html"));
    assert!(resp.text().unwrap().contains("mortar dashboard"));
    for path in ["/v1/dashboard/snapshot", "/v1/dashboard/events"] {
        let resp = http.get(format!("{admin}{path}")).send().unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        assert_eq!(content_type(&resp), "application/problem+json", "{path}");
    }
    // Only the admin may ask for a login link.
    let resp = http
        .post(format!("{admin}/v1/dashboard/login"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 401);

    // A made-up token is refused.
    let resp = http
        .get(format!("{admin}/dashboard/login?token=0123456789abcdef"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get(reqwest::header::SET_COOKIE).is_none());

    // A real link: once, for a strict HttpOnly cookie and a redirect that
    // takes the token out of the address bar.
    let link = login_link(&node);
    let resp = http.get(&link).send().unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()[reqwest::header::LOCATION], "/dashboard");
    let set_cookie = resp.headers()[reqwest::header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let reused = http.get(&link).send().unwrap();
    assert_eq!(reused.status(), 401, "a link works once");

    let with_cookie = |path: &str| {
        http.get(format!("{admin}{path}"))
            .header(reqwest::header::COOKIE, &cookie)
            .send()
            .unwrap()
    };
    let page = with_cookie("/dashboard");
    assert_eq!(page.status(), 200);
    let csp = page.headers()[reqwest::header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    assert!(page.text().unwrap().contains("id=\"services\""));
    let snapshot: Value = with_cookie("/v1/dashboard/snapshot").json().unwrap();
    assert_eq!(snapshot["app"], "dash");
    // The cookie reads the dashboard and nothing else.
    assert_eq!(with_cookie("/v1/status").status(), 401);
    let forged = http
        .get(format!("{admin}/v1/dashboard/snapshot"))
        .header(reqwest::header::COOKIE, format!("{cookie}0"))
        .send()
        .unwrap();
    assert_eq!(forged.status(), 401);

    // The event stream: a snapshot about once a second, every service in it.
    let events = with_cookie("/v1/dashboard/events");
    assert_eq!(events.status(), 200);
    assert!(content_type(&events).starts_with("text/event-stream"));
    let mut seqs = Vec::new();
    let mut name = String::new();
    for line in BufReader::new(events).lines() {
        let line = line.unwrap();
        if let Some(event) = line.strip_prefix("event: ") {
            name = event.to_owned();
        } else if let Some(data) = line.strip_prefix("data: ") {
            assert_eq!(name, "snapshot");
            let snap: Value = serde_json::from_str(data).unwrap();
            let services: Vec<&str> = snap["services"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["name"].as_str().unwrap())
                .collect();
            assert_eq!(services, ["web", "worker"], "{data}");
            seqs.push(snap["seq"].as_u64().unwrap());
            if seqs.len() == 2 {
                break;
            }
        }
    }
    assert!(seqs[1] > seqs[0], "{seqs:?}");

    // Traffic through the gateway and a backlog show up in the snapshot
    // and in `mortar top --once`.
    let gateway = node.gateway_url();
    let messages: Vec<Value> = (0..7).map(|n| json!({ "payload": n })).collect();
    let resp = node
        .admin_http()
        .post(format!("{admin}/v1/bus/topics/jobs/messages"))
        .json(&json!({ "messages": messages }))
        .send()
        .unwrap();
    assert!(resp.status().is_success());
    let stdout = wait_for(
        "mortar top --once showing the web service's traffic and the workers' backlog",
        Duration::from_secs(60),
        || {
            // Requests keep coming, so the recent rate is not zero.
            for _ in 0..5 {
                let resp = http.get(format!("{gateway}/slow?ms=1")).send().unwrap();
                assert_eq!(resp.status(), 200);
            }
            let (code, stdout, stderr) = node.cli(&["top", "--once"]);
            assert_eq!(code, 0, "{stderr}");
            let web_rps = stdout
                .lines()
                .find(|l| l.starts_with("web "))?
                .split_whitespace()
                .nth(5)?
                .parse::<f64>()
                .ok()?;
            let backlog = stdout
                .lines()
                .find(|l| l.starts_with("jobs → workers"))?
                .split_whitespace()
                .nth(3)?
                .parse::<u64>()
                .ok()?;
            (web_rps > 0.0 && backlog >= 6).then_some(stdout)
        },
    );
    for service in ["web ", "worker ", "  web-1", "  worker-1"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(service)),
            "{service}: {stdout}"
        );
    }
    assert!(stdout.contains("running"), "{stdout}");
}

/// Publishes `count` jobs through the node's bus API, as the admin.
fn publish(node: &RunningNode, count: u64) {
    let messages: Vec<Value> = (0..count).map(|n| json!({ "payload": n })).collect();
    let resp = node
        .admin_http()
        .post(format!("{}/v1/bus/topics/jobs/messages", node.admin_url()))
        .json(&json!({ "messages": messages }))
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "publish: {}", resp.status());
}

#[test]
fn the_page_shows_every_service_and_the_backlog_chart_moves_when_jobs_are_published() {
    let Some(browser) = Browser::launch("dashboard") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());

    browser.goto(&login_link(&node));
    // The link logged the browser in and the live stream fills the page.
    browser.wait_visible("#services tr[data-service='web']");
    for service in ["web", "worker"] {
        browser.wait_for(
            &format!("{service} ready on the page"),
            &format!(
                "const r = document.querySelector(\"#services tr[data-service='{service}']\"); \
                 return r !== null && r.dataset.state === 'running' && r.dataset.ready === '1';"
            ),
        );
    }
    let chart = "document.getElementById('backlog-jobs-workers')";
    let before = browser.wait_for(
        "the workers' backlog chart",
        &format!("const c = {chart}; return c && {{backlog: Number(c.dataset.backlog), line: c.querySelector('polyline').getAttribute('points')}};"),
    );
    let start_backlog = before["backlog"].as_u64().unwrap();

    publish(&node, 12);
    let after = browser.wait_for(
        "the backlog chart to rise by the jobs published",
        &format!(
            "const c = {chart}; const b = Number(c.dataset.backlog); \
             return b >= {} && {{backlog: b, line: c.querySelector('polyline').getAttribute('points')}};",
            start_backlog + 11
        ),
    );
    // The chart's line, not only its number, moved: its newest point is
    // higher (SVG y grows downwards).
    let last_y = |v: &Value| -> f64 {
        let line = v["line"].as_str().unwrap();
        let point = line.split(' ').next_back().unwrap();
        point.split(',').nth(1).unwrap().parse().unwrap()
    };
    assert_ne!(before["line"], after["line"]);
    assert!(last_y(&after) < 60.0, "{after}");
    // The displayed text agrees with the data attribute.
    let caption = browser.text("#backlog-jobs-workers figcaption");
    assert!(
        caption.contains(&after["backlog"].as_u64().unwrap().to_string()),
        "{caption}"
    );
    let shot = browser.screenshot("dashboard");
    assert!(std::fs::metadata(&shot).unwrap().len() > 0);
}
