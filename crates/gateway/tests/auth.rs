//! Authenticated routes at the gateway: bad tokens are refused with
//! problem+json before anything is forwarded, the verified caller is passed
//! on, forged identity headers never reach a service, and signed-in users
//! keep working while the issuer is down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use mortar_auth::VerifierConfig;
use mortar_gateway::{AuthConfig, Gateway, GatewayConfig, Route};
use mortar_resilience::{ClientConfig, Endpoint, StaticResolver};
use mortar_test_support::auth::TestIssuer;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn header(h: &HeaderMap, name: &str) -> Value {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map_or(Value::Null, |v| json!(v))
}

/// What the service saw: the identity headers and whether a token came.
async fn seen(State(hits): State<Arc<AtomicU64>>, h: HeaderMap) -> axum::Json<Value> {
    hits.fetch_add(1, Ordering::Relaxed);
    axum::Json(json!({
        "subject": header(&h, "x-mortar-subject"),
        "scopes": header(&h, "x-mortar-scopes"),
        "authorization": h.contains_key("authorization"),
    }))
}

struct Setup {
    url: String,
    issuer: TestIssuer,
    hits: Arc<AtomicU64>,
    jwks_server: tokio::task::JoinHandle<()>,
    _stop: tokio_util::sync::DropGuard,
}

async fn setup() -> Setup {
    let hits = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route("/v1/orders", get(seen))
        .route("/v1/admin", get(seen))
        .route("/v1/products", get(seen))
        .with_state(hits.clone());
    let (service, _) = mortar_test_support::http::serve_killable(app).await;
    let issuer = TestIssuer::new("identity", "shop");
    let (jwks, jwks_server) = issuer.serve_jwks().await;
    let resolver = Arc::new(StaticResolver::new());
    resolver.set("shop", vec![Endpoint::new("shop-1", service)]);
    resolver.set("identity", vec![Endpoint::new("identity-1", jwks)]);
    let mut verifier = VerifierConfig::new("identity", "shop");
    verifier.leeway = Duration::from_secs(5);
    let config = GatewayConfig {
        routes: vec![
            Route::authenticated("/v1/orders", "shop", ["orders"]),
            Route::authenticated("/v1/admin", "shop", ["orders", "admin"]),
            Route::new("/v1/products", "shop", true),
        ],
        client: ClientConfig {
            per_try_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(5),
            ..ClientConfig::default()
        },
        rate_limit: None,
        auth: Some(AuthConfig {
            issuer_service: "identity".into(),
            jwks_path: mortar_auth::DEFAULT_JWKS_PATH.into(),
            verifier,
        }),
        ..GatewayConfig::default()
    };
    let gateway = Gateway::new(resolver, config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(gateway.serve(listener, stop.clone()));
    Setup {
        url,
        issuer,
        hits,
        jwks_server,
        _stop: stop.drop_guard(),
    }
}

async fn get_with(url: &str, token: Option<&str>, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn problem(resp: reqwest::Response) -> Value {
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert!(resp.headers().contains_key("www-authenticate"));
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_401_problems_and_never_forwarded() {
    let s = setup().await;
    let orders = format!("{}/v1/orders", s.url);
    for (kind, token, reason) in s.issuer.refusals(&["orders"]) {
        let resp = get_with(&orders, Some(&token), &[]).await;
        assert_eq!(resp.status(), 401, "{kind}");
        let p = problem(resp).await;
        assert_eq!(p["reason"], reason, "{kind}: {p}");
        assert_eq!(p["type"], format!("urn:mortar:problem:{reason}"), "{kind}");
        assert_eq!(p["status"], 401);
        assert_eq!(p["instance"], "/v1/orders");
        assert!(!p["detail"].as_str().unwrap().is_empty());
        // Nothing about keys or expected values leaks.
        let text = p.to_string();
        assert!(!text.contains(s.issuer.key.kid()), "{kind}: {text}");
        assert!(!text.contains("someone-else") && !text.contains("impostor"));
    }
    let resp = get_with(&orders, None, &[]).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(problem(resp).await["reason"], "token-missing");
    let resp = get_with(&orders, None, &[("authorization", "Basic dXNlcjpwdw==")]).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(problem(resp).await["reason"], "token-malformed");
    assert_eq!(s.hits.load(Ordering::Relaxed), 0, "nothing was forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verified_caller_is_passed_on_and_scopes_are_enforced() {
    let s = setup().await;
    let token = s.issuer.token("user-1", &["orders"]);
    // A client trying to claim another identity is ignored.
    let forged = [("x-mortar-subject", "admin"), ("x-mortar-scopes", "admin")];
    let resp = get_with(&format!("{}/v1/orders", s.url), Some(&token), &forged).await;
    assert_eq!(resp.status(), 200);
    let seen: Value = resp.json().await.unwrap();
    assert_eq!(
        seen,
        json!({"subject": "user-1", "scopes": "orders", "authorization": true})
    );

    let resp = get_with(&format!("{}/v1/admin", s.url), Some(&token), &[]).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer error=\"insufficient_scope\", scope=\"admin\""
    );
    let p = problem(resp).await;
    assert_eq!(p["reason"], "insufficient-scope");
    assert_eq!(p["missing_scopes"], json!(["admin"]));
    let admin = s.issuer.token("user-2", &["orders", "admin"]);
    let resp = get_with(&format!("{}/v1/admin", s.url), Some(&admin), &[]).await;
    assert_eq!(resp.status(), 200);

    // Public routes need no token and never see forged identities either.
    let resp = get_with(&format!("{}/v1/products", s.url), None, &forged).await;
    assert_eq!(resp.status(), 200);
    let seen: Value = resp.json().await.unwrap();
    assert_eq!(seen["subject"], Value::Null);
    assert_eq!(seen["scopes"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_sub_requests_are_checked_one_by_one() {
    let s = setup().await;
    let token = s.issuer.token("user-1", &["orders"]);
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/batch", s.url))
        .json(&json!({"requests": [
            {"path": "/v1/orders", "headers": {"authorization": format!("Bearer {token}")}},
            {"path": "/v1/orders"},
            {"path": "/v1/orders", "headers": {"x-mortar-subject": "admin"}},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let r = &body["responses"];
    assert_eq!(r[0]["status"], 200);
    assert_eq!(r[0]["body"]["subject"], "user-1");
    assert_eq!(r[1]["status"], 401);
    assert_eq!(r[1]["body"]["reason"], "token-missing");
    assert_eq!(r[2]["status"], 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_in_users_keep_working_while_the_issuer_is_down() {
    let s = setup().await;
    let token = s.issuer.token("user-1", &["orders"]);
    let orders = format!("{}/v1/orders", s.url);
    assert_eq!(get_with(&orders, Some(&token), &[]).await.status(), 200);
    s.jwks_server.abort();
    // Keys are kept; a new token under a known key still verifies.
    for _ in 0..5 {
        assert_eq!(get_with(&orders, Some(&token), &[]).await.status(), 200);
    }
    let later = s.issuer.token("user-3", &["orders"]);
    let resp = get_with(&orders, Some(&later), &[]).await;
    assert_eq!(resp.status(), 200);
    // Forged tokens are still refused, without waiting on the issuer.
    let stranger = TestIssuer::new("identity", "shop").token("user-1", &["orders"]);
    let started = std::time::Instant::now();
    let resp = get_with(&orders, Some(&stranger), &[]).await;
    assert_eq!(resp.status(), 401);
    assert!(started.elapsed() < Duration::from_secs(10));
}
