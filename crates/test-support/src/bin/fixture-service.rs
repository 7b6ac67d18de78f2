//! A service for tests of the SDK harness and the supervisor.
//!
//! - `GET /slow?ms=N` answers 200 after N milliseconds (in-flight requests
//!   during shutdown);
//! - `FIXTURE_EXIT_AT_START=<code>` makes it exit with that code before
//!   binding (crash loops, configuration failures);
//! - `FIXTURE_NEEDS` is a required variable when `FIXTURE_REQUIRE=1`;
//! - `GET /env/{name}` shows the environment the supervisor gave it.

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
