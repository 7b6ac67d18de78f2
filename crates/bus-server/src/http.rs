//! The bus over HTTP/JSON under `/v1/bus`, for clients without the native
//! protocol (other languages, curl, the dashboard).
//!
//! Every error is problem+json naming the bad field or topic.

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use std::sync::Arc;

use mortar_bus::BusError;
use mortar_sdk::Problem;
use mortar_sdk::http::{Json, Path, Query};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{OpenApi, ToSchema};

use crate::backend::BusBackend;

/// The bus the handlers serve.
type Bus = Arc<dyn BusBackend>;

/// The largest request body accepted (a batch of base64 payloads).
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Default and largest `max` of a pull.
const DEFAULT_PULL: usize = 10;
const MAX_PULL: usize = 1000;

/// Default and longest `wait_ms` of a pull.
const DEFAULT_WAIT_MS: u64 = 5000;
const MAX_WAIT_MS: u64 = 30_000;

/// One message to publish.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishMessage {
    /// Routing/ordering key.
    #[serde(default)]
    pub key: Option<String>,
    /// Headers; `content-type: application/json` is added for a JSON `payload`.
    #[serde(default)]
    pub headers: Map<String, Value>,
    /// The payload as any JSON value (stored as its JSON text).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: Option<Value>,
    /// The payload as base64 bytes, instead of `payload`.
    #[serde(default)]
    pub payload_base64: Option<String>,
}

/// Body of `POST /v1/bus/topics/{topic}/messages`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// The batch, stored atomically and in order.
    pub messages: Vec<PublishMessage>,
}

/// Answer of a publish: one id per message, in order; durable when sent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PublishResponse {
    /// The ids the broker assigned.
    pub ids: Vec<u64>,
}

/// Answer of a topic creation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TopicCreated {
    /// The topic.
    pub topic: String,
    /// Its dead-letter topic.
    pub dead_letter_topic: String,
}

/// Body of a pull.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// Who is pulling; un-acked messages are held for this consumer.
    pub consumer: String,
    /// At most this many messages (1–1000, default 10).
    #[serde(default)]
    pub max: Option<usize>,
    /// Wait up to this long for a first message (0–30000, default 5000).
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// A delivered message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PulledMessage {
    /// Its id, to ack or nack.
    pub id: u64,
    /// Its topic.
    pub topic: String,
    /// Its key.
    pub key: Option<String>,
    /// Its headers.
    pub headers: Map<String, Value>,
    /// Which delivery this is (1 = first).
    pub attempt: u32,
    /// When it was published, ms since the Unix epoch.
    pub publish_time_ms: u64,
    /// The payload as JSON, when its content-type says JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub payload: Option<Value>,
    /// The payload as base64 otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

/// Answer of a pull.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PullResponse {
    /// The messages, oldest first; empty when none came within `wait_ms`.
    pub messages: Vec<PulledMessage>,
}

/// Body of an ack.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// The message ids.
    pub ids: Vec<u64>,
}

/// Body of a nack.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NackRequest {
    /// The message ids.
    pub ids: Vec<u64>,
    /// Redeliver after this long; default the broker's backoff.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Why, kept with dead letters.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Answer of ack and nack.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Settled {
    /// How many ids were settled.
    pub count: usize,
}

/// A topic's statistics.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TopicStatsDoc {
    /// The topic.
    pub topic: String,
    /// Oldest retained id.
    pub first_offset: u64,
    /// Id the next message gets.
    pub next_offset: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Its consumer groups.
    pub groups: Vec<GroupStatsDoc>,
    /// How long its group commits took; absent on a bus whose commits are
    /// not the broker's own (JetStream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commits: Option<CommitStatsDoc>,
}

/// A histogram of a topic's group commits' fsyncs: the disk's share of
/// publish latency.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CommitStatsDoc {
    /// Commits measured since the broker opened the topic.
    pub count: u64,
    /// Their total duration in microseconds.
    pub sum_micros: u64,
    /// Commits per duration bucket, fastest first, not cumulative.
    pub buckets: Vec<CommitBucketDoc>,
}

/// One bucket of [`CommitStatsDoc`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CommitBucketDoc {
    /// Upper bound in seconds; absent on the last bucket (slower than every bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub le_seconds: Option<f64>,
    /// Commits that took at most `le_seconds` (and more than the previous bound).
    pub count: u64,
}

impl CommitStatsDoc {
    /// The document of a broker histogram; `None` when it measured nothing.
    fn of(h: mortar_bus::CommitHistogram) -> Option<CommitStatsDoc> {
        if h.buckets.is_empty() {
            return None;
        }
        let bounds = mortar_bus::COMMIT_BUCKETS_SECONDS.iter().copied().map(Some);
        Some(CommitStatsDoc {
            count: h.count,
            sum_micros: h.sum_micros,
            buckets: bounds
                .chain([None])
                .zip(h.buckets)
                .map(|(le_seconds, count)| CommitBucketDoc { le_seconds, count })
                .collect(),
        })
    }
}

/// A consumer group's statistics.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupStatsDoc {
    /// The group.
    pub group: String,
    /// Messages not yet acked (waiting or in flight).
    pub backlog: u64,
    /// Messages not yet delivered.
    pub lag: u64,
    /// Delivered, not yet acked.
    pub in_flight: u64,
    /// Moved to the dead-letter topic.
    pub dead_lettered: u64,
    /// Delivered more than once.
    pub redelivered: u64,
    /// Deliveries since the broker started, redeliveries included.
    #[serde(default)]
    pub delivered: u64,
}

/// Query of a dead-letter replay.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
pub struct ReplayQuery {
    /// Move at most this many dead letters (1–100000, default 1000).
    #[serde(default)]
    pub max: Option<usize>,
}

/// Answer of a dead-letter replay.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Replayed {
    /// How many dead letters were published to the topic again.
    pub moved: usize,
}

/// Answer of `GET /v1/bus/stats`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatsDoc {
    /// Every topic.
    pub topics: Vec<TopicStatsDoc>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mortar bus API",
        version = "1",
        description = "Publish to and consume from the mortar bus over HTTP/JSON. Publishes answer once durable. Errors are application/problem+json (RFC 9457)."
    ),
    paths(create_topic, publish, pull, ack, nack, replay_dead_letters, stats),
    components(schemas(
        PublishMessage,
        PublishRequest,
        PublishResponse,
        TopicCreated,
        PullRequest,
        PulledMessage,
        PullResponse,
        AckRequest,
        NackRequest,
        Settled,
        StatsDoc,
        TopicStatsDoc,
        GroupStatsDoc,
        CommitStatsDoc,
        CommitBucketDoc,
        mortar_sdk::Problem
    ))
)]
struct ApiDoc;

/// The OpenAPI document of the bus HTTP API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The bus HTTP API's routes under `/v1/bus`, to merge into a node's router.
pub fn http_router(bus: Arc<dyn BusBackend>) -> Router {
    Router::new()
        .route("/v1/bus/topics/{topic}", post(create_topic))
        .route("/v1/bus/topics/{topic}/messages", post(publish))
        .route("/v1/bus/topics/{topic}/groups/{group}/pull", post(pull))
        .route("/v1/bus/topics/{topic}/groups/{group}/ack", post(ack))
        .route("/v1/bus/topics/{topic}/groups/{group}/nack", post(nack))
        .route(
            "/v1/bus/topics/{topic}/dlq/replay",
            post(replay_dead_letters),
        )
        .route("/v1/bus/stats", get(stats))
        .route("/v1/bus/openapi.json", get(openapi_json))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .method_not_allowed_fallback(mortar_sdk::http::method_not_allowed)
        .with_state(bus)
}

async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi().to_pretty_json().unwrap_or_default(),
    )
        .into_response()
}

/// A broker error as a problem naming the topic or field.
fn bus_problem(e: BusError, topic: &str) -> Problem {
    match &e {
        BusError::UnknownTopic { .. } => {
            Problem::not_found(format!("{e}; create it with POST /v1/bus/topics/{topic}"))
                .with_type("urn:mortar:problem:unknown-topic")
                .with_title("Unknown topic")
                .with("topic", topic)
        }
        BusError::TooLarge { .. } => Problem::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
            .with_type("urn:mortar:problem:message-too-large")
            .with_title("Message too large")
            .with("topic", topic),
        BusError::InvalidName { .. } => Problem::bad_request(e.to_string())
            .with_type("urn:mortar:problem:invalid-name")
            .with_title("Invalid name"),
        BusError::UnknownGroup { .. } => Problem::not_found(e.to_string())
            .with_type("urn:mortar:problem:unknown-group")
            .with_title("Unknown consumer group")
            .with("topic", topic),
        BusError::UnknownMessage { .. } => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
                .with_title("Unknown message id")
                .with("field", "ids")
        }
        BusError::Closed => Problem::unavailable("the bus is shutting down; retry later"),
        BusError::Unavailable { .. } => {
            tracing::warn!(topic, error = %e, "bus: the bus behind the API did not answer");
            Problem::unavailable(e.to_string())
        }
        _ => {
            tracing::error!(topic, error = %e, "bus: request failed");
            Problem::internal("the broker failed to complete the request; retry later")
        }
    }
}

/// 422 naming the field that is wrong.
fn invalid(field: &str, detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
        .with_title("Invalid request body")
        .with("field", field)
}

/// Creates a topic (and its dead-letter topic); idempotent.
#[utoipa::path(post, path = "/v1/bus/topics/{topic}",
    params(("topic" = String, Path, description = "topic name")),
    responses((status = 201, body = TopicCreated),
              (status = 400, body = mortar_sdk::Problem, content_type = "application/problem+json")))]
async fn create_topic(
    State(broker): State<Bus>,
    Path(topic): Path<String>,
) -> Result<(StatusCode, Json<TopicCreated>), Problem> {
    broker
        .create_topic(&topic)
        .await
        .map_err(|e| bus_problem(e, &topic))?;
    Ok((
        StatusCode::CREATED,
        Json(TopicCreated {
            dead_letter_topic: format!("{topic}.dlq"),
            topic,
        }),
    ))
}

// The error is the HTTP answer itself, built once per bad request.
#[allow(clippy::result_large_err)]
fn to_new_message(i: usize, m: PublishMessage) -> Result<mortar_bus::NewMessage, Problem> {
    let mut headers = Vec::with_capacity(m.headers.len());
    for (name, value) in m.headers {
        match value {
            Value::String(s) => headers.push((name, s)),
            other => {
                return Err(invalid(
                    &format!("messages[{i}].headers.{name}"),
                    format!("header {name:?} of message {i} must be a string, got {other}"),
                ));
            }
        }
    }
    let payload = match (m.payload, m.payload_base64) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                &format!("messages[{i}]"),
                format!("message {i} has both payload and payload_base64; give one"),
            ));
        }
        (Some(json), None) => {
            if !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            {
                headers.push(("content-type".to_owned(), "application/json".to_owned()));
            }
            Bytes::from(serde_json::to_vec(&json).unwrap_or_default())
        }
        (None, Some(b64)) => Bytes::from(BASE64.decode(b64.as_bytes()).map_err(|e| {
            invalid(
                &format!("messages[{i}].payload_base64"),
                format!("payload_base64 of message {i} is not standard base64: {e}"),
            )
        })?),
        (None, None) => {
            return Err(invalid(
                &format!("messages[{i}]"),
                format!("message {i} has no payload; give payload (any JSON) or payload_base64"),
            ));
        }
    };
    Ok(mortar_bus::NewMessage {
        key: m.key,
        headers,
        payload,
    })
}

/// Publishes a batch; answers once it is durable.
#[utoipa::path(post, path = "/v1/bus/topics/{topic}/messages", request_body = PublishRequest,
    params(("topic" = String, Path, description = "topic name")),
    responses((status = 200, body = PublishResponse),
              (status = 404, body = mortar_sdk::Problem, content_type = "application/problem+json"),
              (status = 413, body = mortar_sdk::Problem, content_type = "application/problem+json"),
              (status = 422, body = mortar_sdk::Problem, content_type = "application/problem+json")))]
async fn publish(
    State(broker): State<Bus>,
    Path(topic): Path<String>,
    Json(request): Json<PublishRequest>,
) -> Result<Json<PublishResponse>, Problem> {
    if request.messages.is_empty() {
        return Err(invalid("messages", "messages is empty; send at least one"));
    }
    let mut batch = Vec::with_capacity(request.messages.len());
    for (i, m) in request.messages.into_iter().enumerate() {
        batch.push(to_new_message(i, m)?);
    }
    let ids = broker
        .publish(&topic, batch)
        .await
        .map_err(|e| bus_problem(e, &topic))?;
    Ok(Json(PublishResponse { ids }))
}

fn to_pulled(m: mortar_bus::Message) -> PulledMessage {
    let is_json = m.headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("content-type") && v.to_ascii_lowercase().contains("json")
    });
    let json = is_json
        .then(|| serde_json::from_slice::<Value>(&m.payload).ok())
        .flatten();
    let payload_base64 = json.is_none().then(|| BASE64.encode(&m.payload));
    PulledMessage {
        id: m.id,
        topic: m.topic,
        key: m.key,
        headers: m
            .headers
            .into_iter()
            .map(|(n, v)| (n, Value::String(v)))
            .collect(),
        attempt: m.attempt,
        publish_time_ms: m.publish_time_ms,
        payload: json,
        payload_base64,
    }
}

/// Long-polls for messages as `consumer` in `group` (joining the group).
#[utoipa::path(post, path = "/v1/bus/topics/{topic}/groups/{group}/pull", request_body = PullRequest,
    params(("topic" = String, Path, description = "topic name"), ("group" = String, Path, description = "consumer group")),
    responses((status = 200, body = PullResponse),
              (status = 404, body = mortar_sdk::Problem, content_type = "application/problem+json"),
              (status = 422, body = mortar_sdk::Problem, content_type = "application/problem+json")))]
async fn pull(
    State(broker): State<Bus>,
    Path((topic, group)): Path<(String, String)>,
    Json(request): Json<PullRequest>,
) -> Result<Json<PullResponse>, Problem> {
    let max = request.max.unwrap_or(DEFAULT_PULL);
    if !(1..=MAX_PULL).contains(&max) {
        return Err(invalid(
            "max",
            format!("max is {max}; it must be between 1 and {MAX_PULL}"),
        ));
    }
    let wait_ms = request.wait_ms.unwrap_or(DEFAULT_WAIT_MS);
    if wait_ms > MAX_WAIT_MS {
        return Err(invalid(
            "wait_ms",
            format!("wait_ms is {wait_ms}; it must be at most {MAX_WAIT_MS}"),
        ));
    }
    if request.consumer.trim().is_empty() {
        return Err(invalid("consumer", "consumer is empty; name the consumer"));
    }
    let messages = broker
        .pull(
            &topic,
            &group,
            &request.consumer,
            max,
            Duration::from_millis(wait_ms),
        )
        .await
        .map_err(|e| bus_problem(e, &topic))?;
    Ok(Json(PullResponse {
        messages: messages.into_iter().map(to_pulled).collect(),
    }))
}

/// Acknowledges processed messages.
#[utoipa::path(post, path = "/v1/bus/topics/{topic}/groups/{group}/ack", request_body = AckRequest,
    params(("topic" = String, Path, description = "topic name"), ("group" = String, Path, description = "consumer group")),
    responses((status = 200, body = Settled),
              (status = 404, body = mortar_sdk::Problem, content_type = "application/problem+json")))]
async fn ack(
    State(broker): State<Bus>,
    Path((topic, group)): Path<(String, String)>,
    Json(request): Json<AckRequest>,
) -> Result<Json<Settled>, Problem> {
    broker
        .ack(&topic, &group, &request.ids)
        .await
        .map_err(|e| bus_problem(e, &topic))?;
    Ok(Json(Settled {
        count: request.ids.len(),
    }))
}

/// Gives messages back for redelivery after a delay.
#[utoipa::path(post, path = "/v1/bus/topics/{topic}/groups/{group}/nack", request_body = NackRequest,
    params(("topic" = String, Path, description = "topic name"), ("group" = String, Path, description = "consumer group")),
    responses((status = 200, body = Settled),
              (status = 404, body = mortar_sdk::Problem, content_type = "application/problem+json")))]
async fn nack(
    State(broker): State<Bus>,
    Path((topic, group)): Path<(String, String)>,
    Json(request): Json<NackRequest>,
) -> Result<Json<Settled>, Problem> {
    let delay = request.delay_ms.map(Duration::from_millis);
    let reason = request.reason.unwrap_or_default();
    broker
        .nack(&topic, &group, &request.ids, delay, &reason)
        .await
        .map_err(|e| bus_problem(e, &topic))?;
    Ok(Json(Settled {
        count: request.ids.len(),
    }))
}

/// Publishes up to `max` messages of `<topic>.dlq` to `topic` again, for
/// after the cause of their failure is fixed.
#[utoipa::path(post, path = "/v1/bus/topics/{topic}/dlq/replay", params(("topic" = String, Path, description = "topic name"), ReplayQuery),
    responses((status = 200, body = Replayed),
              (status = 404, body = mortar_sdk::Problem, content_type = "application/problem+json"),
              (status = 422, body = mortar_sdk::Problem, content_type = "application/problem+json")))]
async fn replay_dead_letters(
    State(broker): State<Bus>,
    Path(topic): Path<String>,
    Query(query): Query<ReplayQuery>,
) -> Result<Json<Replayed>, Problem> {
    let max = query.max.unwrap_or(1000);
    if !(1..=100_000).contains(&max) {
        return Err(invalid(
            "max",
            format!("max is {max}; it must be between 1 and 100000"),
        ));
    }
    let moved = broker
        .replay_dead_letters(&topic, max)
        .await
        .map_err(|e| bus_problem(e, &topic))?;
    Ok(Json(Replayed { moved }))
}

/// Every topic with its groups' backlog, lag and dead letters.
#[utoipa::path(get, path = "/v1/bus/stats", responses((status = 200, body = StatsDoc)))]
async fn stats(State(broker): State<Bus>) -> Result<Json<StatsDoc>, Problem> {
    let topics = broker
        .stats()
        .await
        .map_err(|e| bus_problem(e, ""))?
        .into_iter()
        .map(|t| TopicStatsDoc {
            topic: t.topic,
            first_offset: t.first_offset,
            next_offset: t.next_offset,
            bytes: t.bytes,
            groups: t
                .groups
                .into_iter()
                .map(|g| GroupStatsDoc {
                    group: g.group,
                    backlog: g.backlog,
                    lag: g.lag,
                    in_flight: g.in_flight,
                    dead_lettered: g.dead_lettered,
                    redelivered: g.redelivered,
                    delivered: g.delivered,
                })
                .collect(),
            commits: CommitStatsDoc::of(t.commits),
        })
        .collect();
    Ok(Json(StatsDoc { topics }))
}
