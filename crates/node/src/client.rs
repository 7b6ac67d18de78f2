//! A client of the admin API, for one-off commands such as `mortar status`.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use mortar_sdk::Problem;

use mortar_supervisor::deploy::DeployStatus;

use crate::admin::StatusDoc;
use crate::datadir::{DataDirError, read_node_info};

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The data directory names no running node.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// Nothing answers at the admin URL.
    #[error("no mortar node answers at {url}: {source}; is `mortar up` running?")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// The node answered with a problem document.
    #[error("{0}")]
    Problem(Box<Problem>),
    /// The node answered something this client does not understand.
    #[error("unexpected answer from {url}: {message}")]
    Protocol {
        /// The URL called.
        url: String,
        /// What was wrong.
        message: String,
    },
}

/// Passes a successful response through; turns a problem document into an error.
/// The JSON body of a successful answer from `url`.
async fn read_json<T: serde::de::DeserializeOwned>(
    url: String,
    resp: reqwest::Response,
) -> Result<T, ClientError> {
    resp.json().await.map_err(|e| ClientError::Protocol {
        url,
        message: e.to_string(),
    })
}

async fn check(url: String, resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    Err(match serde_json::from_str::<Problem>(&text) {
        Ok(problem) => ClientError::Problem(Box::new(problem)),
        Err(_) => ClientError::Protocol {
            url,
            message: format!("{status}: {text}"),
        },
    })
}

/// Talks to a node's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client for the admin API at `base` (e.g. `http://127.0.0.1:4300`).
    pub fn new(base: &str) -> Self {
        Self::with_token(base, None)
    }

    /// A client for the admin API at `base` that sends `token` (the node's
    /// admin credential) as a bearer token on every request.
    pub fn with_token(base: &str, token: Option<&str>) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(value) =
            token.and_then(|t| reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).ok())
        {
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .default_headers(headers)
            .build()
            .unwrap_or_default();
        AdminClient {
            base: base.trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// A client for the node that runs with this data directory.
    pub fn for_data_dir(dir: &Path) -> Result<Self, ClientError> {
        let url = read_node_info(dir)?.admin_url;
        // Without the token the node answers 401, which names the problem.
        let token = mortar_tls::Credentials::read_admin_token(dir).ok();
        Ok(Self::with_token(&url, token.as_deref()))
    }

    /// The admin API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request to `path`, with `body` as JSON when given; the
    /// URL (for errors) and the answer when its status is a success.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(String, reqwest::Response), ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let resp = request
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let resp = check(url.clone(), resp).await?;
        Ok((url, resp))
    }

    async fn get(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        Ok(self.send(reqwest::Method::GET, path, None).await?.1)
    }

    async fn post(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        Ok(self.send(reqwest::Method::POST, path, None).await?.1)
    }

    /// Sends `body` as JSON to `path` (`POST`, or `GET` without a body)
    /// and reads the JSON answer.
    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ClientError> {
        let method = match body {
            Some(_) => reqwest::Method::POST,
            None => reqwest::Method::GET,
        };
        let (url, resp) = self.send(method, path, body).await?;
        read_json(url, resp).await
    }

    /// Starts a deploy of `service` (`mortar deploy`).
    pub async fn deploy(
        &self,
        service: &str,
        body: &crate::deploys::DeployBody,
    ) -> Result<DeployStatus, ClientError> {
        let body = serde_json::to_value(body).map_err(|e| ClientError::Protocol {
            url: self.base.clone(),
            message: e.to_string(),
        })?;
        self.json(&format!("/v1/services/{service}/deploy"), Some(&body))
            .await
    }

    /// The latest deploy of `service`.
    pub async fn deploy_status(&self, service: &str) -> Result<DeployStatus, ClientError> {
        self.json(&format!("/v1/services/{service}/deploy"), None)
            .await
    }

    /// `promote` or `abort` for the deploy of `service`.
    pub async fn deploy_decide(
        &self,
        service: &str,
        decision: &str,
    ) -> Result<DeployStatus, ClientError> {
        self.json(
            &format!("/v1/services/{service}/deploy/{decision}"),
            Some(&serde_json::json!({})),
        )
        .await
    }

    /// Deploys the version `service` ran before (`mortar rollback`).
    pub async fn rollback(
        &self,
        service: &str,
        strategy: Option<&str>,
    ) -> Result<DeployStatus, ClientError> {
        self.json(
            &format!("/v1/services/{service}/rollback"),
            Some(&serde_json::json!({ "strategy": strategy })),
        )
        .await
    }

    /// Every finished deploy of `service`.
    pub async fn history(&self, service: &str) -> Result<Vec<DeployStatus>, ClientError> {
        self.json(&format!("/v1/services/{service}/history"), None)
            .await
    }

    /// Stops or starts one service (`action` is `stop` or `start`) and
    /// returns its status afterwards.
    pub async fn service_action(
        &self,
        service: &str,
        action: &str,
    ) -> Result<mortar_supervisor::ServiceStatus, ClientError> {
        self.json(
            &format!("/v1/services/{service}/{action}"),
            Some(&serde_json::json!({})),
        )
        .await
    }

    /// Topics, groups, backlog and lag of the node's bus (`/v1/bus/stats`).
    pub async fn bus_stats(&self) -> Result<serde_json::Value, ClientError> {
        self.json("/v1/bus/stats", None).await
    }

    /// Moves up to `max` dead letters of `topic` back into it; returns how many.
    pub async fn replay_dead_letters(&self, topic: &str, max: usize) -> Result<u64, ClientError> {
        let resp = self
            .post(&format!("/v1/bus/topics/{topic}/dlq/replay?max={max}"))
            .await?;
        let url = resp.url().to_string();
        let body: serde_json::Value = resp.json().await.map_err(|e| ClientError::Protocol {
            url: url.clone(),
            message: e.to_string(),
        })?;
        body["moved"].as_u64().ok_or_else(|| ClientError::Protocol {
            url,
            message: format!("expected {{\"moved\": n}}, got {body}"),
        })
    }

    /// A one-time login link for the web dashboard (`mortar dashboard`).
    pub async fn dashboard_login(&self) -> Result<crate::dashboard::LoginLink, ClientError> {
        self.json("/v1/dashboard/login", Some(&serde_json::json!({})))
            .await
    }

    /// The dashboard's latest snapshot (`mortar top`).
    pub async fn dashboard_snapshot(&self) -> Result<crate::dashboard::Snapshot, ClientError> {
        self.json("/v1/dashboard/snapshot", None).await
    }

    /// Injects a fault (`mortar chaos bus-outage|cut-bus|latency|errors`);
    /// the node ends it by itself after `req.seconds`.
    pub async fn inject_fault(
        &self,
        req: &crate::faults::FaultRequest,
    ) -> Result<crate::faults::ActiveFault, ClientError> {
        let body = serde_json::to_value(req).map_err(|e| ClientError::Protocol {
            url: self.base.clone(),
            message: e.to_string(),
        })?;
        self.json("/v1/faults", Some(&body)).await
    }

    /// The faults the node injects now.
    pub async fn faults(&self) -> Result<Vec<crate::faults::ActiveFault>, ClientError> {
        self.json("/v1/faults", None).await
    }

    /// Ends every injected fault; the ended ones (`mortar chaos clear`).
    pub async fn clear_faults(&self) -> Result<Vec<crate::faults::ActiveFault>, ClientError> {
        let (url, resp) = self
            .send(reqwest::Method::DELETE, "/v1/faults", None)
            .await?;
        read_json(url, resp).await
    }

    /// The node's status document.
    pub async fn status(&self) -> Result<StatusDoc, ClientError> {
        self.json("/v1/status", None).await
    }

    /// Streams log lines to `on_line`: the last `tail` lines, then, with
    /// `follow`, new lines until the node stops.
    pub async fn logs(
        &self,
        service: Option<&str>,
        tail: usize,
        follow: bool,
        mut on_line: impl FnMut(&str),
    ) -> Result<(), ClientError> {
        let mut path = format!("/v1/logs?tail={tail}&follow={follow}");
        if let Some(service) = service {
            path.push_str("&service=");
            path.push_str(service);
        }
        let resp = self.get(&path).await?;
        let url = resp.url().to_string();
        let mut body = resp.bytes_stream();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ClientError::Protocol {
                url: url.clone(),
                message: e.to_string(),
            })?;
            pending.extend_from_slice(&chunk);
            while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=pos).collect();
                on_line(String::from_utf8_lossy(&line[..line.len() - 1]).as_ref());
            }
        }
        Ok(())
    }
}
