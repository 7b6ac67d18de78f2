//! The node's APIs (admin, registry, bus over HTTP) answer only requests
//! that carry a credential the node issued: the admin token (the CLI reads
//! it from `<data dir>/admin.token`, mode 0600) or an instance's own token
//! (`MORTAR_NODE_TOKEN`). Instances may use the registry and the bus and
//! report their own endpoint; everything else is the operator's. A
//! browser's dashboard session cookie (see `dashboard/login.rs`) may read
//! the dashboard and nothing else.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mortar_sdk::Problem;
use mortar_tls::{Credentials, Role};

use crate::dashboard::{COOKIE_PATHS, LOGIN_PATH, Sessions};

/// What the guard checks requests against.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    /// Bearer tokens the node issued.
    pub(crate) credentials: Arc<Credentials>,
    /// Dashboard sessions.
    pub(crate) sessions: Arc<Sessions>,
}

/// Paths anyone on loopback may ask: the node's own health, and the
/// dashboard's login link (the token in it is the credential).
fn is_open(path: &str) -> bool {
    matches!(path, "/health/live" | "/health/ready") || path == LOGIN_PATH
}

/// Whether a dashboard session cookie may make this request: reading the
/// dashboard only.
fn cookie_may(method: &axum::http::Method, path: &str) -> bool {
    (method == axum::http::Method::GET || method == axum::http::Method::HEAD)
        && COOKIE_PATHS.contains(&path)
}

/// Whether `req` carries a live dashboard session cookie.
fn has_session(sessions: &Sessions, req: &Request) -> bool {
    let now = std::time::Instant::now();
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| sessions.session_in(v))
        .any(|session| sessions.is_valid(session, now))
}

/// What an instance's token allows: the registry, the bus, and reporting
/// its own endpoint.
fn instance_may(instance: &str, path: &str) -> bool {
    path.starts_with("/v1/registry/")
        || path.starts_with("/v1/bus/")
        || path
            .strip_prefix("/v1/instances/")
            .and_then(|rest| rest.strip_suffix("/endpoint"))
            .is_some_and(|id| id == instance)
}

/// The bearer token of `req`, if it has one.
fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Middleware: 401 problem+json without a valid credential, 403 when an
/// instance's token is used for an operator's API.
pub(crate) async fn require_credentials(
    State(guard): State<Guard>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if is_open(path) {
        return next.run(req).await;
    }
    if cookie_may(req.method(), path) && has_session(&guard.sessions, &req) {
        return next.run(req).await;
    }
    let credentials = &guard.credentials;
    let role = match bearer(&req) {
        None if path == "/dashboard" => {
            return crate::dashboard::login_required(
                "This browser has no dashboard session (or it expired, or the node restarted).",
            );
        }
        None => {
            return unauthorized(
                "no credentials: send `Authorization: Bearer <token>` with the token the node issued (instances get MORTAR_NODE_TOKEN; the CLI reads <data dir>/admin.token)",
            );
        }
        Some(token) => match credentials.check(token) {
            Some(role) => role,
            None => {
                return unauthorized(
                    "the bearer token is not one this node issued (a restarted node issues new ones; instances get a new one at every launch)",
                );
            }
        },
    };
    match role {
        Role::Admin => next.run(req).await,
        Role::Instance(id) if instance_may(&id, path) => next.run(req).await,
        Role::Instance(id) => Problem::new(
            StatusCode::FORBIDDEN,
            format!("instance {id}'s credential does not allow {path}; it is for the operator (mortar CLI)"),
        )
        .into_response(),
    }
}

fn unauthorized(detail: &str) -> Response {
    mortar_sdk::problem::unauthorized(detail, "mortar node")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_reach_the_registry_the_bus_and_their_own_endpoint_only() {
        assert!(instance_may("catalog-1", "/v1/registry/services/catalog"));
        assert!(instance_may("catalog-1", "/v1/bus/topics/orders/messages"));
        assert!(instance_may(
            "catalog-1",
            "/v1/instances/catalog-1/endpoint"
        ));
        assert!(!instance_may(
            "catalog-1",
            "/v1/instances/catalog-2/endpoint"
        ));
        assert!(!instance_may("catalog-1", "/v1/services/catalog/stop"));
        assert!(!instance_may("catalog-1", "/v1/logs"));
        assert!(is_open("/health/ready") && !is_open("/v1/status"));
    }

    #[test]
    fn a_dashboard_cookie_reads_the_dashboard_only() {
        use axum::http::Method;
        assert!(cookie_may(&Method::GET, "/dashboard"));
        assert!(cookie_may(&Method::GET, "/v1/dashboard/events"));
        assert!(cookie_may(&Method::GET, "/v1/dashboard/snapshot"));
        assert!(!cookie_may(&Method::POST, "/v1/dashboard/login"));
        assert!(!cookie_may(&Method::GET, "/v1/status"));
        assert!(!cookie_may(&Method::POST, "/dashboard"));
        assert!(is_open("/dashboard/login") && !is_open("/dashboard"));
    }
}
