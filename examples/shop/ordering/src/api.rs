//! The ordering HTTP API: commands under `/v1/orders`, and the event feed
//! (`/v1/events`) projections in other services rebuild from.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mortar_cqrs::eventstore::{EventStore, Metadata};
use mortar_cqrs::{CommandError, CommandHandler};
use mortar_sdk::Problem;
use mortar_sdk::http::{Json, Path, Query};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::order::{Command, Line, Order, OrderError};

#[derive(Clone)]
struct Api {
    orders: CommandHandler<Order>,
    store: Arc<dyn EventStore>,
}

pub(crate) fn routes(orders: CommandHandler<Order>) -> Router {
    let store = orders.store().clone();
    Router::new()
        .route("/v1/orders", post(place))
        .route("/v1/orders/{id}", get(fetch))
        .route("/v1/orders/{id}/pay", post(pay))
        .route("/v1/orders/{id}/cancel", post(cancel))
        .route("/v1/orders/{id}/ship", post(ship))
        .route("/v1/events", get(events))
        .route("/v1/events/head", get(head))
        .with_state(Api { orders, store })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceBody {
    customer: String,
    lines: Vec<Line>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PayBody {
    amount_cents: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    carrier: Option<String>,
}

#[derive(Debug, Serialize)]
struct OrderView {
    id: String,
    status: &'static str,
    customer: String,
    total_cents: i64,
    lines: u32,
    version: i64,
}

fn view(id: &str, order: &Order, version: i64) -> OrderView {
    OrderView {
        id: id.to_owned(),
        status: order.status.as_str(),
        customer: order.customer.clone(),
        total_cents: order.total_cents,
        lines: order.lines,
        version,
    }
}

/// Correlation from `x-correlation-id` (else the request's own id) and the
/// trace context, carried into every event the command causes.
fn metadata(headers: &HeaderMap, causation: String) -> Metadata {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Metadata {
        correlation_id: header("x-correlation-id").or_else(|| Some(causation.clone())),
        causation_id: Some(causation),
        traceparent: header("traceparent"),
    }
}

fn problem(error: CommandError<OrderError>) -> Problem {
    match error {
        CommandError::Domain(e) => {
            let (status, kind) = match &e {
                OrderError::NotFound => (StatusCode::NOT_FOUND, "order-not-found"),
                OrderError::Invalid(_) | OrderError::WrongAmount { .. } => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "invalid-order")
                }
                _ => (StatusCode::CONFLICT, "order-state"),
            };
            Problem::new(status, e.to_string()).with_type(format!("urn:mortar:shop:{kind}"))
        }
        CommandError::Conflict { .. } => Problem::new(StatusCode::CONFLICT, error.to_string())
            .with_type("urn:mortar:shop:concurrent-change"),
        other => {
            tracing::error!(error = %other, "ordering store failed");
            Problem::unavailable("the order store is not available; try again shortly")
        }
    }
}

async fn run(api: &Api, id: &str, command: Command, headers: &HeaderMap, name: &str) -> Response {
    let meta = metadata(
        headers,
        format!("{name}:{id}:{:016x}", rand::random::<u64>()),
    );
    match api.orders.execute(id, &command, &meta).await {
        Ok(done) => Json(view(id, &done.state, done.version)).into_response(),
        Err(e) => problem(e).into_response(),
    }
}

async fn place(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(body): Json<PlaceBody>,
) -> Response {
    let id = format!("{:016x}", rand::random::<u64>());
    let command = Command::Place {
        customer: body.customer,
        lines: body.lines,
    };
    let response = run(&api, &id, command, &headers, "place").await;
    if response.status() == StatusCode::OK {
        tracing::info!(order = %id, "order placed");
        let (mut parts, body) = response.into_parts();
        parts.status = StatusCode::CREATED;
        if let Ok(location) = format!("/v1/orders/{id}").parse() {
            parts.headers.insert(axum::http::header::LOCATION, location);
        }
        return Response::from_parts(parts, body);
    }
    response
}

async fn pay(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<PayBody>,
) -> Response {
    let command = Command::Pay {
        amount_cents: body.amount_cents,
    };
    run(&api, &id, command, &headers, "pay").await
}

async fn cancel(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let body = match optional_body(&body) {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let command = Command::Cancel {
        reason: body.reason.unwrap_or_else(|| "customer request".into()),
    };
    run(&api, &id, command, &headers, "cancel").await
}

async fn ship(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let body = match optional_body(&body) {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let command = Command::Ship {
        carrier: body.carrier.unwrap_or_else(|| "standard".into()),
    };
    run(&api, &id, command, &headers, "ship").await
}

/// An optional JSON body: empty means defaults.
fn optional_body(bytes: &[u8]) -> Result<ReasonBody, Box<Response>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(ReasonBody::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        Problem::bad_request(format!("the body is not valid JSON for this command: {e}"))
            .into_response()
            .into()
    })
}

async fn fetch(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.orders.load(&id).await {
        Ok((_, 0)) => Problem::not_found(format!("no order {id}")).into_response(),
        Ok((order, version)) => Json(view(&id, &order, version)).into_response(),
        Err(e) => problem(e).into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedQuery {
    #[serde(default)]
    after: i64,
    limit: Option<usize>,
}

/// Events after a position, in commit order: the source a projection in
/// another service rebuilds from.
async fn events(State(api): State<Api>, Query(q): Query<FeedQuery>) -> Response {
    let limit = q.limit.unwrap_or(500).clamp(1, 5000);
    match api.store.read_all(q.after, limit).await {
        Ok(events) => Json(json!({ "events": events })).into_response(),
        Err(e) => problem(e.into()).into_response(),
    }
}

async fn head(State(api): State<Api>) -> Response {
    match api.store.head().await {
        Ok(head) => Json(json!({ "head": head })).into_response(),
        Err(e) => problem(e.into()).into_response(),
    }
}
