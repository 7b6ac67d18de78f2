//! The gateway in front of real local upstreams.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use mortar_gateway::{Gateway, GatewayConfig, RateLimitConfig, Route};
use mortar_resilience::{ClientConfig, Endpoint, StaticResolver};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// An upstream instance that can be killed like a process.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Me {
    name: &'static str,
    hits: Arc<AtomicU64>,
}

async fn product(State(me): State<Me>, Path(id): Path<u32>) -> impl IntoResponse {
    me.hits.fetch_add(1, Ordering::Relaxed);
    axum::Json(json!({"id": id, "instance": me.name}))
}

async fn page(State(me): State<Me>, Path(name): Path<String>) -> impl IntoResponse {
    me.hits.fetch_add(1, Ordering::Relaxed);
    let cc = match name.as_str() {
        "fresh" => "public, max-age=60",
        "private" => "private, max-age=60",
        "nostore" => "no-store",
        _ => "public, max-age=0",
    };
    (
        [(header::CACHE_CONTROL, cc), (header::ETAG, "\"page-v1\"")],
        format!("page {name} from {}", me.name),
    )
}

async fn whoami(State(me): State<Me>, headers: HeaderMap) -> impl IntoResponse {
    me.hits.fetch_add(1, Ordering::Relaxed);
    let trace = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    axum::Json(json!({"instance": me.name, "traceparent": trace}))
}

async fn echo(body: axum::body::Bytes) -> impl IntoResponse {
    (StatusCode::CREATED, format!("{} bytes", body.len()))
}

async fn upstream(name: &'static str) -> Upstream {
    let hits = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route("/v1/products/{id}", get(product))
        .route("/v1/pages/{name}", get(page))
        .route("/v1/whoami", get(whoami))
        .route("/v1/echo", post(echo))
        .with_state(Me {
            name,
            hits: hits.clone(),
        });
    let (addr, server) = mortar_test_support::http::serve_killable(app).await;
    Upstream { addr, hits, server }
}

struct Running {
    url: String,
    gateway: Gateway,
    _stop: tokio_util::sync::DropGuard,
}

async fn gateway(resolver: Arc<StaticResolver>, config: GatewayConfig) -> Running {
    let gateway = Gateway::new(resolver, config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(gateway.clone().serve(listener, stop.clone()));
    Running {
        url,
        gateway,
        _stop: stop.drop_guard(),
    }
}

fn config(routes: Vec<Route>) -> GatewayConfig {
    GatewayConfig {
        routes,
        client: ClientConfig {
            per_try_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(5),
            ..ClientConfig::default()
        },
        rate_limit: None,
        ..GatewayConfig::default()
    }
}

fn is_problem(resp: &reqwest::Response) -> bool {
    resp.headers()
        .get("content-type")
        .is_some_and(|v| v == "application/problem+json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_longest_prefix_and_answers_problems() {
    let catalog = upstream("catalog").await;
    let other = upstream("other").await;
    let resolver = Arc::new(StaticResolver::new());
    resolver.set("catalog", vec![Endpoint::new("catalog-1", catalog.addr)]);
    resolver.set("other", vec![Endpoint::new("other-1", other.addr)]);
    let gw = gateway(
        resolver,
        config(vec![
            Route::new("/v1", "other", false),
            Route::new("/v1/products", "catalog", true),
            Route::new("/v1/ghosts", "ghost", false),
        ]),
    )
    .await;
    let http = reqwest::Client::new();

    let body: Value = http
        .get(format!("{}/v1/products/7", gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({"id": 7, "instance": "catalog"}));
    let body: Value = http
        .get(format!("{}/v1/whoami", gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["instance"], "other");

    let resp = http
        .get(format!("{}/nowhere", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(is_problem(&resp));
    let p: Value = resp.json().await.unwrap();
    assert!(
        p["detail"].as_str().unwrap().contains("/v1/products"),
        "{p}"
    );

    let resp = http
        .get(format!("{}/v1/ghosts/1", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(is_problem(&resp));
    let p: Value = resp.json().await.unwrap();
    assert!(p["detail"].as_str().unwrap().contains("ghost"), "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_is_kept_or_started_and_passed_upstream() {
    let up = upstream("up").await;
    let resolver = Arc::new(StaticResolver::new());
    resolver.set("up", vec![Endpoint::new("up-1", up.addr)]);
    let gw = gateway(resolver, config(vec![Route::new("/v1", "up", false)])).await;
    let http = reqwest::Client::new();
    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let body: Value = http
        .get(format!("{}/v1/whoami", gw.url))
        .header("traceparent", given)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seen = body["traceparent"].as_str().unwrap();
    assert!(
        seen.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{seen}"
    );
    assert_ne!(seen, given, "the gateway hop has its own parent id");

    let body: Value = http
        .get(format!("{}/v1/whoami", gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seen = body["traceparent"].as_str().unwrap();
    assert_eq!(seen.len(), 55, "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_answers_304_and_serves_stale_pages_while_upstream_is_down() {
    let up = upstream("web").await;
    let resolver = Arc::new(StaticResolver::new());
    resolver.set("web", vec![Endpoint::new("web-1", up.addr)]);
    let gw = gateway(resolver, config(vec![Route::new("/v1/pages", "web", true)])).await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}/v1/pages/{p}", gw.url);

    // Fresh for 60 s: the second GET never reaches the upstream.
    let r = http.get(url("fresh")).send().await.unwrap();
    assert_eq!(r.headers()["x-mortar-cache"], "miss");
    let hits = up.hits.load(Ordering::Relaxed);
    let r = http.get(url("fresh")).send().await.unwrap();
    assert_eq!(r.headers()["x-mortar-cache"], "hit");
    assert_eq!(r.text().await.unwrap(), "page fresh from web");
    assert_eq!(up.hits.load(Ordering::Relaxed), hits);

    // If-None-Match with the ETag: 304, no body.
    let r = http
        .get(url("fresh"))
        .header("if-none-match", "\"page-v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], "\"page-v1\"");

    // max-age=0 pages are revalidated upstream every time.
    http.get(url("home")).send().await.unwrap();
    let r = http
        .get(url("home"))
        .header("if-none-match", "\"page-v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    // private and no-store pages are never shared.
    http.get(url("private")).send().await.unwrap();
    http.get(url("nostore")).send().await.unwrap();

    up.server.abort();
    let r = http.get(url("home")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-mortar-cache"], "stale");
    assert!(r.headers().contains_key("warning"));
    assert_eq!(r.text().await.unwrap(), "page home from web");
    for page in ["private", "nostore"] {
        let r = http.get(url(page)).send().await.unwrap();
        assert!(r.status().is_server_error(), "{page}: {}", r.status());
        assert!(is_problem(&r));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_runs_sub_requests_and_bounds_their_number() {
    let up = upstream("catalog").await;
    let resolver = Arc::new(StaticResolver::new());
    resolver.set("catalog", vec![Endpoint::new("catalog-1", up.addr)]);
    let gw = gateway(resolver, config(vec![Route::new("/v1", "catalog", false)])).await;
    let http = reqwest::Client::new();
    let batch = json!({"requests": [
        {"method": "GET", "path": "/v1/products/1"},
        {"method": "GET", "path": "/v1/products/2", "headers": {"accept": "application/json"}},
        {"method": "POST", "path": "/v1/echo", "body": {"hello": "world"}},
        {"method": "GET", "path": "/elsewhere"},
    ]});
    let r = http
        .post(format!("{}/v1/batch", gw.url))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let rs = body["responses"].as_array().unwrap();
    assert_eq!(rs.len(), 4);
    assert_eq!(rs[0]["status"], 200);
    assert_eq!(rs[0]["body"], json!({"id": 1, "instance": "catalog"}));
    assert_eq!(rs[1]["body"]["id"], 2);
    assert_eq!(rs[2]["status"], 201);
    assert_eq!(rs[2]["body"], "17 bytes");
    assert_eq!(rs[3]["status"], 404);
    assert_eq!(rs[3]["body"]["status"], 404);

    let many: Vec<Value> = (0..51)
        .map(|i| json!({"path": format!("/v1/products/{i}")}))
        .collect();
    let r = http
        .post(format!("{}/v1/batch", gw.url))
        .json(&json!({"requests": many}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(is_problem(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413() {
    let up = upstream("catalog").await;
    let resolver = Arc::new(StaticResolver::new());
    resolver.set("catalog", vec![Endpoint::new("catalog-1", up.addr)]);
    let gw = gateway(
        resolver,
        GatewayConfig {
            max_body_bytes: 1024,
            ..config(vec![Route::new("/v1", "catalog", false)])
        },
    )
    .await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/echo", gw.url))
        .body(vec![b'x'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .post(format!("{}/v1/echo", gw.url))
        .body(vec![b'x'; 2000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(is_problem(&r));
    // Without a Content-Length (streamed), the limit still holds.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..4).map(|_| Ok(vec![b'y'; 600])).collect();
    let r = http
        .post(format!("{}/v1/echo", gw.url))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_gets_429_with_retry_after() {
    let up = upstream("catalog").await;
    let resolver = Arc::new(StaticResolver::new());
    resolver.set("catalog", vec![Endpoint::new("catalog-1", up.addr)]);
    let gw = gateway(
        resolver,
        GatewayConfig {
            rate_limit: Some(RateLimitConfig {
                per_second: 0.5,
                burst: 3.0,
            }),
            ..config(vec![Route::new("/v1", "catalog", false)])
        },
    )
    .await;
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let r = http
            .get(format!("{}/v1/products/1", gw.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = http
        .get(format!("{}/v1/products/1", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(is_problem(&r));
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_split_follows_the_weights() {
    let v1 = upstream("v1").await;
    let v2 = upstream("v2").await;
    let resolver = Arc::new(StaticResolver::new());
    resolver.set(
        "catalog",
        vec![
            Endpoint::new("catalog-1", v1.addr).with_version("v1"),
            Endpoint::new("catalog-2", v2.addr).with_version("v2"),
        ],
    );
    let gw = gateway(resolver, config(vec![Route::new("/v1", "catalog", false)])).await;
    gw.gateway
        .set_split("catalog", vec![("v1".into(), 80), ("v2".into(), 20)]);
    let http = reqwest::Client::new();
    let mut tasks = JoinSet::new();
    for _ in 0..4 {
        let http = http.clone();
        let url = format!("{}/v1/whoami", gw.url);
        tasks.spawn(async move {
            for _ in 0..250 {
                let r = http.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200);
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    let (a, b) = (
        v1.hits.load(Ordering::Relaxed),
        v2.hits.load(Ordering::Relaxed),
    );
    assert_eq!(a + b, 1000);
    assert!((100..=300).contains(&b), "v1 {a}, v2 {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_request_in_flight_finish_then_serve_returns() {
    let entered = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let (e, r) = (entered.clone(), release.clone());
    let app = Router::new().route(
        "/v1/hold",
        get(move || {
            let (e, r) = (e.clone(), r.clone());
            async move {
                e.notify_one();
                r.notified().await;
                "released"
            }
        }),
    );
    let (addr, _server) = mortar_test_support::http::serve_killable(app).await;
    let resolver = Arc::new(StaticResolver::new());
    resolver.set("hold", vec![Endpoint::new("hold-0", addr)]);
    let gateway = Gateway::new(
        resolver,
        config(vec![Route::new("/v1/hold", "hold", false)]),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/hold", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let serving = tokio::spawn(gateway.serve(listener, stop.clone()));

    let call = tokio::spawn(reqwest::get(url.clone()));
    entered.notified().await;
    stop.cancel();
    release.notify_one();
    let resp = call.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "released");
    serving.await.unwrap().unwrap();
    assert!(
        reqwest::get(url).await.is_err(),
        "no longer accepting after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_forwards_like_serve() {
    let catalog = upstream("catalog").await;
    let resolver = Arc::new(StaticResolver::new());
    resolver.set("catalog", vec![Endpoint::new("c-0", catalog.addr)]);
    let gateway = Gateway::new(
        resolver,
        config(vec![Route::new("/v1/products", "catalog", false)]),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = gateway
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let resp = reqwest::get(format!("{url}/v1/products/3")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().contains_key("traceparent"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, json!({"id": 3, "instance": "catalog"}));
    let resp = reqwest::get(format!("{url}/nowhere")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(is_problem(&resp));
}
