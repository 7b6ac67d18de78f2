//! The node's APIs (admin, registry, bus over HTTP) answer only requests
//! that carry a credential the node issued: the admin token (the CLI reads
//! it from `<data dir>/admin.token`, mode 0600) or an instance's own token
//! (`MORTAR_NODE_TOKEN`). Instances may use the registry and the bus and
//! report their own endpoint; everything else is the operator's.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mortar_sdk::Problem;
use mortar_tls::{Credentials, Role};

/// Paths anyone on loopback may ask: the node's own health.
fn is_open(path: &str) -> bool {
    matches!(path, "/health/live" | "/health/ready")
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
    State(credentials): State<Arc<Credentials>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if is_open(path) {
        return next.run(req).await;
    }
    let role = match bearer(&req) {
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
    let mut resp = Problem::new(StatusCode::UNAUTHORIZED, detail).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"mortar node\""),
    );
    resp
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
}
