//! The node's admin API on loopback: `/v1/status`, `/v1/services/{name}`,
//! `/v1/logs`, `/v1/instances/{id}/endpoint`, and its OpenAPI document
//! (which also covers the deploy, fault, registry and bus routes).
//!
//! Every error is problem+json naming what was wrong.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use mortar_sdk::Problem;
use mortar_sdk::http::{Json, Path, Query};
use mortar_supervisor::{Endpoint, EndpointError, LogHub, ServiceStatus, Supervisor};
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::BroadcastStream;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::datadir::NodeInfo;

/// The media type of a stream of JSON lines.
pub const NDJSON: &str = "application/x-ndjson";

/// Shared state of the admin API.
#[derive(Clone)]
pub struct AdminState {
    /// The supervisor whose services are reported.
    pub supervisor: Arc<Supervisor>,
    /// The merged log stream.
    pub hub: LogHub,
    /// What the node publishes about itself.
    pub node: NodeInfo,
    /// What `/metrics` reports.
    pub metrics: Vec<Arc<dyn crate::metrics::Source>>,
}

/// The `/v1/status` document.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatusDoc {
    /// The application's name from the manifest.
    pub app: String,
    /// The node process.
    pub node: NodeDoc,
    /// Every service in manifest order.
    pub services: Vec<ServiceStatus>,
}

/// The node part of the status document.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeDoc {
    /// The node's process id.
    pub pid: u32,
    /// The admin API's URL.
    pub admin_url: String,
    /// The manifest file.
    pub manifest: String,
    /// When the node started.
    pub started_at: String,
    /// Where the node's DNS server answers for service names.
    pub dns_addr: Option<String>,
    /// Where the embedded bus accepts clients.
    pub bus_url: Option<String>,
    /// The gateway: the application's public entry point.
    pub gateway_url: Option<String>,
}

/// Query of `/v1/logs`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
pub struct LogsQuery {
    /// Only lines of this service (`mortar` for the node's own lines).
    pub service: Option<String>,
    /// How many recent lines to send first (default 100, at most 10000).
    pub tail: Option<usize>,
    /// Keep the response open and stream new lines as they come.
    #[serde(default)]
    pub follow: bool,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mortar node admin API",
        version = "1",
        description = "Status, logs and instance registration of a running mortar node. Errors are application/problem+json (RFC 9457)."
    ),
    paths(status, service, stop_service, start_service, logs, report_endpoint),
    components(schemas(
        StatusDoc,
        NodeDoc,
        Endpoint,
        mortar_supervisor::ServiceStatus,
        mortar_supervisor::InstanceStatus,
        mortar_supervisor::ServiceState,
        mortar_supervisor::InstanceState,
        mortar_sdk::Problem
    ))
)]
struct ApiDoc;

/// Renders a status document as indented JSON, for `mortar status --json`.
pub fn to_pretty_json(doc: &StatusDoc) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(doc)
}

/// The OpenAPI document of the admin API, as JSON.
pub fn openapi_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.merge(mortar_discovery::http::openapi());
    doc.merge(mortar_bus_server::openapi());
    doc.merge(crate::deploys::openapi());
    doc.merge(crate::faults::openapi());
    add_bearer_scheme(&mut doc);
    doc.to_pretty_json().unwrap_or_default()
}

/// Every operation needs a token the node issued (see `guard.rs`): says
/// so in the document, so generated clients send it.
fn add_bearer_scheme(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    let scheme = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .description(Some(
            "The admin token from <data dir>/admin.token, or an instance's MORTAR_NODE_TOKEN (registry, bus and its own endpoint only).",
        ))
        .build();
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(NODE_TOKEN_SCHEME, SecurityScheme::Http(scheme));
    doc.security = Some(vec![SecurityRequirement::new(
        NODE_TOKEN_SCHEME,
        Vec::<String>::new(),
    )]);
}

/// The OpenAPI name of the node's bearer credential.
const NODE_TOKEN_SCHEME: &str = "node_token";

/// The admin API's routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/services/{name}", get(service))
        .route("/v1/services/{name}/stop", post(stop_service))
        .route("/v1/services/{name}/start", post(start_service))
        .route("/v1/logs", get(logs))
        .route("/v1/instances/{id}/endpoint", post(report_endpoint))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/health/live", get(|| async { "live" }))
        .route("/health/ready", get(|| async { "ready" }))
        .fallback(mortar_sdk::http::not_found)
        .method_not_allowed_fallback(mortar_sdk::http::method_not_allowed)
        .with_state(state)
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let text = crate::metrics::render(state.metrics.clone());
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

/// Every service and instance of the node.
#[utoipa::path(get, path = "/v1/status", responses((status = 200, body = StatusDoc)))]
async fn status(State(state): State<AdminState>) -> Json<StatusDoc> {
    Json(StatusDoc {
        app: state.supervisor.manifest().app.name.clone(),
        node: NodeDoc {
            pid: state.node.pid,
            admin_url: state.node.admin_url.clone(),
            manifest: state.node.manifest.display().to_string(),
            started_at: state.node.started_at.clone(),
            dns_addr: state.node.dns_addr.map(|a| a.to_string()),
            bus_url: state.node.bus_url.clone(),
            gateway_url: state.node.gateway_url.clone(),
        },
        services: state.supervisor.status(),
    })
}

fn unknown_service(state: &AdminState, name: &str) -> Problem {
    let known: Vec<String> = state
        .supervisor
        .status()
        .into_iter()
        .map(|s| s.name)
        .collect();
    Problem::not_found(format!(
        "unknown service {name:?}; this node runs: {}",
        known.join(", ")
    ))
    .with_type("urn:mortar:problem:unknown-service")
    .with_title("Unknown service")
}

/// One service and its instances.
#[utoipa::path(get, path = "/v1/services/{name}",
    params(("name" = String, Path, description = "service name")),
    responses((status = 200, body = ServiceStatus), (status = 404, body = mortar_sdk::Problem, content_type = "application/problem+json")))]
async fn service(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<ServiceStatus>, Problem> {
    state
        .supervisor
        .service(&name)
        .map(Json)
        .ok_or_else(|| unknown_service(&state, &name))
}

/// Stops every instance of a service (drained); the others keep running.
#[utoipa::path(post, path = "/v1/services/{name}/stop",
    params(("name" = String, Path, description = "service name")),
    responses((status = 200, body = ServiceStatus), (status = 404, body = mortar_sdk::Problem, content_type = "application/problem+json")))]
async fn stop_service(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<ServiceStatus>, Problem> {
    state
        .supervisor
        .stop_service(&name)
        .await
        .map(Json)
        .map_err(|_| unknown_service(&state, &name))
}

/// Starts a stopped service and waits until it is ready (or failed).
#[utoipa::path(post, path = "/v1/services/{name}/start",
    params(("name" = String, Path, description = "service name")),
    responses((status = 200, body = ServiceStatus), (status = 404, body = mortar_sdk::Problem, content_type = "application/problem+json")))]
async fn start_service(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<ServiceStatus>, Problem> {
    state
        .supervisor
        .start_service(&name)
        .await
        .map(Json)
        .map_err(|_| unknown_service(&state, &name))
}

/// Recent and (with `follow=true`) live log lines as NDJSON.
#[utoipa::path(get, path = "/v1/logs", params(LogsQuery),
    responses((status = 200, description = "one JSON log line per line", content_type = "application/x-ndjson"),
              (status = 404, body = mortar_sdk::Problem, content_type = "application/problem+json")))]
async fn logs(
    State(state): State<AdminState>,
    Query(query): Query<LogsQuery>,
) -> Result<Response, Problem> {
    if let Some(name) = &query.service
        && name != "mortar"
        && state.supervisor.service(name).is_none()
    {
        return Err(unknown_service(&state, name));
    }
    let tail = query
        .tail
        .unwrap_or(100)
        .min(mortar_supervisor::logs::DEFAULT_CAPACITY);
    // Subscribe before reading the backlog so no line falls between the two.
    let live = query.follow.then(|| state.hub.follow());
    let backlog = state.hub.recent(query.service.as_deref(), tail);
    let filter = query.service.clone();
    let head = futures::stream::iter(backlog).map(|l| l.json);
    let body = match live {
        None => Body::from_stream(head.map(|json| Ok::<_, std::io::Error>(line_bytes(&json)))),
        Some(rx) => {
            let tail = BroadcastStream::new(rx).filter_map(move |item| {
                let keep = match item {
                    Ok(line) if filter.as_deref().is_none_or(|s| s == line.service) => {
                        Some(line.json)
                    }
                    _ => None,
                };
                async move { keep }
            });
            Body::from_stream(
                head.chain(tail)
                    .map(|json| Ok::<_, std::io::Error>(line_bytes(&json))),
            )
        }
    };
    Ok(([(header::CONTENT_TYPE, NDJSON)], body).into_response())
}

fn line_bytes(json: &str) -> bytes::Bytes {
    let mut bytes = Vec::with_capacity(json.len() + 1);
    bytes.extend_from_slice(json.as_bytes());
    bytes.push(b'\n');
    bytes.into()
}

/// Called by an instance after it bound its port (`PORT=0` picks a free one).
#[utoipa::path(post, path = "/v1/instances/{id}/endpoint",
    params(("id" = String, Path, description = "the instance id from MORTAR_INSTANCE")),
    request_body = Endpoint,
    responses((status = 204, description = "recorded"),
              (status = 404, body = mortar_sdk::Problem, content_type = "application/problem+json"),
              (status = 409, body = mortar_sdk::Problem, content_type = "application/problem+json")))]
async fn report_endpoint(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    Json(endpoint): Json<Endpoint>,
) -> Result<StatusCode, Problem> {
    match state.supervisor.report_endpoint(&id, endpoint) {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(e @ EndpointError::UnknownInstance(_)) => Err(Problem::not_found(e.to_string())
            .with_type("urn:mortar:problem:unknown-instance")
            .with_title("Unknown instance")),
        Err(e) => Err(Problem::new(StatusCode::CONFLICT, e.to_string())
            .with_type("urn:mortar:problem:stale-endpoint")
            .with_title("Endpoint does not match the running instance")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_documents_every_v1_route() {
        let doc: serde_json::Value = serde_json::from_str(&openapi_json()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for route in [
            "/v1/status",
            "/v1/services/{name}",
            "/v1/logs",
            "/v1/instances/{id}/endpoint",
            "/v1/registry/instances",
            "/v1/registry/services/{name}",
            "/v1/bus/topics/{topic}/messages",
            "/v1/bus/topics/{topic}/groups/{group}/pull",
            "/v1/services/{name}/deploy",
            "/v1/services/{name}/rollback",
            "/v1/services/{name}/history",
            "/v1/faults",
            "/v1/faults/{id}",
        ] {
            assert!(paths.contains_key(route), "{route} is not documented");
        }
        assert_eq!(doc["openapi"].as_str().unwrap().chars().next(), Some('3'));
        assert_eq!(
            doc["components"]["securitySchemes"]["node_token"]["scheme"],
            "bearer"
        );
        assert!(doc["security"][0].get("node_token").is_some());
    }
}
