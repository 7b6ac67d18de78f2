//! The deploy part of the admin API: start a deploy, follow it, promote or
//! abort a manual blue-green deploy, roll back, and read the history. The
//! work is the supervisor's; the gateway takes its traffic orders through
//! [`GatewayTraffic`].

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use mortar_gateway::Gateway;
use mortar_manifest::Strategy;
use mortar_release::{Ledger, ReleaseError};
use mortar_resilience::RequestStats;
use mortar_sdk::Problem;
use mortar_sdk::http::{Json, Path};
use mortar_supervisor::deploy::{
    DeployError, DeployRequest, DeployState, DeployStatus, Step, Target, Traffic, VersionReport,
};
use mortar_supervisor::{BOOT_VERSION, Supervisor};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

/// The gateway as deploys use it.
pub(crate) struct GatewayTraffic(pub(crate) Gateway);

impl Traffic for GatewayTraffic {
    fn set_split(&self, service: &str, weights: Vec<(String, u32)>) {
        self.0.set_split(service, weights);
    }
    fn hold(&self, service: &str, timeout: std::time::Duration, queue: u32) {
        self.0.hold(service, timeout, queue);
    }
    fn release(&self, service: &str) {
        self.0.release(service);
    }
    fn stats(&self, service: &str, version: &str) -> RequestStats {
        self.0.version_stats(service, version)
    }
}

/// What the deploy routes need.
#[derive(Clone)]
pub(crate) struct DeployApi {
    pub(crate) supervisor: Arc<Supervisor>,
    pub(crate) traffic: Arc<dyn Traffic>,
    pub(crate) data_dir: PathBuf,
}

/// Body of `POST /v1/services/{name}/deploy`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct DeployBody {
    /// A release id (or a unique prefix of at least 4 digits) from
    /// `mortar releases`, or `boot` for the manifest the node started with.
    pub release: String,
    /// `rolling`, `recreate` or `blue-green`; the manifest's
    /// `deploy.strategy` when absent.
    pub strategy: Option<String>,
    /// Blue-green: wait for `promote`/`abort`; the manifest's
    /// `deploy.manual` when absent.
    pub manual: Option<bool>,
}

/// Body of `POST /v1/services/{name}/rollback`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RollbackBody {
    /// The strategy; the manifest's `deploy.strategy` when absent.
    pub strategy: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    paths(start, current, promote, abort, rollback, history),
    components(schemas(
        DeployBody,
        RollbackBody,
        DeployStatus,
        DeployState,
        Step,
        VersionReport
    ))
)]
struct DeployDoc;

/// The deploy routes' OpenAPI document.
pub(crate) fn openapi() -> utoipa::openapi::OpenApi {
    DeployDoc::openapi()
}

/// The deploy routes.
pub(crate) fn router(api: DeployApi) -> Router {
    Router::new()
        .route("/v1/services/{name}/deploy", post(start).get(current))
        .route("/v1/services/{name}/deploy/promote", post(promote))
        .route("/v1/services/{name}/deploy/abort", post(abort))
        .route("/v1/services/{name}/rollback", post(rollback))
        .route("/v1/services/{name}/history", get(history))
        .with_state(api)
}

type State = axum::extract::State<DeployApi>;

/// Starts a deploy; follow it with `GET /v1/services/{name}/deploy`.
#[utoipa::path(post, path = "/v1/services/{name}/deploy",
    params(("name" = String, Path, description = "service name")),
    request_body = DeployBody,
    responses((status = 202, body = DeployStatus),
              (status = 400, body = mortar_sdk::Problem, content_type = "application/problem+json"),
              (status = 404, body = mortar_sdk::Problem, content_type = "application/problem+json"),
              (status = 409, body = mortar_sdk::Problem, content_type = "application/problem+json")))]
async fn start(
    axum::extract::State(api): State,
    Path(name): Path<String>,
    Json(body): Json<DeployBody>,
) -> Result<(StatusCode, Json<DeployStatus>), Problem> {
    let strategy = parse_strategy(body.strategy.as_deref()).map_err(|p| *p)?;
    let target = resolve(&api, &body.release).map_err(|p| *p)?;
    let request = DeployRequest {
        target,
        strategy,
        manual: body.manual,
    };
    let status = api
        .supervisor
        .deploy(&name, request, api.traffic.clone())
        .map_err(problem)?;
    Ok((StatusCode::ACCEPTED, Json(status)))
}

/// The latest deploy of a service since the node started.
#[utoipa::path(get, path = "/v1/services/{name}/deploy",
    params(("name" = String, Path, description = "service name")),
    responses((status = 200, body = DeployStatus),
              (status = 404, body = mortar_sdk::Problem, content_type = "application/problem+json")))]
async fn current(
    axum::extract::State(api): State,
    Path(name): Path<String>,
) -> Result<Json<DeployStatus>, Problem> {
    match api.supervisor.deploy_status(&name) {
        Err(e) => Err(problem(e.into())),
        Ok(Some(status)) => Ok(Json(status)),
        Ok(None) => Err(Problem::not_found(format!(
            "{name} has not been deployed since the node started; `mortar history {name}` shows earlier deploys"
        ))
        .with_type("urn:mortar:problem:no-deploy")
        .with_title("No deploy")),
    }
}

/// Promotes a blue-green deploy awaiting promotion.
#[utoipa::path(post, path = "/v1/services/{name}/deploy/promote",
    params(("name" = String, Path, description = "service name")),
    responses((status = 200, body = DeployStatus),
              (status = 404, body = mortar_sdk::Problem, content_type = "application/problem+json"),
              (status = 409, body = mortar_sdk::Problem, content_type = "application/problem+json")))]
async fn promote(
    axum::extract::State(api): State,
    Path(name): Path<String>,
) -> Result<Json<DeployStatus>, Problem> {
    api.supervisor
        .decide(&name, true)
        .map(Json)
        .map_err(problem)
}

/// Aborts a running deploy: it rolls back.
#[utoipa::path(post, path = "/v1/services/{name}/deploy/abort",
    params(("name" = String, Path, description = "service name")),
    responses((status = 200, body = DeployStatus),
              (status = 404, body = mortar_sdk::Problem, content_type = "application/problem+json"),
              (status = 409, body = mortar_sdk::Problem, content_type = "application/problem+json")))]
async fn abort(
    axum::extract::State(api): State,
    Path(name): Path<String>,
) -> Result<Json<DeployStatus>, Problem> {
    api.supervisor
        .decide(&name, false)
        .map(Json)
        .map_err(problem)
}

/// Deploys the version the current one replaced.
#[utoipa::path(post, path = "/v1/services/{name}/rollback",
    params(("name" = String, Path, description = "service name")),
    request_body = RollbackBody,
    responses((status = 202, body = DeployStatus),
              (status = 404, body = mortar_sdk::Problem, content_type = "application/problem+json"),
              (status = 409, body = mortar_sdk::Problem, content_type = "application/problem+json")))]
async fn rollback(
    axum::extract::State(api): State,
    Path(name): Path<String>,
    Json(body): Json<RollbackBody>,
) -> Result<(StatusCode, Json<DeployStatus>), Problem> {
    let strategy = parse_strategy(body.strategy.as_deref()).map_err(|p| *p)?;
    let version = api.supervisor.rollback_target(&name).map_err(problem)?;
    let target = resolve(&api, &version).map_err(|p| *p)?;
    let request = DeployRequest {
        target,
        strategy,
        manual: Some(false),
    };
    let status = api
        .supervisor
        .deploy(&name, request, api.traffic.clone())
        .map_err(problem)?;
    Ok((StatusCode::ACCEPTED, Json(status)))
}

/// Every finished deploy of a service, oldest first.
#[utoipa::path(get, path = "/v1/services/{name}/history",
    params(("name" = String, Path, description = "service name")),
    responses((status = 200, body = [DeployStatus]),
              (status = 404, body = mortar_sdk::Problem, content_type = "application/problem+json")))]
async fn history(
    axum::extract::State(api): State,
    Path(name): Path<String>,
) -> Result<Json<Vec<DeployStatus>>, Problem> {
    api.supervisor.history(&name).map(Json).map_err(problem)
}

/// The strategy named, if any (boxed: a `Problem` is large).
fn parse_strategy(text: Option<&str>) -> Result<Option<Strategy>, Box<Problem>> {
    let Some(text) = text else {
        return Ok(None);
    };
    Strategy::parse(text).map(Some).ok_or_else(|| {
        Box::new(
            Problem::bad_request(format!(
                "unknown strategy {text:?}; use rolling, recreate or blue-green"
            ))
            .with_type("urn:mortar:problem:invalid-strategy"),
        )
    })
}

/// The release `release` names (boxed: a `Problem` is large).
fn resolve(api: &DeployApi, release: &str) -> Result<Target, Box<Problem>> {
    if release == BOOT_VERSION {
        return Ok(Target::Boot);
    }
    match Ledger::open(&api.data_dir).get(release) {
        Ok(release) => Ok(Target::Release(Box::new(release))),
        Err(e @ ReleaseError::Unknown { .. }) => Err(Box::new(
            Problem::not_found(e.to_string())
                .with_type("urn:mortar:problem:unknown-release")
                .with_title("Unknown release"),
        )),
        Err(e) => Err(Box::new(Problem::internal(e.to_string()))),
    }
}

fn problem(e: DeployError) -> Problem {
    let conflict = |kind: &str| {
        Problem::new(StatusCode::CONFLICT, e.to_string())
            .with_type(format!("urn:mortar:problem:{kind}"))
    };
    match &e {
        DeployError::UnknownService(_) => Problem::not_found(e.to_string())
            .with_type("urn:mortar:problem:unknown-service")
            .with_title("Unknown service"),
        DeployError::InProgress { .. } => conflict("deploy-in-progress"),
        DeployError::AlreadyRunning { .. } => conflict("already-running"),
        DeployError::Stopped(_) => conflict("service-stopped"),
        DeployError::NotAwaiting { .. } | DeployError::NotRunning { .. } => {
            conflict("no-deploy-to-decide")
        }
        DeployError::NothingToRollBack { .. } => conflict("nothing-to-roll-back"),
        DeployError::Revision(_) | DeployError::MissingProgram { .. } => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
                .with_type("urn:mortar:problem:release-not-runnable")
        }
        DeployError::History(_) => Problem::internal(e.to_string()),
    }
}
