//! `mortar bus http`: the HTTP bus API (`/v1/bus`) served on its own over
//! NATS JetStream, for services not on the Rust SDK where there is no node
//! (a Kubernetes export runs it beside each of them).
//!
//! It must start before NATS answers (pods start together), so it serves at
//! once: every bus call is a 503 problem+json until JetStream is connected,
//! then goes to JetStream, through the same router the node serves. With a
//! token configured, every request but the OpenAPI document needs it as a
//! bearer credential.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use mortar_bus::{BusError, Message, NewMessage, TopicStats};
use mortar_bus_client::{ClientConfig, JetStream};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::backend::{BusBackend, JetStreamBackend};
use crate::http::http_router;

/// How often the bridge tries NATS again while it cannot connect.
const RECONNECT_EVERY: Duration = Duration::from_millis(500);

/// How often JetStream's stream and consumer statistics are refreshed.
const STATS_EVERY: Duration = Duration::from_secs(2);

/// The HTTP bus API over JetStream, once connected.
#[derive(Clone)]
pub struct Bridge {
    jetstream: Arc<OnceLock<Arc<JetStreamBackend>>>,
    url: String,
    token: Option<Arc<[u8; 32]>>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("url", &self.url)
            .field("connected", &self.is_connected())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Bridge {
    /// A bridge to the JetStream at `url`, not yet connected; `token` (when
    /// given) is the bearer credential every client must send. Only its
    /// digest is kept.
    pub fn new(url: &str, token: Option<&str>) -> Bridge {
        Bridge {
            jetstream: Arc::default(),
            url: mortar_bus_client::redact_url(url),
            token: token.map(|t| Arc::new(Sha256::digest(t.as_bytes()).into())),
        }
    }

    /// True once JetStream is connected and the API is served.
    pub fn is_connected(&self) -> bool {
        self.jetstream.get().is_some()
    }

    /// Connects to JetStream, retrying until it answers or `stop`; then
    /// serves the API and keeps its statistics fresh until `stop`.
    pub async fn connect(self, config: ClientConfig, stop: CancellationToken) {
        let js = loop {
            match JetStream::connect(&config).await {
                Ok(js) => break js,
                Err(error) => {
                    tracing::warn!(url = %self.url, %error, retry_in_ms = RECONNECT_EVERY.as_millis() as u64, "bus bridge: NATS JetStream not reachable yet; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(RECONNECT_EVERY) => {}
                    }
                }
            }
        };
        let backend = JetStreamBackend::new(js);
        let _ = self.jetstream.set(backend.clone());
        tracing::info!(url = %self.url, "bus bridge: connected to NATS JetStream; serving /v1/bus");
        backend.refresh_stats(STATS_EVERY, stop).await;
    }

    /// The `/v1/bus` routes behind the token check.
    pub fn router(&self) -> Router {
        http_router(Arc::new(self.clone())).layer(axum::middleware::from_fn_with_state(
            self.clone(),
            require_token,
        ))
    }

    fn backend(&self) -> Result<&Arc<JetStreamBackend>, BusError> {
        self.jetstream.get().ok_or_else(|| BusError::Unavailable {
            url: self.url.clone(),
            detail: "the bus bridge is not connected to NATS JetStream yet (its log says why); retry shortly".to_owned(),
        })
    }

    fn accepts(&self, req: &Request) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        let Some(token) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
        else {
            return false;
        };
        // Digests of equal length are compared, so the time taken says
        // nothing about how much of the token was right.
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        digest
            .iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// Every call goes to JetStream once connected; until then each is
/// `Unavailable` (503).
#[async_trait::async_trait]
impl BusBackend for Bridge {
    async fn create_topic(&self, topic: &str) -> Result<(), BusError> {
        self.backend()?.create_topic(topic).await
    }

    async fn publish(&self, topic: &str, batch: Vec<NewMessage>) -> Result<Vec<u64>, BusError> {
        self.backend()?.publish(topic, batch).await
    }

    async fn pull(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message>, BusError> {
        self.backend()?
            .pull(topic, group, consumer, max, wait)
            .await
    }

    async fn ack(&self, topic: &str, group: &str, ids: &[u64]) -> Result<(), BusError> {
        self.backend()?.ack(topic, group, ids).await
    }

    async fn nack(
        &self,
        topic: &str,
        group: &str,
        ids: &[u64],
        delay: Option<Duration>,
        reason: &str,
    ) -> Result<(), BusError> {
        self.backend()?.nack(topic, group, ids, delay, reason).await
    }

    async fn replay_dead_letters(&self, topic: &str, max: usize) -> Result<usize, BusError> {
        self.backend()?.replay_dead_letters(topic, max).await
    }

    async fn stats(&self) -> Result<Vec<TopicStats>, BusError> {
        self.backend()?.stats().await
    }

    fn last_stats(&self) -> Vec<TopicStats> {
        self.jetstream
            .get()
            .map(|js| js.last_stats())
            .unwrap_or_default()
    }
}

/// Middleware: 401 problem+json without the configured bearer token; the
/// OpenAPI document stays open.
async fn require_token(State(bridge): State<Bridge>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/v1/bus/openapi.json" || bridge.accepts(&req) {
        return next.run(req).await;
    }
    mortar_sdk::problem::unauthorized(
        "no valid credentials: send `Authorization: Bearer <token>` with the bridge's token (MORTAR_BUS_HTTP_TOKEN)",
        "mortar bus",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use tower::ServiceExt;

    fn request(token: Option<&str>) -> Request {
        let mut req = Request::builder()
            .uri("/v1/bus/topics/orders/messages")
            .method("POST")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"messages": [{"payload": {"n": 1}}]}"#))
            .unwrap();
        if let Some(t) = token {
            req.headers_mut().insert(
                header::AUTHORIZATION,
                format!("Bearer {t}").parse().unwrap(),
            );
        }
        req
    }

    fn bridge(token: Option<&str>) -> Bridge {
        Bridge::new("nats://127.0.0.1:1", token)
    }

    #[tokio::test]
    async fn before_nats_answers_every_call_is_a_503_problem() {
        let resp = bridge(None).router().oneshot(request(None)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }

    #[tokio::test]
    async fn with_a_token_only_that_token_gets_through() {
        let router = bridge(Some("s3cret")).router();
        for token in [None, Some("s3cre"), Some("s3cret2")] {
            let resp = router.clone().oneshot(request(token)).await.unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        }
        // The right token reaches the (not yet connected) API.
        let resp = router.oneshot(request(Some("s3cret"))).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let shown = format!("{:?}", bridge(Some("s3cret")));
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
