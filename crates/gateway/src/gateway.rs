//! [`Gateway`]: the public entry point.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::serve::ListenerExt;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use http::{Method, header};
use http_body_util::{BodyExt, Limited};
use mortar_resilience::{Client, Metrics, Resolve};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::proxy::Shared;
use crate::rate_limit::RateLimiter;
use crate::routes::RouteTable;
use crate::split::Splits;
use crate::{GatewayConfig, batch, problems, trace};

/// The node's edge. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

impl Gateway {
    /// A gateway resolving services through `resolver`. Call inside a tokio
    /// runtime.
    pub fn new(resolver: Arc<dyn Resolve>, config: GatewayConfig) -> Gateway {
        let client = Client::new(resolver, config.client.clone());
        Gateway {
            shared: Arc::new(Shared {
                routes: RouteTable::new(config.routes.clone()),
                client,
                cache: Cache::new(config.cache),
                splits: Splits::default(),
                limiter: config.rate_limit.map(RateLimiter::new),
                config,
            }),
        }
    }

    /// Sends `service`'s traffic to its versions by weight (e.g.
    /// `[("v1", 90), ("v2", 10)]`); an empty list ends the split.
    pub fn set_split(&self, service: &str, weights: Vec<(String, u32)>) {
        tracing::info!(service, ?weights, "traffic split set");
        self.shared.splits.set(service, weights);
    }

    /// The forwarding client's counters (retries, ejections, breakers).
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.shared.client.metrics()
    }

    /// The gateway as an axum router. Serve it with
    /// `into_make_service_with_connect_info::<SocketAddr>()` so the rate
    /// limit can key on client IPs (without it all clients share one bucket).
    pub fn router(&self) -> Router {
        Router::new()
            .fallback(handle)
            .with_state(self.shared.clone())
    }

    /// Serves on `listener` until `shutdown` is cancelled, then drains.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let app = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        // Responses are written whole; Nagle would only hold back the last
        // segment of one waiting for the client's delayed ACK.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted socket");
            }
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let client_ip: Option<IpAddr> = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let path = req.uri().path().to_owned();
    if let Some(limiter) = &shared.limiter {
        let ip = client_ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if let Err(wait) = limiter.take(ip, 1.0) {
            tracing::debug!(client = %ip, path, "rate limited");
            return problems::rate_limited(&path, wait);
        }
    }
    let limit = shared.config.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|l| l > limit as u64) {
        return problems::too_large(&path, limit);
    }
    let (mut parts, body) = req.into_parts();
    let body = if declared == Some(0) {
        bytes::Bytes::new()
    } else {
        match Limited::new(body, limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return problems::too_large(&path, limit);
            }
            Err(e) => {
                return problems::bad_request(
                    &path,
                    format!("request body could not be read: {e}"),
                );
            }
        }
    };
    let traceparent = trace::next_hop(parts.headers.get(trace::TRACEPARENT_NAME));
    if parts.method == Method::POST && path == batch::PATH {
        let mut resp = batch::run(&shared, &parts.headers, &body, client_ip).await;
        resp.headers_mut()
            .insert(trace::TRACEPARENT_NAME, traceparent);
        return resp;
    }
    parts
        .headers
        .insert(trace::TRACEPARENT_NAME, traceparent.clone());
    parts.extensions = http::Extensions::new();
    let mut resp = shared
        .forward(http::Request::from_parts(parts, body), client_ip)
        .await;
    resp.headers_mut()
        .insert(trace::TRACEPARENT_NAME, traceparent);
    resp
}
