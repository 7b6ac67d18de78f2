//! The HTTP/JSON API against a real server on 127.0.0.1:0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use serde_json::{Value, json};

struct Api {
    base: String,
    http: reqwest::Client,
    /// Appended to topic names: the shared NATS keeps topics between runs.
    suffix: String,
    embedded: Option<mortar_bus_server::EmbeddedBus>,
    _dir: tempfile::TempDir,
}

impl Api {
    /// The API over the embedded broker.
    async fn start() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let (_url, bus) = common::start(dir.path(), 1024, &[]).await;
        let backend = Arc::new(bus.broker().clone());
        Api::serve(backend, Some(bus), dir).await
    }

    /// The same API over the shared NATS JetStream, as the node serves it
    /// in NATS mode (`None`, with the reason printed, where there is none).
    async fn nats(test: &str) -> Option<Api> {
        let url = mortar_test_support::nats::shared_or_skip(test)?;
        let mut config = mortar_bus_client::ClientConfig::new(url, "http-api-test", "");
        config.max_deliveries = 3;
        config.max_message_bytes = 1024;
        let js = mortar_bus_client::JetStream::connect(&config)
            .await
            .unwrap();
        let backend = Arc::new(mortar_bus_server::JetStreamBackend::new(js));
        Some(Api::serve(backend, None, tempfile::tempdir().unwrap()).await)
    }

    async fn serve(
        backend: Arc<dyn mortar_bus_server::BusBackend>,
        bus: Option<mortar_bus_server::EmbeddedBus>,
        dir: tempfile::TempDir,
    ) -> Api {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        // Mounted the way the node mounts it: merged beside routes with a fallback.
        let router = axum::Router::new()
            .route("/health/live", axum::routing::get(|| async { "live" }))
            .merge(mortar_bus_server::http_router(backend))
            .fallback(mortar_sdk::http::not_found);
        tokio::spawn(async move { axum::serve(listener, router).await });
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Api {
            base,
            http: reqwest::Client::new(),
            suffix: format!("-{nanos}"),
            embedded: bus,
            _dir: dir,
        }
    }

    /// A topic name unique to this test run.
    fn topic(&self, name: &str) -> String {
        format!("{name}{}", self.suffix)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, String, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        Self::parts(r).await
    }

    async fn parts(r: reqwest::Response) -> (u16, String, Value) {
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = r.text().await.unwrap();
        (
            status,
            ct,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }
}

async fn publish_pull_ack_and_nack(api: &Api) {
    let t = api.topic("orders");
    let (status, _, body) = api.post(&format!("/v1/bus/topics/{t}"), json!({})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["dead_letter_topic"], format!("{t}.dlq"));

    let (status, _, body) = api
        .post(
            &format!("/v1/bus/topics/{t}/messages"),
            json!({"messages": [
                {"key": "o-1", "headers": {"traceparent": "00-abc"}, "payload": {"total": 12}},
                {"payload_base64": "AAEC"}
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<u64> = serde_json::from_value(body["ids"].clone()).unwrap();
    assert_eq!(ids.len(), 2);

    let pull = json!({"consumer": "c1", "max": 10, "wait_ms": 2000});
    let (status, _, body) = api
        .post(
            &format!("/v1/bus/topics/{t}/groups/billing/pull"),
            pull.clone(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{body}");
    assert_eq!(messages[0]["payload"], json!({"total": 12}));
    assert_eq!(messages[0]["key"], "o-1");
    assert_eq!(messages[0]["headers"]["traceparent"], "00-abc");
    assert_eq!(messages[0]["headers"]["content-type"], "application/json");
    assert_eq!(messages[0]["attempt"], 1);
    assert_eq!(messages[1]["payload_base64"], "AAEC");

    let (status, _, body) = api
        .post(
            &format!("/v1/bus/topics/{t}/groups/billing/ack"),
            json!({"ids": [ids[0]]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = api
        .post(
            &format!("/v1/bus/topics/{t}/groups/billing/nack"),
            json!({"ids": [ids[1]], "delay_ms": 0, "reason": "try again"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The nacked one comes back as attempt 2; the acked one never does.
    let (status, _, body) = api
        .post(&format!("/v1/bus/topics/{t}/groups/billing/pull"), pull)
        .await;
    assert_eq!(status, 200, "{body}");
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{body}");
    assert_eq!(messages[0]["id"], ids[1]);
    assert_eq!(messages[0]["attempt"], 2);

    let r = api
        .http
        .get(format!("{}/v1/bus/stats", api.base))
        .send()
        .await
        .unwrap();
    let (status, _, body) = Api::parts(r).await;
    assert_eq!(status, 200);
    let orders = body["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["topic"] == t.as_str())
        .unwrap();
    assert_eq!(orders["groups"][0]["group"], "billing");
    assert_eq!(orders["groups"][0]["in_flight"], 1);
    // The embedded broker times its commits; JetStream's are its own.
    let commits = &orders["commits"];
    if api.embedded.is_some() {
        let buckets = commits["buckets"].as_array().unwrap();
        let count = commits["count"].as_u64().unwrap();
        assert!(count >= 1, "{commits}");
        let total: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
        assert_eq!(total, count, "{commits}");
        assert!(buckets[0]["le_seconds"].as_f64().is_some(), "{commits}");
        assert!(
            buckets.last().unwrap().get("le_seconds").is_none(),
            "{commits}"
        );
    } else {
        assert!(commits.is_null(), "{commits}");
    }
}

#[tokio::test]
async fn publish_pull_ack_and_nack_over_http() {
    publish_pull_ack_and_nack(&Api::start().await).await;
}

#[tokio::test]
async fn publish_pull_ack_and_nack_over_http_on_nats() {
    if let Some(api) = Api::nats("http api on NATS").await {
        publish_pull_ack_and_nack(&api).await;
    }
}

#[tokio::test]
async fn bad_input_is_problem_json_naming_what_is_wrong() {
    let api = Api::start().await;
    api.post("/v1/bus/topics/t", json!({})).await;

    let (status, ct, body) = api
        .post(
            "/v1/bus/topics/ghost/messages",
            json!({"messages": [{"payload": 1}]}),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(ct, "application/problem+json");
    assert_eq!(body["topic"], "ghost");
    assert!(body["detail"].as_str().unwrap().contains("ghost"), "{body}");

    let (status, ct, body) = api
        .post(
            "/v1/bus/topics/t/messages",
            json!({"messages": [{"payload_base64": "A".repeat(4000)}]}),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(ct, "application/problem+json");

    let (status, _, body) = api
        .post(
            "/v1/bus/topics/t/messages",
            json!({"messages": [{"key": "k"}]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "messages[0]");

    let (status, _, body) = api
        .post(
            "/v1/bus/topics/t/messages",
            json!({"messages": [{"payload_base64": "%%%"}]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "messages[0].payload_base64");

    let (status, _, body) = api
        .post(
            "/v1/bus/topics/t/groups/g/pull",
            json!({"consumer": "c", "max": 0}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "max");

    let (status, _, body) = api.post("/v1/bus/topics/Bad%20Name", json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("invalid topic name"),
        "{body}"
    );

    let r = api
        .http
        .post(format!("{}/v1/bus/topics/t/messages", api.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (status, ct, _) = Api::parts(r).await;
    assert_eq!(status, 400);
    assert_eq!(ct, "application/problem+json");

    // Nothing of the refused requests was stored.
    let r = api
        .http
        .get(format!("{}/v1/bus/stats", api.base))
        .send()
        .await
        .unwrap();
    let (_, _, body) = Api::parts(r).await;
    let t = body["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == "t")
        .unwrap();
    assert_eq!(t["next_offset"], t["first_offset"]);
}

async fn dead_letters_replay(api: &Api) {
    let t = api.topic("jobs");
    api.post(&format!("/v1/bus/topics/{t}"), json!({})).await;
    api.post(
        &format!("/v1/bus/topics/{t}/messages"),
        json!({"messages": [{"payload": "boom"}]}),
    )
    .await;
    let pull = json!({"consumer": "c", "max": 1, "wait_ms": 5000});
    for attempt in 1..=3 {
        let (_, _, body) = api
            .post(&format!("/v1/bus/topics/{t}/groups/w/pull"), pull.clone())
            .await;
        let m = &body["messages"][0];
        assert_eq!(m["attempt"], attempt, "{body}");
        let (status, _, _) = api
            .post(
                &format!("/v1/bus/topics/{t}/groups/w/nack"),
                json!({"ids": [m["id"]], "delay_ms": 0, "reason": "bad"}),
            )
            .await;
        assert_eq!(status, 200);
    }
    // Out of deliveries: dead-lettered, so the group sees nothing more.
    let (_, _, body) = api
        .post(
            &format!("/v1/bus/topics/{t}/groups/w/pull"),
            json!({"consumer": "c", "wait_ms": 200}),
        )
        .await;
    assert_eq!(body["messages"], json!([]), "{body}");

    let (status, _, body) = api
        .post(&format!("/v1/bus/topics/{t}/dlq/replay"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["moved"], 1);
    let (_, _, body) = api
        .post(&format!("/v1/bus/topics/{t}/groups/w/pull"), pull)
        .await;
    assert_eq!(body["messages"][0]["payload"], "boom", "{body}");
}

#[tokio::test]
async fn dead_letters_can_be_replayed() {
    dead_letters_replay(&Api::start().await).await;
}

#[tokio::test]
async fn dead_letters_can_be_replayed_on_nats() {
    if let Some(api) = Api::nats("http dead letters on NATS").await {
        dead_letters_replay(&api).await;
    }
}

#[test]
fn openapi_lists_every_route() {
    let doc = serde_json::to_value(mortar_bus_server::openapi()).unwrap();
    for path in [
        "/v1/bus/topics/{topic}",
        "/v1/bus/topics/{topic}/messages",
        "/v1/bus/topics/{topic}/groups/{group}/pull",
        "/v1/bus/topics/{topic}/groups/{group}/ack",
        "/v1/bus/topics/{topic}/groups/{group}/nack",
        "/v1/bus/topics/{topic}/dlq/replay",
        "/v1/bus/stats",
    ] {
        assert!(doc["paths"].get(path).is_some(), "missing {path}");
    }
}
