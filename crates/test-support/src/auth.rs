//! Tokens for tests: a stand-in issuer with its own key, its key set served
//! on a killable port, and every kind of bad token a verifier must refuse.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mortar_auth::{Jwks, SigningKey, TokenIssuer, now_secs};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// An issuer for tests: one Ed25519 key, tokens for `issuer`/`audience`.
pub struct TestIssuer {
    /// The signing key.
    pub key: SigningKey,
    /// `iss` of its tokens.
    pub issuer: String,
    /// `aud` of its tokens.
    pub audience: String,
}

impl TestIssuer {
    /// A fresh key issuing for `issuer` and `audience`.
    pub fn new(issuer: &str, audience: &str) -> TestIssuer {
        TestIssuer {
            key: SigningKey::generate().unwrap(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        }
    }

    /// Its key set.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: vec![self.key.public_jwk()],
        }
    }

    /// A valid 15-minute token.
    pub fn token(&self, subject: &str, scopes: &[&str]) -> String {
        self.token_at(subject, scopes, now_secs(), Duration::from_secs(900))
    }

    /// A token issued at `now` for `ttl`.
    pub fn token_at(&self, subject: &str, scopes: &[&str], now: u64, ttl: Duration) -> String {
        TokenIssuer::new(&self.issuer, &self.audience, ttl)
            .issue_at(&self.key, subject, scopes, now)
            .unwrap()
            .token
    }

    /// Serves the key set at `GET /.well-known/jwks.json` on a loopback
    /// port; aborting the task takes the "issuer" down at once.
    pub async fn serve_jwks(&self) -> (SocketAddr, JoinHandle<()>) {
        let body = serde_json::to_string(&self.jwks()).unwrap();
        let app = Router::new().route(
            mortar_auth::DEFAULT_JWKS_PATH,
            get(move || {
                let body = body.clone();
                async move { ([("content-type", "application/jwk-set+json")], body) }
            }),
        );
        crate::http::serve_killable(app).await
    }

    /// Every kind of bad token, each with the `reason` a verifier must
    /// answer: tampered, expired, not yet valid, wrong audience, wrong
    /// issuer, `alg: none`, unknown `kid`.
    pub fn refusals(&self, scopes: &[&str]) -> Vec<(&'static str, String, &'static str)> {
        let now = now_secs();
        let hour = Duration::from_secs(3600);
        let valid = self.token("user-1", scopes);
        let other_audience = TestIssuer {
            key: self.key.clone(),
            issuer: self.issuer.clone(),
            audience: "someone-else".into(),
        };
        let other_issuer = TestIssuer {
            key: self.key.clone(),
            issuer: "impostor".into(),
            audience: self.audience.clone(),
        };
        let stranger = TestIssuer::new(&self.issuer, &self.audience);
        vec![
            ("tampered", tamper(&valid), "token-signature"),
            (
                "expired",
                self.token_at("user-1", scopes, now - 2 * 3600, hour),
                "token-expired",
            ),
            (
                "not yet valid",
                self.token_at("user-1", scopes, now + 3600, hour),
                "token-not-yet-valid",
            ),
            (
                "wrong audience",
                other_audience.token("user-1", scopes),
                "token-audience",
            ),
            (
                "wrong issuer",
                other_issuer.token("user-1", scopes),
                "token-issuer",
            ),
            ("alg none", alg_none(&valid), "token-algorithm"),
            (
                "unknown kid",
                stranger.token("user-1", scopes),
                "token-unknown-key",
            ),
        ]
    }
}

fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn encode_part(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// `token` with its claims changed (another subject, an admin scope) and
/// its signature kept: what an attacker editing a token gets.
pub fn tamper(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = decode_part(parts[1]);
    claims["sub"] = json!("admin");
    claims["scope"] = json!(format!(
        "{} identity:admin",
        claims["scope"].as_str().unwrap_or("")
    ));
    format!("{}.{}.{}", parts[0], encode_part(&claims), parts[2])
}

/// `token` re-headed as `alg: none`, with no signature.
pub fn alg_none(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut header = decode_part(parts[0]);
    header["alg"] = json!("none");
    format!("{}.{}.", encode_part(&header), parts[1])
}
