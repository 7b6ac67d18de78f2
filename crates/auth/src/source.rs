//! Where a verifier gets the issuer's public keys.
//!
//! Normally from the issuer service itself, found by *name* through the
//! resilient client ([`ServiceJwks`]): no address is configured anywhere,
//! and retries, timeouts and the circuit breaker apply as to any call. An
//! issuer verifying its own tokens, and tests, hand keys over directly
//! ([`StaticJwks`]).

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use mortar_resilience::{Client, ResponseBody};

use crate::error::FetchError;
use crate::keys::Jwks;

/// Where the issuer publishes its key set by default.
pub const DEFAULT_JWKS_PATH: &str = "/.well-known/jwks.json";

/// The largest key set a verifier reads; a few keys are a few hundred bytes.
const MAX_JWKS_BYTES: usize = 64 * 1024;

/// A source of the issuer's current key set.
#[async_trait::async_trait]
pub trait JwksSource: Send + Sync + 'static {
    /// Fetches the key set now.
    async fn fetch(&self) -> Result<Jwks, FetchError>;

    /// Names the source in logs, e.g. `service identity /.well-known/jwks.json`.
    fn describe(&self) -> String;
}

/// The key set of an issuer *service*, fetched by name with the resilient
/// client.
#[derive(Clone)]
pub struct ServiceJwks {
    client: Client,
    service: String,
    path: String,
}

impl std::fmt::Debug for ServiceJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceJwks")
            .field("service", &self.service)
            .field("path", &self.path)
            .finish()
    }
}

impl ServiceJwks {
    /// `GET path` on any instance of `service`, through `client`.
    pub fn new(client: Client, service: impl Into<String>, path: impl Into<String>) -> Self {
        ServiceJwks {
            client,
            service: service.into(),
            path: path.into(),
        }
    }
}

#[async_trait::async_trait]
impl JwksSource for ServiceJwks {
    async fn fetch(&self) -> Result<Jwks, FetchError> {
        let req = Request::get(self.path.as_str())
            .header(header::ACCEPT, "application/jwk-set+json, application/json")
            .body(Bytes::new())
            .map_err(|e| FetchError::Body(format!("bad JWKS path {:?}: {e}", self.path)))?;
        let resp = self.client.call(&self.service, req).await?;
        if resp.status() != StatusCode::OK {
            return Err(FetchError::Status {
                path: self.path.clone(),
                status: resp.status().as_u16(),
            });
        }
        let body = read_limited(resp.into_body()).await?;
        Ok(serde_json::from_slice(&body)?)
    }

    fn describe(&self) -> String {
        format!("service {} {}", self.service, self.path)
    }
}

/// Reads a body of at most [`MAX_JWKS_BYTES`].
async fn read_limited(mut body: ResponseBody) -> Result<Vec<u8>, FetchError> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| FetchError::Body(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_JWKS_BYTES {
                return Err(FetchError::Body(format!(
                    "larger than {MAX_JWKS_BYTES} bytes"
                )));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

/// A key set held in memory and replaced by its owner: an issuer verifying
/// its own tokens, or a test.
#[derive(Debug, Clone, Default)]
pub struct StaticJwks {
    jwks: Arc<RwLock<Jwks>>,
}

impl StaticJwks {
    /// A source answering `jwks` until [`StaticJwks::set`] replaces it.
    pub fn new(jwks: Jwks) -> Self {
        StaticJwks {
            jwks: Arc::new(RwLock::new(jwks)),
        }
    }

    /// Replaces the key set (e.g. after a rotation).
    pub fn set(&self, jwks: Jwks) {
        *self.jwks.write().unwrap_or_else(|p| p.into_inner()) = jwks;
    }
}

#[async_trait::async_trait]
impl JwksSource for StaticJwks {
    async fn fetch(&self) -> Result<Jwks, FetchError> {
        Ok(self.jwks.read().unwrap_or_else(|p| p.into_inner()).clone())
    }

    fn describe(&self) -> String {
        "in-memory key set".to_owned()
    }
}
