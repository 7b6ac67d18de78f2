//! A one-request-per-connection HTTPS client with the node's own
//! certificate, for the node's health probes and admin commands that talk
//! to an instance directly (`mortar projections`). Services use the
//! pooled resilient client instead.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{InstanceTls, server_name};

/// Why a request through [`Caller`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CallerError {
    /// The URL has no `host:port`.
    #[error("{0:?} is not an instance URL (http(s)://host:port)")]
    Url(String),
    /// Connecting or the TLS handshake failed.
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    /// The HTTP exchange failed.
    #[error("{0}: {1}")]
    Http(String, String),
    /// No answer in time.
    #[error("{0}: no answer within {1:?}")]
    Timeout(String, Duration),
}

/// Calls instances over mTLS, presenting an identity of the node.
#[derive(Debug, Clone)]
pub struct Caller {
    config: Arc<ClientConfig>,
    app: String,
}

impl Caller {
    /// A caller presenting `tls`'s certificate and trusting its CA.
    pub fn new(tls: &InstanceTls) -> Result<Caller, crate::TlsError> {
        Ok(Caller {
            config: tls.client_config()?,
            app: tls.app.clone(),
        })
    }

    /// Sends one request to the instance of `service` at `base`
    /// (`http://host:port` or `https://host:port`; only the address is
    /// used) and reads the whole answer.
    pub async fn request(
        &self,
        service: &str,
        base: &str,
        method: Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), CallerError> {
        let authority = base
            .split_once("://")
            .map_or(base, |(_, rest)| rest)
            .split('/')
            .next()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| CallerError::Url(base.to_owned()))?
            .to_owned();
        let what = format!("{service} at {authority}");
        let exchange = async {
            let tcp = TcpStream::connect(&authority)
                .await
                .map_err(|e| CallerError::Connect(what.clone(), e))?;
            let name = ServerName::try_from(server_name(&self.app, service)).map_err(|e| {
                CallerError::Connect(
                    what.clone(),
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
                )
            })?;
            let tls = TlsConnector::from(self.config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| CallerError::Connect(what.clone(), e))?;
            let http_err = |e: hyper::Error| CallerError::Http(what.clone(), e.to_string());
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(http_err)?;
            let driver = tokio::spawn(conn);
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, &authority);
            if !body.is_empty() {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
            }
            let req = req
                .body(Full::new(body))
                .map_err(|e| CallerError::Http(what.clone(), e.to_string()))?;
            let resp = sender.send_request(req).await.map_err(http_err)?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(http_err)?
                .to_bytes();
            driver.abort();
            Ok((status, bytes))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(CallerError::Timeout(what, timeout)),
        }
    }
}
