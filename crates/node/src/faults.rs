//! Faults the node injects itself, for `mortar chaos`: a bus outage, one
//! service cut off from the bus, latency or errors on a service's
//! responses at the gateway. Each lasts a given time, after which the node
//! undoes it by itself; `GET /v1/faults` lists the active ones and
//! `DELETE /v1/faults` ends them all.
//!
//! The bus faults close the embedded broker's [`Gate`]: wire-protocol
//! connections are dropped and refused, `/v1/bus` answers 503 with
//! `Retry-After`, and the broker keeps everything it acknowledged. The
//! response faults are set on the gateway, so calls between services that
//! do not go through the gateway are not affected.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use mortar_bus_server::{Closed, Gate};
use mortar_gateway::{Gateway, UpstreamFault};
use mortar_sdk::Problem;
use mortar_sdk::http::{Json, Path};
use mortar_supervisor::Supervisor;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use utoipa::{OpenApi, ToSchema};

/// The longest a fault may last.
pub const MAX_SECONDS: f64 = 3600.0;

/// The longest injected latency.
pub const MAX_LATENCY_MS: u64 = 60_000;

/// The kinds of fault, as the API names them.
pub const KINDS: [&str; 4] = ["bus-outage", "cut-bus", "latency", "errors"];

/// Body of `POST /v1/faults`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    /// `bus-outage`, `cut-bus`, `latency` or `errors`.
    pub kind: String,
    /// The service (every kind but `bus-outage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// How long the fault lasts (more than 0, at most 3600); the node
    /// ends it by itself then.
    pub seconds: f64,
    /// `latency`: the delay added to each affected request, in ms (1–60000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
    /// `latency`: the share of requests delayed (more than 0, at most 100;
    /// default 100). `errors`: the share answered 503 (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
}

/// An active fault.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ActiveFault {
    /// Its id, to end it with `DELETE /v1/faults/{id}`.
    pub id: u64,
    /// What was asked, normalized (`percent` filled in).
    #[serde(flatten)]
    pub request: FaultRequest,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// How long it still lasts, in ms.
    pub remaining_ms: u64,
}

/// A validated fault.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    BusOutage,
    CutBus(String),
    Latency {
        service: String,
        delay: Duration,
        percent: f64,
    },
    Errors {
        service: String,
        percent: f64,
    },
}

impl Kind {
    /// Faults that replace each other: one of each kind per service.
    fn slot(&self) -> (&'static str, &str) {
        match self {
            Kind::BusOutage => ("bus-outage", ""),
            Kind::CutBus(s) => ("cut-bus", s),
            Kind::Latency { service, .. } => ("latency", service),
            Kind::Errors { service, .. } => ("errors", service),
        }
    }

    fn is_bus(&self) -> bool {
        matches!(self, Kind::BusOutage | Kind::CutBus(_))
    }
}

struct Active {
    id: u64,
    kind: Kind,
    request: FaultRequest,
    started_at: String,
    until: Instant,
}

impl Active {
    fn doc(&self) -> ActiveFault {
        ActiveFault {
            id: self.id,
            request: self.request.clone(),
            started_at: self.started_at.clone(),
            remaining_ms: self
                .until
                .saturating_duration_since(Instant::now())
                .as_millis() as u64,
        }
    }
}

/// The node's fault injector. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Faults {
    inner: Arc<Inner>,
}

struct Inner {
    supervisor: Arc<Supervisor>,
    gate: Option<Gate>,
    gateway: Gateway,
    state: Mutex<State>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct State {
    active: Vec<Active>,
    /// What the gateway was last told, per service.
    gateway: HashMap<String, UpstreamFault>,
}

fn problem_invalid(detail: String) -> Box<Problem> {
    Box::new(
        Problem::bad_request(detail)
            .with_type("urn:mortar:problem:invalid-fault")
            .with_title("Invalid fault"),
    )
}

impl Faults {
    /// Injects into `gateway` and, with the embedded broker, its `gate`.
    pub(crate) fn new(supervisor: Arc<Supervisor>, gate: Option<Gate>, gateway: Gateway) -> Faults {
        Faults {
            inner: Arc::new(Inner {
                supervisor,
                gate,
                gateway,
                state: Mutex::default(),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks `req` against this node's services and bus.
    fn validate(&self, req: &FaultRequest) -> Result<(Kind, FaultRequest), Box<Problem>> {
        let supervisor = &self.inner.supervisor;
        let known = |name: &str| {
            supervisor
                .service(name)
                .is_some()
                .then_some(())
                .ok_or_else(|| supervisor.status().into_iter().map(|s| s.name).collect())
        };
        validate(req, known, self.inner.gate.is_some())
    }

    /// Starts a fault; it replaces an active one of the same kind on the
    /// same service.
    pub(crate) fn inject(&self, req: &FaultRequest) -> Result<ActiveFault, Box<Problem>> {
        let (kind, req) = self.validate(req)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let lasts = Duration::from_secs_f64(req.seconds);
        let until = Instant::now() + lasts;
        let active = Active {
            id,
            kind,
            request: req,
            started_at: mortar_sdk::logging::now_rfc3339(),
            until,
        };
        let doc = active.doc();
        tracing::warn!(id, fault = ?active.kind, seconds = active.request.seconds, "injecting a fault");
        {
            let mut state = self.lock();
            let slot = active.kind.slot();
            state.active.retain(|a| a.kind.slot() != slot);
            state.active.push(active);
            self.apply(&mut state);
        }
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(until).await;
            if me.end(|a| a.id == id).is_empty() {
                return;
            }
            tracing::warn!(id, "injected fault expired; undone");
        });
        Ok(doc)
    }

    /// The active faults, oldest first.
    pub(crate) fn list(&self) -> Vec<ActiveFault> {
        self.lock().active.iter().map(Active::doc).collect()
    }

    /// Ends the faults `which` selects; the ended ones.
    fn end(&self, which: impl Fn(&Active) -> bool) -> Vec<ActiveFault> {
        let mut state = self.lock();
        let (ended, kept): (Vec<Active>, Vec<Active>) = std::mem::take(&mut state.active)
            .into_iter()
            .partition(|a| which(a));
        state.active = kept;
        if !ended.is_empty() {
            self.apply(&mut state);
        }
        ended.iter().map(Active::doc).collect()
    }

    /// Makes the gate and the gateway match the active faults.
    fn apply(&self, state: &mut State) {
        let (closed, wanted) = plan(state.active.iter().map(|a| (&a.kind, a.until)));
        if let Some(gate) = &self.inner.gate {
            gate.set(closed);
        }
        let gone: Vec<String> = state
            .gateway
            .keys()
            .filter(|s| !wanted.contains_key(*s))
            .cloned()
            .collect();
        for service in gone {
            state.gateway.remove(&service);
            self.inner.gateway.set_fault(&service, None);
        }
        for (service, fault) in wanted {
            if state.gateway.get(&service) != Some(&fault) {
                self.inner.gateway.set_fault(&service, Some(fault));
                state.gateway.insert(service, fault);
            }
        }
    }
}

/// What the bus gate and the gateway must do for the active faults.
fn plan<'a>(
    active: impl Iterator<Item = (&'a Kind, Instant)>,
) -> (Closed, BTreeMap<String, UpstreamFault>) {
    let mut closed = Closed::default();
    let mut wanted: BTreeMap<String, UpstreamFault> = BTreeMap::new();
    for (kind, until) in active {
        match kind {
            Kind::BusOutage => closed.all = closed.all.max(Some(until)),
            Kind::CutBus(service) => {
                closed.clients.insert(service.clone(), until);
            }
            Kind::Latency {
                service,
                delay,
                percent,
            } => {
                let f = wanted.entry(service.clone()).or_default();
                f.delay = Some(*delay);
                f.delay_percent = *percent;
            }
            Kind::Errors { service, percent } => {
                wanted.entry(service.clone()).or_default().abort_percent = *percent;
            }
        }
    }
    (closed, wanted)
}

/// Checks `req`; the fault it describes (with `percent` filled in).
/// `known` says whether a service exists (else every service's name);
/// bus faults need the `embedded_bus`. (Boxed errors: a `Problem` is
/// large.)
fn validate(
    req: &FaultRequest,
    known: impl Fn(&str) -> Result<(), Vec<String>>,
    embedded_bus: bool,
) -> Result<(Kind, FaultRequest), Box<Problem>> {
    let mut req = req.clone();
    if !(req.seconds.is_finite() && req.seconds > 0.0 && req.seconds <= MAX_SECONDS) {
        return Err(problem_invalid(format!(
            "seconds must be more than 0 and at most {MAX_SECONDS}, got {}",
            req.seconds
        )));
    }
    let percent_of = |p: f64, what: &str| {
        if p.is_finite() && p > 0.0 && p <= 100.0 {
            Ok(p)
        } else {
            Err(problem_invalid(format!(
                "{what} must be more than 0 and at most 100 (percent), got {p}"
            )))
        }
    };
    let service = |req: &FaultRequest| -> Result<String, Box<Problem>> {
        let Some(name) = &req.service else {
            return Err(problem_invalid(format!(
                "a {} fault needs a service",
                req.kind
            )));
        };
        if let Err(known) = known(name) {
            return Err(Box::new(
                Problem::not_found(format!(
                    "unknown service {name:?}; this node runs: {}",
                    known.join(", ")
                ))
                .with_type("urn:mortar:problem:unknown-service")
                .with_title("Unknown service"),
            ));
        }
        Ok(name.clone())
    };
    let kind = match req.kind.as_str() {
        "bus-outage" => {
            if req.service.is_some() {
                return Err(problem_invalid(
                    "a bus outage affects every service; use cut-bus for one".to_owned(),
                ));
            }
            Kind::BusOutage
        }
        "cut-bus" => Kind::CutBus(service(&req)?),
        "latency" => {
            let ms = req.ms.unwrap_or(0);
            if !(1..=MAX_LATENCY_MS).contains(&ms) {
                return Err(problem_invalid(format!(
                    "ms must be from 1 to {MAX_LATENCY_MS}, got {}",
                    req.ms.map_or("none".to_owned(), |m| m.to_string())
                )));
            }
            let percent = percent_of(req.percent.unwrap_or(100.0), "percent")?;
            req.percent = Some(percent);
            Kind::Latency {
                service: service(&req)?,
                delay: Duration::from_millis(ms),
                percent,
            }
        }
        "errors" => {
            let Some(p) = req.percent else {
                return Err(problem_invalid(
                    "an errors fault needs percent: the share of requests answered 503".to_owned(),
                ));
            };
            Kind::Errors {
                service: service(&req)?,
                percent: percent_of(p, "percent")?,
            }
        }
        other => {
            return Err(problem_invalid(format!(
                "unknown fault kind {other:?}; use one of: {}",
                KINDS.join(", ")
            )));
        }
    };
    if kind.is_bus() && !embedded_bus {
        return Err(Box::new(
            Problem::new(
                StatusCode::CONFLICT,
                "this node uses NATS JetStream as its bus; bus faults are injected only into the embedded broker",
            )
            .with_type("urn:mortar:problem:no-embedded-bus"),
        ));
    }
    Ok((kind, req))
}

#[derive(OpenApi)]
#[openapi(
    paths(list, inject, clear, clear_one),
    components(schemas(FaultRequest, ActiveFault))
)]
struct FaultDoc;

/// The fault routes' OpenAPI document.
pub(crate) fn openapi() -> utoipa::openapi::OpenApi {
    FaultDoc::openapi()
}

/// The fault routes (the operator's: instances' tokens are refused).
pub(crate) fn router(faults: Faults) -> Router {
    Router::new()
        .route("/v1/faults", get(list).post(inject).delete(clear))
        .route("/v1/faults/{id}", delete(clear_one))
        .with_state(faults)
}

type FaultState = axum::extract::State<Faults>;

/// The active faults, oldest first.
#[utoipa::path(get, path = "/v1/faults", responses((status = 200, body = [ActiveFault])))]
async fn list(axum::extract::State(faults): FaultState) -> Json<Vec<ActiveFault>> {
    Json(faults.list())
}

/// Injects a fault for `seconds`; the node undoes it by itself then.
#[utoipa::path(post, path = "/v1/faults", request_body = FaultRequest,
    responses((status = 201, body = ActiveFault),
              (status = 400, body = mortar_sdk::Problem, content_type = "application/problem+json"),
              (status = 404, body = mortar_sdk::Problem, content_type = "application/problem+json"),
              (status = 409, body = mortar_sdk::Problem, content_type = "application/problem+json")))]
async fn inject(
    axum::extract::State(faults): FaultState,
    Json(req): Json<FaultRequest>,
) -> Result<(StatusCode, Json<ActiveFault>), Problem> {
    faults
        .inject(&req)
        .map(|doc| (StatusCode::CREATED, Json(doc)))
        .map_err(|p| *p)
}

/// Ends every active fault; the ended ones.
#[utoipa::path(delete, path = "/v1/faults", responses((status = 200, body = [ActiveFault])))]
async fn clear(axum::extract::State(faults): FaultState) -> Json<Vec<ActiveFault>> {
    let ended = faults.end(|_| true);
    if !ended.is_empty() {
        tracing::warn!(count = ended.len(), "injected faults cleared");
    }
    Json(ended)
}

/// Ends one fault.
#[utoipa::path(delete, path = "/v1/faults/{id}",
    params(("id" = u64, Path, description = "the fault's id")),
    responses((status = 200, body = ActiveFault),
              (status = 404, body = mortar_sdk::Problem, content_type = "application/problem+json")))]
async fn clear_one(
    axum::extract::State(faults): FaultState,
    Path(id): Path<u64>,
) -> Result<Json<ActiveFault>, Problem> {
    faults.end(|a| a.id == id).pop().map(Json).ok_or_else(|| {
        Problem::not_found(format!(
            "no active fault {id}; `GET /v1/faults` lists them (it may have expired)"
        ))
        .with_type("urn:mortar:problem:unknown-fault")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(name: &str) -> Result<(), Vec<String>> {
        if ["catalog", "ordering"].contains(&name) {
            Ok(())
        } else {
            Err(vec!["catalog".to_owned(), "ordering".to_owned()])
        }
    }

    fn req(kind: &str, service: Option<&str>, seconds: f64) -> FaultRequest {
        FaultRequest {
            kind: kind.to_owned(),
            service: service.map(str::to_owned),
            seconds,
            ..FaultRequest::default()
        }
    }

    fn refused(r: &FaultRequest, embedded: bool) -> String {
        let problem = validate(r, known, embedded).unwrap_err();
        format!("{} {}", problem.status, problem.detail.unwrap_or_default())
    }

    #[test]
    fn bad_requests_are_refused_naming_the_fix() {
        assert!(
            refused(&req("bus-outage", None, 0.0), true).contains("seconds must be more than 0")
        );
        assert!(refused(&req("bus-outage", None, 4000.0), true).contains("at most 3600"));
        assert!(refused(&req("flood", None, 1.0), true).contains("use one of: bus-outage"));
        assert!(refused(&req("cut-bus", None, 1.0), true).contains("needs a service"));
        let unknown = refused(&req("cut-bus", Some("ghost"), 1.0), true);
        assert!(
            unknown.starts_with("404") && unknown.contains("catalog, ordering"),
            "{unknown}"
        );
        assert!(refused(&req("bus-outage", None, 1.0), false).starts_with("409"));
        assert!(refused(&req("bus-outage", Some("catalog"), 1.0), true).contains("cut-bus"));
        let mut latency = req("latency", Some("catalog"), 1.0);
        assert!(refused(&latency, true).contains("ms must be from 1"));
        latency.ms = Some(100);
        latency.percent = Some(0.0);
        assert!(refused(&latency, true).contains("percent must be more than 0"));
        let mut errors = req("errors", Some("catalog"), 1.0);
        assert!(refused(&errors, true).contains("needs percent"));
        errors.percent = Some(120.0);
        assert!(refused(&errors, true).contains("at most 100"));
    }

    #[test]
    fn latency_defaults_to_every_request() {
        let mut latency = req("latency", Some("catalog"), 1.0);
        latency.ms = Some(100);
        let (kind, normalized) = validate(&latency, known, false).unwrap();
        assert_eq!(normalized.percent, Some(100.0));
        assert_eq!(
            kind,
            Kind::Latency {
                service: "catalog".to_owned(),
                delay: Duration::from_millis(100),
                percent: 100.0
            }
        );
    }

    #[test]
    fn the_plan_combines_faults_per_service_and_the_latest_outage_end() {
        let now = Instant::now();
        let later = now + Duration::from_secs(9);
        let kinds = [
            (Kind::BusOutage, now),
            (Kind::BusOutage, later),
            (Kind::CutBus("ordering".to_owned()), now),
            (
                Kind::Latency {
                    service: "catalog".to_owned(),
                    delay: Duration::from_millis(50),
                    percent: 30.0,
                },
                now,
            ),
            (
                Kind::Errors {
                    service: "catalog".to_owned(),
                    percent: 20.0,
                },
                now,
            ),
        ];
        let (closed, wanted) = plan(kinds.iter().map(|(k, t)| (k, *t)));
        assert_eq!(closed.all, Some(later));
        assert_eq!(closed.clients.get("ordering"), Some(&now));
        assert_eq!(
            wanted.get("catalog"),
            Some(&UpstreamFault {
                delay: Some(Duration::from_millis(50)),
                delay_percent: 30.0,
                abort_percent: 20.0,
            })
        );
        assert_eq!(wanted.len(), 1);
    }
}
