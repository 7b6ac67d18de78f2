//! ordering's event feed (`GET /v1/events`, `/v1/events/head`), called by
//! name through the SDK's resilient client: the source of a rebuild and the
//! head that lag is measured against.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use mortar_cqrs::eventstore::RecordedEvent;
use mortar_sdk::call::{CallError, Client};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// How many times (100 ms apart) a call waits for the first instances.
const DISCOVERY_WAITS: u32 = 20;

/// The service whose events this read model follows.
pub(crate) const SOURCE: &str = "ordering";

/// The feed could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FeedError {
    /// No instance answered (down, unknown, breaker open, deadline).
    #[error("cannot reach {SOURCE}: {0}")]
    Call(#[from] CallError),
    /// The request could not even be built (a bug).
    #[error("cannot build the request to {SOURCE}: {0}")]
    Request(#[from] http::Error),
    /// ordering answered with an error status.
    #[error("{SOURCE} answered {status} to {path}: {body}")]
    Status {
        /// The path called.
        path: String,
        /// Its status.
        status: u16,
        /// The start of its body (a problem document, usually).
        body: String,
    },
    /// The answer was cut off or not the expected JSON.
    #[error("unexpected answer from {SOURCE} to {path}: {problem}")]
    Body {
        /// The path called.
        path: String,
        /// What was wrong.
        problem: String,
    },
}

#[derive(Debug, Deserialize)]
struct Head {
    head: i64,
}

#[derive(Debug, Deserialize)]
struct Events {
    events: Vec<RecordedEvent>,
}

/// ordering's feed; see the module docs.
#[derive(Clone)]
pub(crate) struct Feed {
    client: Client,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").field("source", &SOURCE).finish()
    }
}

impl Feed {
    pub(crate) fn new(client: Client) -> Self {
        Feed { client }
    }

    /// The position of ordering's newest event.
    pub(crate) async fn head(&self) -> Result<i64, FeedError> {
        Ok(self.get::<Head>("/v1/events/head").await?.head)
    }

    /// Up to `limit` events after `after`, in commit order.
    pub(crate) async fn events(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, FeedError> {
        let path = format!("/v1/events?after={after}&limit={limit}");
        Ok(self.get::<Events>(&path).await?.events)
    }

    /// Calls ordering. Right after start the client has not heard from the
    /// registry yet and reports no instances; that is waited out for a
    /// moment instead of failing the first status or rebuild.
    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, FeedError> {
        let mut discovery = DISCOVERY_WAITS;
        let response = loop {
            let request = http::Request::get(path).body(Bytes::new())?;
            match self.client.call(SOURCE, request).await {
                Ok(response) => break response,
                Err(CallError::NoInstances { .. }) if discovery > 0 => {
                    discovery -= 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| FeedError::Body {
                path: path.to_owned(),
                problem: e.to_string(),
            })?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(FeedError::Status {
                path: path.to_owned(),
                status: status.as_u16(),
                body: text.chars().take(300).collect(),
            });
        }
        serde_json::from_slice(&body).map_err(|e| FeedError::Body {
            path: path.to_owned(),
            problem: e.to_string(),
        })
    }
}
