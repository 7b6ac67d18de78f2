//! A service for tests of the SDK harness and the supervisor.
//!
//! - `GET /slow?ms=N` answers 200 after N milliseconds (in-flight requests
//!   during shutdown);
//! - `FIXTURE_EXIT_AT_START=<code>` makes it exit with that code before
//!   binding (crash loops, configuration failures);
//! - `FIXTURE_NEVER_READY=1` keeps `/health/ready` failing (a release
//!   that starts but never becomes ready);
//! - `FIXTURE_NEEDS` is a required variable when `FIXTURE_REQUIRE=1`;
//! - `GET /version` answers `FIXTURE_VERSION`, or 500 for
//!   `FIXTURE_FAIL_PERCENT` percent of requests (a bad release for deploy
//!   tests);
//! - `GET /env/{name}` shows the environment the supervisor gave it;
//! - `FIXTURE_CONSUME=<topic>/<group>` consumes that subscription through
//!   `ctx.consume` (draining at shutdown), taking `FIXTURE_WORK_MS` per
//!   message, `FIXTURE_CONCURRENCY` at once, and appending a line
//!   `<payload> <attempt>` per handled message to its own file in
//!   `FIXTURE_HANDLED_DIR` (see `mortar_test_support::consumer`).

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::routing::get;

fn main() -> ExitCode {
    if let Ok(code) = std::env::var("FIXTURE_EXIT_AT_START") {
        eprintln!("fixture: exiting at start with {code} as asked");
        return ExitCode::from(code.parse::<u8>().unwrap_or(1));
    }
    mortar_sdk::run("fixture", |ctx| async move {
        if ctx.env().raw("FIXTURE_REQUIRE") == Some("1") {
            let _: String = ctx.env().required("FIXTURE_NEEDS", "any text")?;
        }
        if ctx.env().raw("FIXTURE_NEVER_READY") == Some("1") {
            ctx.readiness().add_check("fixture", || async {
                Err("FIXTURE_NEVER_READY is set".to_owned())
            });
        }
        if let Some(subscription) = ctx.env().raw("FIXTURE_CONSUME") {
            consume(&ctx, subscription)?;
        }
        Ok(Router::new()
            .route(
                "/slow",
                get(|Query(q): Query<HashMap<String, u64>>| async move {
                    let ms = q.get("ms").copied().unwrap_or(1000);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    format!("slept {ms} ms\n")
                }),
            )
            .route("/pid", get(|| async { std::process::id().to_string() }))
            .route("/version", get(version))
            .route(
                "/env/{name}",
                get(
                    |axum::extract::Path(name): axum::extract::Path<String>| async move {
                        std::env::var(name).unwrap_or_default()
                    },
                ),
            ))
    })
}

/// `FIXTURE_VERSION`, or a 500 for `FIXTURE_FAIL_PERCENT`% of requests
/// (every n-th, so the share is exact).
async fn version() -> (axum::http::StatusCode, String) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEEN: AtomicU64 = AtomicU64::new(0);
    let version = std::env::var("FIXTURE_VERSION").unwrap_or_default();
    let percent: u64 = std::env::var("FIXTURE_FAIL_PERCENT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let n = SEEN.fetch_add(1, Ordering::Relaxed);
    if percent > 0 && n % 100 < percent {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("{version} failed as asked\n"),
        );
    }
    (axum::http::StatusCode::OK, version)
}

/// Consumes `topic/group`, recording every handled message (see the module
/// doc); the record is written before the handler returns, so before the ack.
fn consume(ctx: &mortar_sdk::Context, subscription: &str) -> Result<(), mortar_sdk::BoxError> {
    let (topic, group) = subscription
        .split_once('/')
        .ok_or("FIXTURE_CONSUME must be <topic>/<group>")?;
    let work = Duration::from_millis(
        ctx.env()
            .raw("FIXTURE_WORK_MS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let concurrency = ctx
        .env()
        .raw("FIXTURE_CONCURRENCY")
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let dir = ctx
        .env()
        .raw("FIXTURE_HANDLED_DIR")
        .ok_or("FIXTURE_HANDLED_DIR is required with FIXTURE_CONSUME")?;
    let path = std::path::Path::new(dir).join(format!(
        "{}-{}.log",
        ctx.service().instance,
        std::process::id()
    ));
    let file = std::sync::Arc::new(std::sync::Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?,
    ));
    ctx.consume(
        topic,
        group,
        concurrency,
        move |message: mortar_sdk::bus::Message| {
            let file = file.clone();
            async move {
                tokio::time::sleep(work).await;
                let line = format!(
                    "{} {}\n",
                    String::from_utf8_lossy(&message.payload),
                    message.attempt
                );
                let mut file = file
                    .lock()
                    .map_err(|_| "record file lock poisoned".to_owned())?;
                std::io::Write::write_all(&mut *file, line.as_bytes()).map_err(|e| e.to_string())
            }
        },
    )
}
