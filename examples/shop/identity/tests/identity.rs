//! identity as a process: sign-up, log-in, refresh with reuse detection,
//! its own token check on `/v1/identity/me`, and key rotation seen through
//! the published JWKS by an independent verifier.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::sync::Arc;

use mortar_auth::{Jwks, StaticJwks, Verifier, VerifierConfig};
use mortar_test_support::service::ServiceProcess;
use serde_json::{Value, json};

struct Identity {
    process: ServiceProcess,
    _dir: tempfile::TempDir,
}

fn start() -> Identity {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("identity.db").display());
    let process = ServiceProcess::start(
        Path::new(env!("CARGO_BIN_EXE_identity")),
        &[
            ("MORTAR_STORE_URL", &url),
            ("MORTAR_APP", "shop"),
            ("IDENTITY_ADMINS", "root"),
        ],
    );
    Identity { process, _dir: dir }
}

impl Identity {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req =
            reqwest::Client::new().request(method, format!("{}{path}", self.process.url()));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        if status >= 400 {
            assert_eq!(resp.headers()["content-type"], "application/problem+json");
        }
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn signup(&self, username: &str, password: &str) -> (u16, Value) {
        self.call(
            "POST",
            "/v1/identity/signup",
            None,
            Some(json!({"username": username, "password": password})),
        )
        .await
    }

    async fn login(&self, username: &str, password: &str) -> (u16, Value) {
        self.call(
            "POST",
            "/v1/identity/login",
            None,
            Some(json!({"username": username, "password": password})),
        )
        .await
    }

    async fn jwks(&self) -> Jwks {
        let (status, body) = self.call("GET", "/.well-known/jwks.json", None, None).await;
        assert_eq!(status, 200);
        serde_json::from_value(body).unwrap()
    }
}

#[tokio::test]
async fn sign_up_log_in_and_use_the_token() {
    let id = start();
    let (status, user) = id.signup("Ann", "correct horse battery").await;
    assert_eq!(status, 201, "{user}");
    assert_eq!(user["username"], "ann");
    assert_eq!(user["scopes"], json!(["orders"]));
    let subject = user["subject"].as_str().unwrap().to_owned();

    let (status, p) = id.signup("ann", "another password").await;
    assert_eq!(status, 409);
    assert_eq!(p["type"], "urn:mortar:shop:username-taken");
    let (status, p) = id.signup("bob", "short").await;
    assert_eq!(status, 422);
    assert_eq!(p["field"], "password");

    // Wrong password and unknown user look the same.
    let (status, wrong) = id.login("ann", "wrong horse battery").await;
    assert_eq!(status, 401);
    let (_, unknown) = id.login("nobody", "wrong horse battery").await;
    assert_eq!(wrong, unknown);
    assert_eq!(wrong["type"], "urn:mortar:shop:invalid-credentials");

    let (status, tokens) = id.login("ANN", "correct horse battery").await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    assert_eq!(tokens["scope"], "orders");
    let access = tokens["access_token"].as_str().unwrap();

    // Any verifier with the published keys accepts it.
    let verifier = Verifier::new(
        VerifierConfig::new("identity", "shop"),
        Arc::new(StaticJwks::new(id.jwks().await)),
    );
    let who = verifier.verify(access).await.unwrap();
    assert_eq!(who.subject, subject);

    let (status, me) = id.call("GET", "/v1/identity/me", Some(access), None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["subject"], subject.as_str());
    assert_eq!(me["username"], "ann");
    let (status, p) = id.call("GET", "/v1/identity/me", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(p["reason"], "token-missing");
    let forged = mortar_test_support::auth::tamper(access);
    let (status, p) = id.call("GET", "/v1/identity/me", Some(&forged), None).await;
    assert_eq!(status, 401);
    assert_eq!(p["reason"], "token-signature");
}

#[tokio::test]
async fn a_refresh_token_works_once_and_its_reuse_ends_the_session() {
    let id = start();
    id.signup("ann", "correct horse battery").await;
    let (_, first) = id.login("ann", "correct horse battery").await;
    let refresh = |token: &str| {
        id.call(
            "POST",
            "/v1/identity/refresh",
            None,
            Some(json!({"refresh_token": token})),
        )
    };
    let (status, second) = refresh(first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_ne!(second["access_token"], first["access_token"]);
    // The first refresh token again: someone else has it.
    let (status, p) = refresh(first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(p["reason"], "reused");
    // …so the second one is revoked too.
    let (status, p) = refresh(second["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(p["reason"], "reused");
    let (status, p) = refresh("made-up").await;
    assert_eq!(status, 401);
    assert_eq!(p["reason"], "unknown");
    // A fresh log-in starts a new chain.
    let (status, _) = id.login("ann", "correct horse battery").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn rotation_signs_with_a_new_key_and_keeps_the_old_one_published() {
    let id = start();
    id.signup("root", "correct horse battery").await;
    id.signup("ann", "correct horse battery").await;
    let (_, root) = id.login("root", "correct horse battery").await;
    assert_eq!(root["scope"], "orders identity:admin");
    let admin = root["access_token"].as_str().unwrap().to_owned();
    let (_, ann) = id.login("ann", "correct horse battery").await;
    let old_token = ann["access_token"].as_str().unwrap().to_owned();
    let before = id.jwks().await;
    assert_eq!(before.keys.len(), 1);

    let (status, p) = id
        .call("POST", "/v1/keys/rotate", Some(&old_token), None)
        .await;
    assert_eq!(status, 403, "only admins rotate");
    assert_eq!(p["missing_scopes"], json!(["identity:admin"]));
    let (status, rotated) = id.call("POST", "/v1/keys/rotate", Some(&admin), None).await;
    assert_eq!(status, 200, "{rotated}");
    let new_kid = rotated["kid"].as_str().unwrap();

    let after = id.jwks().await;
    let kids: Vec<&str> = after.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
    assert_eq!(kids, [new_kid, before.keys[0].kid.as_deref().unwrap()]);
    let (_, keys) = id.call("GET", "/v1/keys", Some(&admin), None).await;
    assert_eq!(keys["keys"][0]["current"], true);
    assert_eq!(keys["keys"][1]["current"], false);

    // New tokens carry the new kid; old tokens still verify.
    let (_, fresh) = id.login("ann", "correct horse battery").await;
    let fresh = fresh["access_token"].as_str().unwrap();
    let header = jsonwebtoken_header(fresh);
    assert_eq!(header["kid"], new_kid);
    let verifier = Verifier::new(
        VerifierConfig::new("identity", "shop"),
        Arc::new(StaticJwks::new(after)),
    );
    assert!(verifier.verify(fresh).await.is_ok());
    assert!(verifier.verify(&old_token).await.is_ok());
    for token in [fresh, old_token.as_str()] {
        let (status, _) = id.call("GET", "/v1/identity/me", Some(token), None).await;
        assert_eq!(status, 200);
    }
}

fn jsonwebtoken_header(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').next().unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}
