//! The smallest mortar service: one route, everything else from the SDK.
//! `mortar bench start` measures how fast this becomes ready.

use axum::{Router, routing::get};

fn main() -> std::process::ExitCode {
    mortar_sdk::run("minimal", |_ctx| async move {
        Ok(Router::new().route("/", get(|| async { "hello from mortar\n" })))
    })
}
