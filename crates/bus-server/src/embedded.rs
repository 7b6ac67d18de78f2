//! Running the broker and its TCP server inside another process (the node,
//! `mortar bus serve`, tests) with one call.

use std::net::SocketAddr;

use mortar_bus::{Broker, BrokerConfig, BusError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::serve::{ServerOptions, serve_with};

/// Why the embedded bus could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The broker could not open its data directory.
    #[error("cannot open the bus broker: {0}")]
    Broker(#[from] BusError),
    /// The address could not be bound.
    #[error("cannot listen for bus clients on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running broker and TCP server; stop it with [`EmbeddedBus::shutdown`].
pub struct EmbeddedBus {
    broker: Broker,
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl EmbeddedBus {
    /// The broker, e.g. to mount [`crate::http_router`] on it.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to hand to services as `MORTAR_BUS_URL`.
    pub fn url(&self) -> String {
        format!("mortar://{}", self.addr)
    }

    /// Stops accepting, closes every connection (in-flight publishes are
    /// answered first), then closes the broker.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        self.broker.close().await;
    }
}

/// Opens the broker on `config.data_dir` and serves the bus protocol on
/// `addr` (port 0 = any free port). Returns the bound address and the handle.
pub async fn run_embedded(
    config: BrokerConfig,
    addr: SocketAddr,
) -> Result<(SocketAddr, EmbeddedBus), ServerError> {
    run_embedded_with_auth(config, addr, None).await
}

/// [`run_embedded`], admitting only clients whose `Hello` token passes
/// `authenticate` (the node's credentials).
pub async fn run_embedded_with_auth(
    config: BrokerConfig,
    addr: SocketAddr,
    authenticate: Option<crate::TokenCheck>,
) -> Result<(SocketAddr, EmbeddedBus), ServerError> {
    run_embedded_with(config, addr, authenticate, None).await
}

/// [`run_embedded_with_auth`], also refusing whom `gate` closes the bus to.
pub async fn run_embedded_with(
    config: BrokerConfig,
    addr: SocketAddr,
    authenticate: Option<crate::TokenCheck>,
    gate: Option<crate::Gate>,
) -> Result<(SocketAddr, EmbeddedBus), ServerError> {
    let options = ServerOptions {
        max_message_bytes: config.max_message_bytes,
        authenticate,
        gate,
        ..ServerOptions::default()
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    let broker = Broker::open(config).await?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_with(
        listener,
        broker.clone(),
        options,
        shutdown.clone(),
    ));
    tracing::info!(addr = %bound, "bus: listening");
    Ok((
        bound,
        EmbeddedBus {
            broker,
            addr: bound,
            shutdown,
            task,
        },
    ))
}
