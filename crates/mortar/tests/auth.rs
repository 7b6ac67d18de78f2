//! Signed-in users through a real node: the identity service issues
//! tokens, the gateway checks them on authenticated routes (401/403
//! problem+json for bad ones), and while identity is stopped signed-in
//! users keep working, public pages keep answering and only new log-ins
//! fail, with a clear 503.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use mortar_test_support::auth::{TestIssuer, alg_none, tamper};
use mortar_test_support::{RunningNode, binary, wait_for};
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};

/// A shop with catalog (public), ordering (authenticated) and identity.
fn start(dir: &Path, identity_env: &str) -> RunningNode {
    let manifest = dir.join("mortar.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
[app]
name = "authshop"

[services.catalog]
command = ["{catalog}"]

[services.ordering]
command = ["{ordering}"]

[services.identity]
command = ["{identity}"]
env = {{ {identity_env} }}

[bus]
topics = ["orders"]

[gateway.auth]
issuer_service = "identity"
leeway = "1s"

[[gateway.routes]]
prefix = "/v1/products"
service = "catalog"
public = true

[[gateway.routes]]
prefix = "/v1/orders"
service = "ordering"
authenticated = true
scopes = ["orders"]

[[gateway.routes]]
prefix = "/v1/identity"
service = "identity"
public = true

[[gateway.routes]]
prefix = "/v1/keys"
service = "identity"
authenticated = true
scopes = ["identity:admin"]
"#,
            catalog = binary("catalog").display(),
            ordering = binary("ordering").display(),
            identity = binary("identity").display(),
        ),
    )
    .unwrap();
    let node = RunningNode::start(&manifest, &dir.join("data"));
    for service in ["catalog", "ordering", "identity"] {
        node.wait_ready(service, 1);
    }
    node
}

struct Shop {
    node: RunningNode,
    gateway: String,
    http: Client,
}

impl Shop {
    fn new(dir: &Path, identity_env: &str) -> Shop {
        let node = start(dir, identity_env);
        let gateway = node.gateway_url();
        let http = Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Shop {
            node,
            gateway,
            http,
        }
    }

    fn send(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.gateway));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().unwrap()
    }

    /// Signs up (waiting until the gateway reaches identity) and logs in.
    fn sign_in(&self, username: &str) -> Value {
        let credentials = json!({"username": username, "password": "correct horse battery"});
        wait_for(
            "identity through the gateway",
            Duration::from_secs(30),
            || {
                let status = self
                    .send(
                        "POST",
                        "/v1/identity/signup",
                        None,
                        Some(credentials.clone()),
                    )
                    .status();
                (status == 201).then_some(())
            },
        );
        let resp = self.send("POST", "/v1/identity/login", None, Some(credentials));
        assert_eq!(resp.status(), 200);
        resp.json().unwrap()
    }

    /// Places an order, waiting until the gateway reaches ordering.
    fn first_order(&self, token: &str) -> Value {
        wait_for(
            "ordering through the gateway",
            Duration::from_secs(30),
            || {
                let resp = self.place_order(token);
                match resp.status().as_u16() {
                    201 => Some(resp.json().unwrap()),
                    503 => None,
                    other => panic!("{other}: {}", resp.text().unwrap()),
                }
            },
        )
    }

    fn place_order(&self, token: &str) -> Response {
        self.send(
            "POST",
            "/v1/orders",
            Some(token),
            Some(json!({"customer": "ann", "lines": [
                {"sku": "MUG-001", "quantity": 1, "unit_price_cents": 1290}]})),
        )
    }
}

/// A problem+json body, checked for its content type.
fn problem(resp: Response) -> Value {
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    resp.json().unwrap()
}

fn access_token(tokens: &Value) -> String {
    tokens["access_token"].as_str().unwrap().to_owned()
}

#[test]
fn signed_in_users_keep_working_while_identity_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let shop = Shop::new(dir.path(), r#"IDENTITY_ACCESS_TTL = "15m""#);
    let token = access_token(&shop.sign_in("ann"));

    let order = shop.first_order(&token);
    let order_path = format!("/v1/orders/{}", order["id"].as_str().unwrap());
    let resp = shop.send("GET", &order_path, None, None);
    assert_eq!(resp.status(), 401);
    assert_eq!(problem(resp)["reason"], "token-missing");
    assert_eq!(shop.send("GET", "/v1/products/1", None, None).status(), 200);

    let (code, _, err) = shop.node.cli(&["stop", "identity"]);
    assert_eq!(code, 0, "{err}");

    // The signed-in user carries on, on the gateway's cached keys.
    for _ in 0..5 {
        let resp = shop.send("GET", &order_path, Some(&token), None);
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(shop.place_order(&token).status(), 201);
    // Public pages too.
    assert_eq!(shop.send("GET", "/v1/products/2", None, None).status(), 200);
    // Forged tokens are still refused as such, not as "unavailable".
    let stranger = TestIssuer::new("identity", "authshop").token("ann", &["orders"]);
    let resp = shop.send("GET", &order_path, Some(&stranger), None);
    assert_eq!(resp.status(), 401);
    assert_eq!(problem(resp)["reason"], "token-unknown-key");
    // New log-ins cannot happen: a clear 503 naming the service.
    let credentials = json!({"username": "ann", "password": "correct horse battery"});
    // (Identity leaves the registry before it stops, so this is a 503 at
    // once; the wait only covers a slow machine.)
    let resp = wait_for("log-ins refused with 503", Duration::from_secs(10), || {
        let resp = shop.send(
            "POST",
            "/v1/identity/login",
            None,
            Some(credentials.clone()),
        );
        assert!(resp.status().is_server_error(), "{}", resp.status());
        (resp.status() == 503).then_some(resp)
    });
    let p = problem(resp);
    assert_eq!(p["service"], "identity", "{p}");
    assert!(p["detail"].as_str().unwrap().contains("identity"), "{p}");

    let (code, _, err) = shop.node.cli(&["start", "identity"]);
    assert_eq!(code, 0, "{err}");
    let resp = wait_for("log-ins again", Duration::from_secs(30), || {
        let resp = shop.send(
            "POST",
            "/v1/identity/login",
            None,
            Some(credentials.clone()),
        );
        (resp.status() == 200).then_some(resp)
    });
    let again: Value = resp.json().unwrap();
    assert_eq!(
        shop.send("GET", &order_path, Some(&access_token(&again)), None)
            .status(),
        200
    );
}

#[test]
fn bad_tokens_scopes_rotation_and_expiry_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let shop = Shop::new(
        dir.path(),
        r#"IDENTITY_ACCESS_TTL = "3s", IDENTITY_ADMINS = "root""#,
    );
    let ann = shop.sign_in("ann");
    let token = access_token(&ann);
    let order = shop.first_order(&token);
    let order_path = format!("/v1/orders/{}", order["id"].as_str().unwrap());

    let stranger = TestIssuer::new("identity", "authshop").token("ann", &["orders"]);
    for (kind, bad, reason) in [
        ("tampered", tamper(&token), "token-signature"),
        ("alg none", alg_none(&token), "token-algorithm"),
        ("unknown kid", stranger, "token-unknown-key"),
    ] {
        let resp = shop.send("GET", &order_path, Some(&bad), None);
        assert_eq!(resp.status(), 401, "{kind}");
        assert!(
            resp.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let p = problem(resp);
        assert_eq!(p["reason"], reason, "{kind}: {p}");
        assert_eq!(p["instance"], order_path.as_str());
    }

    // Key management needs the admin scope.
    let resp = shop.send("GET", "/v1/keys", Some(&token), None);
    assert_eq!(resp.status(), 403);
    assert_eq!(problem(resp)["missing_scopes"], json!(["identity:admin"]));
    let root = access_token(&shop.sign_in("root"));
    assert_eq!(
        shop.send("GET", "/v1/keys", Some(&root), None).status(),
        200
    );

    // Rotation: tokens signed with the new key are accepted at once (the
    // gateway fetches the keys on the unknown kid); older ones still are.
    let resp = shop.send("POST", "/v1/keys/rotate", Some(&root), None);
    assert_eq!(resp.status(), 200);
    let credentials = json!({"username": "ann", "password": "correct horse battery"});
    let fresh: Value = shop
        .send("POST", "/v1/identity/login", None, Some(credentials))
        .json()
        .unwrap();
    wait_for(
        "the new key at the gateway",
        Duration::from_secs(10),
        || {
            let resp = shop.send("GET", &order_path, Some(&access_token(&fresh)), None);
            (resp.status() == 200).then_some(())
        },
    );

    // Access tokens live 3 s here (+1 s leeway at the gateway).
    let resp = wait_for(
        "ann's first token to expire",
        Duration::from_secs(30),
        || {
            let resp = shop.send("GET", &order_path, Some(&token), None);
            (resp.status() == 401).then_some(resp)
        },
    );
    let p = problem(resp);
    assert_eq!(p["reason"], "token-expired", "{p}");
    assert_eq!(p["type"], "urn:mortar:problem:token-expired");
    // The refresh token gets a new access token.
    let resp = shop.send(
        "POST",
        "/v1/identity/refresh",
        None,
        Some(json!({"refresh_token": ann["refresh_token"]})),
    );
    assert_eq!(resp.status(), 200);
    let renewed: Value = resp.json().unwrap();
    assert_eq!(
        shop.send("GET", &order_path, Some(&access_token(&renewed)), None)
            .status(),
        200
    );
}
