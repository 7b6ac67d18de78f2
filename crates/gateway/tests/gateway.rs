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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// An answer larger than the client reads whole: it streams through.
async fn big() -> impl IntoResponse {
    (0..BIG_LINES)
        .map(|i| format!("{i:07}\n"))
        .collect::<String>()
}

const BIG_LINES: usize = 40_000;

/// An answer of unknown length: the upstream sends it in chunks.
async fn streamed() -> impl IntoResponse {
    let parts: Vec<Result<&'static str, std::io::Error>> =
        vec![Ok("one,"), Ok("two,"), Ok("three")];
    axum::body::Body::from_stream(futures::stream::iter(parts))
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
        .route("/v1/big", get(big))
        .route("/v1/stream", get(streamed))
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

/// Writes `raw` on a new connection and reads until the gateway closes it.
async fn raw_exchange(url: &str, raw: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(raw).await.unwrap();
    read_to_close(&mut s).await
}

async fn read_to_close(s: &mut tokio::net::TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the gateway closes the connection")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

async fn catalog_gateway(config: GatewayConfig) -> (Upstream, Running) {
    let up = upstream("catalog").await;
    let resolver = Arc::new(StaticResolver::new());
    resolver.set("catalog", vec![Endpoint::new("catalog-1", up.addr)]);
    (up, gateway(resolver, config).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_spread_evenly_over_the_serving_threads() {
    let (_up, gw) = catalog_gateway(GatewayConfig {
        threads: 2,
        ..config(vec![Route::new("/v1", "catalog", false)])
    })
    .await;
    let addr = gw.url.trim_start_matches("http://").to_owned();
    let mut open = Vec::new();
    for id in 0..10 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(format!("GET /v1/products/{id} HTTP/1.1\r\nHost: shop\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut seen = Vec::new();
        let wanted = format!("\"id\":{id}");
        let answered = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&seen).contains(&wanted) {
                let n = s.read(&mut buf).await.unwrap();
                assert!(
                    n > 0,
                    "closed before answering: {}",
                    String::from_utf8_lossy(&seen)
                );
                seen.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        assert!(answered.is_ok(), "connection {id} not answered");
        open.push(s);
    }
    assert_eq!(gw.gateway.open_connections(), vec![5, 5]);
    drop(open);
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while gw.gateway.open_connections() != vec![0, 0] {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "still counted: {:?}",
        gw.gateway.open_connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gateway_serves_two_listeners() {
    let (_up, gw) = catalog_gateway(config(vec![Route::new("/v1", "catalog", false)])).await;
    let second = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second_url = format!("http://{}", second.local_addr().unwrap());
    let stop = CancellationToken::new();
    let serving = tokio::spawn(gw.gateway.clone().serve(second, stop.clone()));
    for url in [&gw.url, &second_url] {
        let resp = reqwest::get(format!("{url}/v1/products/7")).await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
    }
    stop.cancel();
    let served = tokio::time::timeout(Duration::from_secs(10), serving).await;
    assert!(matches!(served, Ok(Ok(Ok(())))), "{served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (_up, gw) = catalog_gateway(config(vec![Route::new("/v1", "catalog", false)])).await;
    let text = raw_exchange(
        &gw.url,
        b"GET /v1/products/1 HTTP/1.1\r\nHost: shop\r\n\r\n\
          GET /v1/products/2 HTTP/1.1\r\nHost: shop\r\n\r\n\
          GET /v1/products/3 HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{text}");
    let at = |id: &str| text.find(&format!("\"id\":{id}")).expect(id);
    assert!(at("1") < at("2") && at("2") < at("3"), "{text}");
    assert_eq!(text.matches("connection: close").count(), 1, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_is_decoded_after_100_continue() {
    let (_up, gw) = catalog_gateway(config(vec![Route::new("/v1", "catalog", false)])).await;
    let mut s = tokio::net::TcpStream::connect(gw.url.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(
        b"POST /v1/echo HTTP/1.1\r\nHost: shop\r\nExpect: 100-continue\r\n\
          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
        .await
        .unwrap();
    let text = read_to_close(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 201 Created\r\n"), "{text}");
    assert!(text.ends_with("11 bytes"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_requests_get_a_problem_naming_the_fault_and_a_close() {
    let (up, gw) = catalog_gateway(config(vec![Route::new("/v1", "catalog", false)])).await;
    let many: String = (0..150).map(|i| format!("x-{i}: v\r\n")).collect();
    let cases = [
        (
            "NOT HTTP AT ALL\r\n\r\n".to_owned(),
            "400 Bad Request",
            "malformed",
        ),
        (
            "POST /v1/echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc"
                .to_owned(),
            "400 Bad Request",
            "send only one",
        ),
        (
            "POST /v1/echo HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\nabc".to_owned(),
            "400 Bad Request",
            "invalid Content-Length",
        ),
        (
            format!("GET /v1/products/1 HTTP/1.1\r\n{many}\r\n"),
            "431 Request Header Fields Too Large",
            "100 header fields",
        ),
        (
            "POST /v1/echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_owned(),
            "501 Not Implemented",
            "only `chunked`",
        ),
        (
            "POST /v1/echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n".to_owned(),
            "400 Bad Request",
            "chunk size",
        ),
    ];
    for (raw, status, detail) in cases {
        let text = raw_exchange(&gw.url, raw.as_bytes()).await;
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{raw:?} -> {text}"
        );
        assert!(text.contains("application/problem+json"), "{text}");
        assert!(text.contains("connection: close"), "{text}");
        assert!(text.contains(detail), "{raw:?} -> {text}");
    }
    assert_eq!(
        up.hits.load(Ordering::Relaxed),
        0,
        "nothing unreadable was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_http_1_0_requests_follow_their_framing_rules() {
    let (_up, gw) = catalog_gateway(config(vec![Route::new("/v1", "catalog", false)])).await;
    let text = raw_exchange(&gw.url, b"HEAD /v1/products/7 HTTP/1.0\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("content-length: "), "{text}");
    assert!(
        text.ends_with("\r\n\r\n"),
        "a HEAD answer has no body: {text}"
    );
    // A refused HEAD (its declared body is over the limit) gets no body either.
    let text = raw_exchange(
        &gw.url,
        b"HEAD /v1/products/7 HTTP/1.1\r\nHost: shop\r\nContent-Length: 99999999\r\n\r\n",
    )
    .await;
    assert!(
        text.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
        "{text}"
    );
    assert!(
        text.ends_with("\r\n\r\n"),
        "a refused HEAD has no body: {text}"
    );
    let text = raw_exchange(
        &gw.url,
        b"GET /v1/products/7 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\
          GET /v1/products/8 HTTP/1.0\r\n\r\n",
    )
    .await;
    assert_eq!(text.matches("connection: keep-alive").count(), 1, "{text}");
    assert!(text.contains("\"id\":8"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_answer_streams_through_whole() {
    let (_up, gw) = catalog_gateway(config(vec![Route::new("/v1", "catalog", false)])).await;
    let body = reqwest::get(format!("{}/v1/big", gw.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body.len(), BIG_LINES * 8);
    assert!(
        body.lines()
            .enumerate()
            .all(|(i, l)| l == format!("{i:07}"))
    );
    let text = raw_exchange(&gw.url, b"GET /v1/big HTTP/1.0\r\n\r\n").await;
    assert!(
        text.ends_with(&format!("{:07}\n", BIG_LINES - 1)),
        "whole body before the close"
    );
    // Unknown length: chunked to an HTTP/1.1 client, until close to 1.0.
    let text = raw_exchange(
        &gw.url,
        b"GET /v1/stream HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert!(text.ends_with("0\r\n\r\n"), "{text}");
    let body = reqwest::get(format!("{}/v1/stream", gw.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "one,two,three");
    let text = raw_exchange(&gw.url, b"GET /v1/stream HTTP/1.0\r\n\r\n").await;
    assert!(!text.contains("transfer-encoding"), "{text}");
    assert!(text.ends_with("\r\n\r\none,two,three"), "{text}");
}

/// A raw answer is a 408 with a problem+json body.
fn assert_timed_out(text: &str) {
    assert!(
        text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{text}"
    );
    assert!(text.contains("application/problem+json"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_gets_408_and_a_body_sent_in_pieces_in_time_is_forwarded() {
    let (_up, gw) = catalog_gateway(GatewayConfig {
        body_timeout: Duration::from_millis(300),
        ..config(vec![Route::new("/v1", "catalog", false)])
    })
    .await;
    let text = raw_exchange(
        &gw.url,
        b"POST /v1/echo HTTP/1.1\r\nHost: shop\r\nContent-Length: 10\r\n\r\nabc",
    )
    .await;
    assert_timed_out(&text);
    assert!(text.contains("request body for /v1/echo"), "{text}");
    // A body in two pieces, well within the timeout, goes through.
    let addr = gw.url.trim_start_matches("http://");
    let mut quick = tokio::net::TcpStream::connect(addr).await.unwrap();
    quick
        .write_all(b"POST /v1/echo HTTP/1.1\r\nHost: shop\r\nContent-Length: 10\r\nConnection: close\r\n\r\nabc")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    quick.write_all(b"defghij").await.unwrap();
    let text = read_to_close(&mut quick).await;
    assert!(text.starts_with("HTTP/1.1 201 Created\r\n"), "{text}");
    assert!(text.ends_with("10 bytes"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_head_gets_408_and_an_idle_connection_stays_open() {
    let (_up, gw) = catalog_gateway(GatewayConfig {
        head_timeout: Duration::from_millis(300),
        ..config(vec![Route::new("/v1", "catalog", false)])
    })
    .await;
    let text = raw_exchange(&gw.url, b"GET /v1/products/1 HTTP/1.1\r\nHost: sh").await;
    assert_timed_out(&text);
    // A kept-alive connection that sends nothing is not timed out.
    let addr = gw.url.trim_start_matches("http://");
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    idle.write_all(b"GET /v1/products/2 HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let text = read_to_close(&mut idle).await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
}

#[tokio::test]
async fn an_answer_is_passed_on_without_its_hop_by_hop_fields_and_with_our_trace() {
    let answer: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Kept: yes\r\n\
          Connection: X-Secret\r\nX-Secret: for the proxy only\r\nKeep-Alive: timeout=5\r\n\
          Traceparent: 00-11111111111111111111111111111111-2222222222222222-01\r\n\
          Content-Length: 5\r\n\r\nhello";
    let (addr, _) = mortar_test_support::http::raw_server(move |_| Some(answer.to_vec())).await;
    let resolver = Arc::new(StaticResolver::new());
    resolver.set("catalog", vec![Endpoint::new("raw-1", addr)]);
    let gw = gateway(
        resolver,
        config(vec![Route::new("/v1/products", "catalog", false)]),
    )
    .await;
    let text = raw_exchange(
        &gw.url,
        b"GET /v1/products/1 HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole answer");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, "hello");
    // Fields are passed on as the instance wrote them.
    assert!(head.contains("\r\nContent-Type: text/plain\r\n"), "{head}");
    assert!(head.contains("\r\nX-Kept: yes\r\n"), "{head}");
    let lower = head.to_ascii_lowercase();
    for gone in ["x-secret", "keep-alive", "1111111111"] {
        assert!(!lower.contains(gone), "{gone} was passed on: {head}");
    }
    assert_eq!(lower.matches("\r\ntraceparent: 00-").count(), 1, "{head}");
    assert_eq!(
        lower.matches("\r\ncontent-length: 5\r\n").count(),
        1,
        "{head}"
    );
    assert!(lower.contains("\r\nconnection: close"), "{head}");
}
