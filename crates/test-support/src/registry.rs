//! A stand-in for the node's registry API, so a service started alone
//! ([`crate::service::ServiceProcess`]) can still call other services by name
//! through `ctx.client()` (which asks `MORTAR_NODE_URL`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// A fake node answering `GET /v1/registry/services/{name}` from a fixed
/// table, and accepting the SDK's endpoint reports.
pub struct FakeRegistry {
    /// `http://127.0.0.1:<port>`: pass it as `MORTAR_NODE_URL`.
    pub url: String,
    task: JoinHandle<()>,
}

type Table = Arc<HashMap<String, Vec<SocketAddr>>>;

async fn service(
    State(table): State<Table>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> axum::Json<Value> {
    // A blocking query (with `index`) waits as the real node does when
    // nothing changed, so the SDK's follower does not spin.
    if q.contains_key("index") {
        let wait = q
            .get("wait_ms")
            .and_then(|w| w.parse().ok())
            .unwrap_or(30_000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    let instances: Vec<Value> = table
        .get(&name)
        .map(|addrs| {
            addrs
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    json!({"id": format!("{name}-{}", i + 1), "address": a.to_string(), "version": "test"})
                })
                .collect()
        })
        .unwrap_or_default();
    axum::Json(json!({"index": 1, "instances": instances}))
}

impl FakeRegistry {
    /// Serves `services` (name → instance addresses) on a free loopback port.
    pub async fn start(services: &[(&str, SocketAddr)]) -> FakeRegistry {
        let mut table: HashMap<String, Vec<SocketAddr>> = HashMap::new();
        for (name, addr) in services {
            table.entry((*name).to_owned()).or_default().push(*addr);
        }
        let app = Router::new()
            .route("/v1/registry/services/{name}", get(service))
            .route(
                "/v1/instances/{id}/endpoint",
                post(|| async { axum::Json(json!({})) }),
            )
            .with_state(Arc::new(table));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeRegistry { url, task }
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}
