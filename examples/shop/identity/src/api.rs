//! The identity service's HTTP API.
//!
//! - `POST /v1/identity/signup` `{username, password}` → 201 the new user
//! - `POST /v1/identity/login` `{username, password}` → 200 tokens
//! - `POST /v1/identity/refresh` `{refresh_token}` → 200 new tokens (the
//!   presented refresh token is used up; using it again revokes its chain)
//! - `GET /v1/identity/me` (signed in) → who the token says you are
//! - `GET /.well-known/jwks.json` → the public keys (RFC 7517)
//! - `GET /v1/keys`, `POST /v1/keys/rotate` (scope `identity:admin`) → the
//!   signing keys; a rotation makes a new key the signing key and keeps
//!   the old one published until its tokens have expired.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mortar_auth::{
    DEFAULT_JWKS_PATH, FetchError, Jwks, JwksSource, TokenIssuer, Verifier, now_secs, random_token,
};
use mortar_sdk::Problem;
use mortar_sdk::auth::{Auth, Caller};
use mortar_sdk::http::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::IdentityConfig;
use crate::password;
use crate::store::{Exchange, Store, StoreError, User};

/// The scope that may manage signing keys.
pub(crate) const ADMIN_SCOPE: &str = "identity:admin";

/// The longest password accepted, in bytes: argon2 takes any length, but
/// a megabyte "password" is a denial-of-service attempt.
const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) store: Store,
    pub(crate) config: Arc<IdentityConfig>,
    pub(crate) tokens: TokenIssuer,
    /// This service's own verifier, told at once about rotations.
    pub(crate) verifier: Verifier,
}

/// The signing keys as verifiers must see them, straight from the store:
/// the identity service verifies its own tokens without a network call.
pub(crate) struct LocalKeys {
    pub(crate) store: Store,
    pub(crate) config: Arc<IdentityConfig>,
}

#[async_trait::async_trait]
impl JwksSource for LocalKeys {
    async fn fetch(&self) -> Result<Jwks, FetchError> {
        jwks(&self.store, &self.config)
            .await
            .map_err(|e| FetchError::Source(e.to_string()))
    }

    fn describe(&self) -> String {
        "the identity store".to_owned()
    }
}

async fn jwks(store: &Store, config: &IdentityConfig) -> Result<Jwks, StoreError> {
    let keys = store
        .published_keys(config.key_retention(), now_secs())
        .await?;
    Ok(Jwks {
        keys: keys.iter().map(|k| k.key.public_jwk()).collect(),
    })
}

pub(crate) fn routes(api: Api, auth: &Auth) -> Router {
    let open = Router::new()
        .route("/v1/identity/signup", post(signup))
        .route("/v1/identity/login", post(login))
        .route("/v1/identity/refresh", post(refresh))
        .route(DEFAULT_JWKS_PATH, get(publish_keys));
    let signed_in = Router::new()
        .route("/v1/identity/me", get(me))
        .route_layer(auth.require(&[]));
    let admin = Router::new()
        .route("/v1/keys", get(list_keys))
        .route("/v1/keys/rotate", post(rotate))
        .route_layer(auth.require(&[ADMIN_SCOPE]));
    open.merge(signed_in).merge(admin).with_state(api)
}

fn store_problem(error: StoreError) -> Problem {
    tracing::error!(error = %error, "identity store failed");
    Problem::unavailable("the identity store is not available; try again shortly")
}

fn password_problem(error: password::PasswordError) -> Problem {
    tracing::error!(error = %error, "password hashing failed");
    Problem::unavailable("sign-in is not available right now; try again shortly")
}

/// A field of a request body that is not acceptable: 422 naming it.
#[derive(Debug)]
struct Invalid {
    field: &'static str,
    detail: String,
}

impl From<Invalid> for Problem {
    fn from(i: Invalid) -> Problem {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, i.detail)
            .with_title("Invalid field")
            .with("field", i.field)
    }
}

fn invalid(field: &'static str, detail: impl Into<String>) -> Invalid {
    Invalid {
        field,
        detail: detail.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    username: String,
    password: String,
}

/// Lower-cases a username and checks its form: 3–64 of `a-z 0-9 . _ -`,
/// starting with a letter or digit.
fn normalize_username(raw: &str) -> Result<String, Invalid> {
    let name = raw.to_ascii_lowercase();
    let ok = (3..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(name)
    } else {
        Err(invalid(
            "username",
            "a username is 3 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        ))
    }
}

fn check_password(password: &str) -> Result<(), Invalid> {
    let chars = password.chars().count();
    if chars < 8 || password.len() > MAX_PASSWORD_BYTES {
        return Err(invalid(
            "password",
            format!("a password is at least 8 characters and at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct NewUser {
    subject: String,
    username: String,
    scopes: Vec<String>,
}

async fn signup(State(api): State<Api>, Json(c): Json<Credentials>) -> Result<Response, Problem> {
    let username = normalize_username(&c.username)?;
    check_password(&c.password)?;
    let password_hash = password::hash(c.password).await.map_err(password_problem)?;
    let id = format!(
        "u_{}",
        random_token(12).map_err(|e| Problem::internal(e.to_string()))?
    );
    let user = User {
        id: id.clone(),
        username: username.clone(),
        password_hash,
        scopes: api.config.default_scopes.clone(),
    };
    match api.store.add_user(user, now_secs()).await {
        Ok(()) => {}
        Err(StoreError::UsernameTaken(name)) => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                format!("the username {name:?} is taken; choose another"),
            )
            .with_type("urn:mortar:shop:username-taken")
            .with_title("Username taken")
            .with("field", "username"));
        }
        Err(e) => return Err(store_problem(e)),
    }
    tracing::info!(subject = %id, "user signed up");
    let body = NewUser {
        subject: id,
        username,
        scopes: api.config.default_scopes.clone(),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// The token response (RFC 6749 §5.1).
#[derive(Debug, Serialize)]
struct Tokens {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    refresh_token: String,
    refresh_expires_in: u64,
    scope: String,
}

fn no_store(tokens: Tokens) -> Response {
    // Tokens must not be cached by anyone (RFC 6749 §5.1).
    ([(header::CACHE_CONTROL, "no-store")], Json(tokens)).into_response()
}

fn refresh_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn invalid_credentials() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "the username or password is wrong",
    )
    .with_type("urn:mortar:shop:invalid-credentials")
    .with_title("Invalid credentials")
}

impl Api {
    /// The scopes of `user`'s tokens: what the user was granted, plus the
    /// admin scope for the configured administrators.
    fn scopes_of(&self, user: &User) -> Vec<String> {
        let mut scopes = user.scopes.clone();
        if self.config.admins.contains(&user.username) && !scopes.iter().any(|s| s == ADMIN_SCOPE) {
            scopes.push(ADMIN_SCOPE.to_owned());
        }
        scopes
    }

    /// An access token for `user` and the refresh token `refresh` (stored
    /// by the caller).
    async fn tokens(&self, user: &User, refresh: String) -> Result<Tokens, Problem> {
        let now = now_secs();
        let key = self.store.current_key(now).await.map_err(store_problem)?;
        let scopes = self.scopes_of(user);
        let issued = self
            .tokens
            .issue_at(&key, &user.id, &scopes, now)
            .map_err(|e| {
                tracing::error!(error = %e, "cannot sign a token");
                Problem::internal("cannot issue a token right now")
            })?;
        Ok(Tokens {
            access_token: issued.token,
            token_type: "Bearer",
            expires_in: self.tokens.ttl().as_secs(),
            refresh_token: refresh,
            refresh_expires_in: self.config.refresh_ttl.as_secs(),
            scope: scopes.join(" "),
        })
    }
}

async fn login(State(api): State<Api>, Json(c): Json<Credentials>) -> Result<Response, Problem> {
    if c.password.len() > MAX_PASSWORD_BYTES || c.username.len() > 256 {
        return Err(invalid_credentials());
    }
    let user = api
        .store
        .user_by_name(&c.username.to_ascii_lowercase())
        .await
        .map_err(store_problem)?;
    let stored = match &user {
        Some(u) => u.password_hash.clone(),
        None => password::decoy().await,
    };
    let matches = password::verify(c.password, stored)
        .await
        .map_err(password_problem)?;
    let Some(user) = user.filter(|_| matches) else {
        tracing::info!("log-in refused: wrong username or password");
        return Err(invalid_credentials());
    };
    let refresh = random_token(32).map_err(|e| Problem::internal(e.to_string()))?;
    let family = random_token(12).map_err(|e| Problem::internal(e.to_string()))?;
    let expires = now_secs() + api.config.refresh_ttl.as_secs();
    api.store
        .add_refresh(refresh_hash(&refresh), &user.id, &family, expires)
        .await
        .map_err(store_problem)?;
    let tokens = api.tokens(&user, refresh).await?;
    tracing::info!(subject = %user.id, "user logged in");
    Ok(no_store(tokens))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    refresh_token: String,
}

fn bad_refresh(reason: &'static str, detail: &str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, detail)
        .with_type("urn:mortar:shop:invalid-refresh-token")
        .with_title("Invalid refresh token")
        .with("reason", reason)
}

async fn refresh(
    State(api): State<Api>,
    Json(r): Json<RefreshRequest>,
) -> Result<Response, Problem> {
    if r.refresh_token.is_empty() || r.refresh_token.len() > 256 {
        return Err(bad_refresh(
            "unknown",
            "the refresh token is not valid; log in again",
        ));
    }
    let next = random_token(32).map_err(|e| Problem::internal(e.to_string()))?;
    let now = now_secs();
    let exchanged = api
        .store
        .exchange_refresh(
            refresh_hash(&r.refresh_token),
            refresh_hash(&next),
            now,
            now + api.config.refresh_ttl.as_secs(),
        )
        .await
        .map_err(store_problem)?;
    let user_id = match exchanged {
        Exchange::Done { user_id } => user_id,
        Exchange::Unknown => {
            return Err(bad_refresh(
                "unknown",
                "the refresh token is not valid; log in again",
            ));
        }
        Exchange::Expired => {
            return Err(bad_refresh(
                "expired",
                "the refresh token has expired; log in again",
            ));
        }
        Exchange::Reused => {
            tracing::warn!("a used refresh token was presented again; its chain is revoked");
            return Err(bad_refresh(
                "reused",
                "the refresh token was already used; every token of this log-in is revoked, log in again",
            ));
        }
    };
    let user = api
        .store
        .user_by_id(&user_id)
        .await
        .map_err(store_problem)?
        .ok_or_else(|| bad_refresh("unknown", "the refresh token's user no longer exists"))?;
    Ok(no_store(api.tokens(&user, next).await?))
}

async fn me(State(api): State<Api>, Caller(who): Caller) -> Result<Response, Problem> {
    let user = api
        .store
        .user_by_id(&who.subject)
        .await
        .map_err(store_problem)?;
    Ok(Json(json!({
        "subject": who.subject,
        "username": user.map(|u| u.username),
        "scopes": who.scopes,
        "expires_at": who.expires_at,
    }))
    .into_response())
}

async fn publish_keys(State(api): State<Api>) -> Result<Response, Problem> {
    let set = jwks(&api.store, &api.config).await.map_err(store_problem)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/jwk-set+json"),
            // Short: a rotated key must reach verifiers soon; a cached copy
            // may stand in while identity is down.
            (
                header::CACHE_CONTROL,
                "public, max-age=10, stale-if-error=86400",
            ),
        ],
        serde_json::to_string(&set).unwrap_or_default(),
    )
        .into_response())
}

async fn list_keys(State(api): State<Api>) -> Result<Response, Problem> {
    let keys = api
        .store
        .published_keys(api.config.key_retention(), now_secs())
        .await
        .map_err(store_problem)?;
    let keys: Vec<_> = keys
        .iter()
        .map(|k| {
            json!({
                "kid": k.key.kid(),
                "created_at": k.created_at,
                "retired_at": k.retired_at,
                "current": k.retired_at.is_none(),
            })
        })
        .collect();
    Ok(Json(json!({ "keys": keys })).into_response())
}

async fn rotate(State(api): State<Api>, Caller(who): Caller) -> Result<Response, Problem> {
    let key = api
        .store
        .rotate(None, api.config.key_retention(), now_secs())
        .await
        .map_err(store_problem)?
        .ok_or_else(|| Problem::internal("the rotation did not happen"))?;
    api.verifier.reload().await;
    tracing::info!(kid = key.kid(), by = %who.subject, "signing key rotated on request");
    Ok(Json(json!({ "kid": key.kid() })).into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn usernames_are_normalized_and_checked() {
        assert_eq!(normalize_username("Ann.B-1").unwrap(), "ann.b-1");
        for bad in ["ab", "-ann", "ann b", "ännchen", &"a".repeat(65)] {
            let p = Problem::from(normalize_username(bad).unwrap_err());
            assert_eq!(p.status, 422, "{bad}");
            assert_eq!(p.extensions["field"], "username");
        }
        assert!(check_password("12345678").is_ok());
        assert!(check_password("1234567").is_err());
        assert!(check_password(&"x".repeat(1025)).is_err());
    }
}
