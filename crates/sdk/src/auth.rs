//! Requiring an authenticated caller.
//!
//! A service checks access tokens itself rather than trusting whoever
//! called it: the gateway verifies them too, but a service's port is
//! reachable without the gateway, so a header saying "this is user 7"
//! proves nothing on its own. The verifier caches the issuer's keys, so
//! this costs one signature check per request and keeps working while the
//! issuer is down.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use mortar_sdk::auth::Caller;
//!
//! async fn me(Caller(who): Caller) -> String {
//!     format!("{} may {:?}", who.subject, who.scopes)
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     mortar_sdk::run("orders", |ctx| async move {
//!         let auth = ctx.auth("identity")?; // the issuer, by service name
//!         Ok(Router::new()
//!             .route("/v1/me", get(me))
//!             .route_layer(auth.require(&["orders"])))
//!     })
//! }
//! ```

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;

pub use mortar_auth::{
    AuthError, Identity, SCOPES_HEADER, SUBJECT_HEADER, Verifier, VerifierConfig,
};

use crate::problem::Problem;

impl From<&AuthError> for Problem {
    /// The refusal as problem+json: 401, 403 or 503, a type naming the
    /// reason (`urn:mortar:problem:token-expired`…), a detail safe to show,
    /// and the reason again as the `reason` member for programs.
    fn from(error: &AuthError) -> Problem {
        let mut problem = Problem::new(error.status(), error.to_string())
            .with_type(error.problem_type())
            .with_title(error.title())
            .with("reason", error.code());
        if let AuthError::InsufficientScope { missing } = error {
            problem = problem.with("missing_scopes", missing.clone());
        }
        problem
    }
}

/// The answer to a refused request: problem+json with the RFC 6750
/// `WWW-Authenticate` challenge, about `path`.
pub fn rejection(error: &AuthError, path: &str) -> Response {
    let mut problem = Problem::from(error);
    problem.instance = Some(path.to_owned());
    let mut resp = problem.into_response();
    let challenge = HeaderValue::from_str(&error.www_authenticate())
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""));
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, challenge);
    resp
}

/// A service's token checking: a [`Verifier`] and the layer that applies it
/// to routes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Auth {
    verifier: Verifier,
}

impl Auth {
    /// Checks tokens with `verifier`.
    pub fn new(verifier: Verifier) -> Auth {
        Auth { verifier }
    }

    /// The verifier, to check a token by hand.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// A layer for `Router::route_layer`: requests without a valid access
    /// token get 401, those whose token lacks one of `scopes` get 403, both
    /// as problem+json; the others reach the handler, which reads the
    /// caller with the [`Caller`] extractor.
    pub fn require(&self, scopes: &[&str]) -> RequireAuth {
        RequireAuth {
            verifier: self.verifier.clone(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// The layer made by [`Auth::require`].
#[derive(Debug, Clone)]
pub struct RequireAuth {
    verifier: Verifier,
    scopes: Arc<[String]>,
}

impl<S> tower::Layer<S> for RequireAuth {
    type Service = RequireAuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireAuthService {
            inner,
            verifier: self.verifier.clone(),
            scopes: self.scopes.clone(),
        }
    }
}

/// The service made by [`RequireAuth`].
#[derive(Debug, Clone)]
pub struct RequireAuthService<S> {
    inner: S,
    verifier: Verifier,
    scopes: Arc<[String]>,
}

impl<S> tower::Service<Request> for RequireAuthService<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        let scopes = self.scopes.clone();
        Box::pin(async move {
            let checked = match verifier.verify_headers(req.headers()).await {
                Ok(identity) => identity.require_scopes(&scopes).map(|()| identity),
                Err(e) => Err(e),
            };
            match checked {
                Ok(identity) => {
                    req.extensions_mut().insert(Caller(identity));
                    inner.call(req).await
                }
                Err(error) => {
                    tracing::debug!(
                        path = req.uri().path(),
                        reason = error.code(),
                        "request refused"
                    );
                    Ok(rejection(&error, req.uri().path()))
                }
            }
        })
    }
}

/// The verified caller of a route behind [`Auth::require`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            // A wiring mistake in the service, not the caller's fault.
            tracing::error!(
                path = parts.uri.path(),
                "a handler extracts Caller but its route is not behind Auth::require"
            );
            Problem::internal(
                "this route's authentication is not set up; this is a bug in the service",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use mortar_auth::{Jwks, SigningKey, StaticJwks, TokenIssuer};
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;

    async fn me(Caller(who): Caller) -> String {
        format!("{} {}", who.subject, who.scopes.join(","))
    }

    fn app(key: &SigningKey) -> Router {
        let keys = StaticJwks::new(Jwks {
            keys: vec![key.public_jwk()],
        });
        let auth = Auth::new(Verifier::new(
            VerifierConfig::new("identity", "shop"),
            Arc::new(keys),
        ));
        Router::new()
            .route("/v1/me", get(me))
            .route_layer(auth.require(&[]))
            .merge(
                Router::new()
                    .route("/v1/admin", get(me))
                    .route_layer(auth.require(&["admin"])),
            )
            .route("/v1/unwired", get(me))
    }

    async fn call(app: &Router, path: &str, token: Option<&str>) -> (StatusCode, Response) {
        let mut req = Request::get(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        (resp.status(), resp)
    }

    async fn json(resp: Response) -> Value {
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test]
    async fn routes_behind_require_see_the_caller_or_refuse_with_problems() {
        let key = SigningKey::generate().unwrap();
        let app = app(&key);
        let issuer = TokenIssuer::new("identity", "shop", Duration::from_secs(60));
        let token = issuer.issue(&key, "user-1", &["orders"]).unwrap().token;

        let (status, resp) = call(&app, "/v1/me", Some(&token)).await;
        assert_eq!(status, StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"user-1 orders");

        let (status, resp) = call(&app, "/v1/me", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let p = json(resp).await;
        assert_eq!(p["reason"], "token-missing");
        assert_eq!(p["instance"], "/v1/me");

        let expired = issuer
            .issue_at(&key, "user-1", &["orders"], mortar_auth::now_secs() - 600)
            .unwrap()
            .token;
        let (status, resp) = call(&app, "/v1/me", Some(&expired)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let p = json(resp).await;
        assert_eq!(p["type"], "urn:mortar:problem:token-expired");
        assert!(p["detail"].as_str().unwrap().contains("expired"), "{p}");

        let (status, resp) = call(&app, "/v1/admin", Some(&token)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Bearer error=\"insufficient_scope\", scope=\"admin\""
        );
        assert_eq!(json(resp).await["missing_scopes"][0], "admin");

        let (status, _) = call(&app, "/v1/unwired", Some(&token)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
