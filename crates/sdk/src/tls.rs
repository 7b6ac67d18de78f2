//! The service's server side of mTLS: a listener that completes the TLS
//! handshake (client certificate required) before axum sees the
//! connection, the caller's service name per connection, and the check of
//! the manifest's `callers` list.
//!
//! Handshakes run in their own tasks, so a slow or silent client cannot
//! hold up the accept loop; a client without a certificate signed by the
//! node's CA never gets past the handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use mortar_tls::InstanceTls;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::Problem;

/// How long a client may take to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for axum to take them.
const BACKLOG: usize = 128;

/// Who is on the other end of a TLS connection: its address and the
/// service its (verified) certificate names.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The caller's socket address.
    pub addr: SocketAddr,
    /// The calling service, from its certificate's `mortar://<app>/<service>`
    /// URI SAN; `None` when the certificate names no service of this app.
    pub service: Option<String>,
}

/// A TCP listener whose connections come out TLS-handshaken.
pub(crate) struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    accept_task: tokio::task::AbortHandle,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Dropping the listener (draining) closes the port at once.
        self.accept_task.abort();
    }
}

impl TlsListener {
    /// Takes over `listener`; handshakes use `config` (client certificates
    /// required) and read callers' names for `app`.
    pub(crate) fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        app: String,
    ) -> std::io::Result<TlsListener> {
        let local_addr = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(BACKLOG);
        let acceptor = TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            loop {
                let (tcp, addr) = match listener.accept().await {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: wait rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx, app) = (acceptor.clone(), tx.clone(), app.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let service = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|certs| mortar_tls::peer_service(certs, &app));
                            let _ = tx.send((stream, Peer { addr, service })).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %addr, error = %e, "TLS handshake refused");
                        }
                        Err(_) => tracing::debug!(peer = %addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            local_addr,
            ready,
            accept_task: task.abort_handle(),
        })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(pair) => pair,
            // The accept task ended (aborted): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local_addr,
            service: None,
        })
    }
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Middleware: answers 403 (problem+json) to a caller whose service is not
/// in this service's `callers` list (`MORTAR_TLS_CALLERS`).
pub(crate) async fn require_caller(
    State(tls): State<Arc<InstanceTls>>,
    req: Request,
    next: Next,
) -> Response {
    let caller = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .and_then(|ConnectInfo(p)| p.service.clone());
    match caller {
        Some(caller) if tls.allows(&caller) => next.run(req).await,
        Some(caller) => {
            tracing::info!(%caller, path = %req.uri().path(), "caller not allowed by the manifest");
            Problem::new(
                StatusCode::FORBIDDEN,
                format!(
                    "service {caller:?} may not call this service; add it to this service's `callers` in the manifest"
                ),
            )
            .with("caller", caller)
            .into_response()
        }
        None => Problem::new(
            StatusCode::FORBIDDEN,
            "the client certificate names no service of this app",
        )
        .into_response(),
    }
}
