//! The registry's HTTP API under `/v1/registry`, for processes the node does
//! not supervise and for clients in any language.
//!
//! Watching is a blocking query: `GET /v1/registry/services/{name}?index=N`
//! waits (up to `wait_ms`) until the registry has changed past `N`, then
//! answers with the new `index`; pass it back to wait for the next change.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use mortar_sdk::Problem;
use mortar_sdk::http::{Json, Path, Query};
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::registry::{Instance, Registry, RegistryError};
use crate::wire::ServiceInstances;

/// The longest a blocking query may wait.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// A registration request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Unique instance id (a DNS label).
    pub id: String,
    /// Service name (a DNS label).
    pub service: String,
    /// The version the instance runs.
    #[serde(default = "default_version")]
    pub version: String,
    /// The address it listens on (loopback by default).
    #[serde(default = "loopback")]
    #[schema(value_type = String)]
    pub address: IpAddr,
    /// The port it listens on.
    pub port: u16,
    /// Free-form labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Whether it is ready now (default true).
    #[serde(default = "yes")]
    pub ready: bool,
    /// Lease in milliseconds; renew with a heartbeat before it runs out.
    pub ttl_ms: u64,
}

fn default_version() -> String {
    "0".to_owned()
}
fn loopback() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}
fn yes() -> bool {
    true
}

/// The readiness flag of an instance.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    /// Ready or not.
    pub ready: bool,
}

/// Parameters of a blocking query.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    /// Wait until the registry index is past this value.
    pub index: Option<u64>,
    /// How long to wait at most, in milliseconds (default 30000, at most 60000).
    pub wait_ms: Option<u64>,
}

#[derive(OpenApi)]
#[openapi(
    paths(
        register,
        heartbeat,
        set_ready,
        deregister,
        service_instances,
        all_instances
    ),
    components(schemas(Registration, Readiness, ServiceInstances, Instance))
)]
struct ApiDoc;

/// The OpenAPI description of the registry API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The registry API's routes.
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/v1/registry/instances", post(register).get(all_instances))
        .route("/v1/registry/instances/{id}", delete(deregister))
        .route("/v1/registry/instances/{id}/heartbeat", put(heartbeat))
        .route("/v1/registry/instances/{id}/ready", put(set_ready))
        .route("/v1/registry/services/{name}", get(service_instances))
        .with_state(registry)
}

fn problem(error: RegistryError) -> Problem {
    match error {
        RegistryError::UnknownInstance(_) => {
            Problem::not_found(error.to_string()).with_type("urn:mortar:problem:unknown-instance")
        }
        RegistryError::InvalidName { .. } | RegistryError::InvalidLease(_) => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
                .with_type("urn:mortar:problem:invalid-registration")
        }
    }
}

/// Registers (or replaces) an instance under a lease.
#[utoipa::path(post, path = "/v1/registry/instances", request_body = Registration,
    responses((status = 201, body = Instance), (status = 422, description = "invalid registration, problem+json")))]
async fn register(
    State(registry): State<Registry>,
    Json(r): Json<Registration>,
) -> Result<(StatusCode, Json<Instance>), Problem> {
    let instance = Instance {
        id: r.id,
        service: r.service,
        version: r.version,
        address: SocketAddr::new(r.address, r.port),
        labels: r.labels,
        ready: r.ready,
    };
    registry
        .register(instance.clone(), Some(Duration::from_millis(r.ttl_ms)))
        .map_err(problem)?;
    Ok((StatusCode::CREATED, Json(instance)))
}

/// Renews an instance's lease.
#[utoipa::path(put, path = "/v1/registry/instances/{id}/heartbeat", params(("id" = String, Path)),
    responses((status = 204), (status = 404, description = "unknown or expired instance, problem+json")))]
async fn heartbeat(
    State(registry): State<Registry>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    registry.heartbeat(&id).map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Marks an instance ready or not ready.
#[utoipa::path(put, path = "/v1/registry/instances/{id}/ready", params(("id" = String, Path)), request_body = Readiness,
    responses((status = 204), (status = 404, description = "unknown instance, problem+json")))]
async fn set_ready(
    State(registry): State<Registry>,
    Path(id): Path<String>,
    Json(r): Json<Readiness>,
) -> Result<StatusCode, Problem> {
    registry.set_ready(&id, r.ready).map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes an instance.
#[utoipa::path(delete, path = "/v1/registry/instances/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404, description = "unknown instance, problem+json")))]
async fn deregister(
    State(registry): State<Registry>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    if registry.deregister(&id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(problem(RegistryError::UnknownInstance(id)))
    }
}

/// Every registered instance, ready or not.
#[utoipa::path(get, path = "/v1/registry/instances", responses((status = 200, body = [Instance])))]
async fn all_instances(State(registry): State<Registry>) -> Json<Vec<Instance>> {
    Json(registry.all())
}

/// The ready instances of a service; a blocking query with `index`.
#[utoipa::path(get, path = "/v1/registry/services/{name}", params(("name" = String, Path), WatchQuery),
    responses((status = 200, body = ServiceInstances)))]
async fn service_instances(
    State(registry): State<Registry>,
    Path(name): Path<String>,
    Query(q): Query<WatchQuery>,
) -> Json<ServiceInstances> {
    if let Some(index) = q.index {
        let wait = Duration::from_millis(q.wait_ms.unwrap_or(30_000)).min(MAX_WAIT);
        let mut changes = registry.changes();
        let _ = tokio::time::timeout(wait, changes.wait_for(|v| *v > index)).await;
    }
    Json(ServiceInstances {
        index: registry.version(),
        instances: registry.ready_instances(&name),
    })
}
