//! The accept loop of the TCP server.

use std::time::Duration;

use mortar_bus::Broker;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::connection::Connection;

/// Limits of the TCP server; the defaults suit the broker's defaults.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The broker's `max_message_bytes`, announced in `HelloOk` and used to
    /// size the maximum frame.
    pub max_message_bytes: usize,
    /// Publishes one connection may have in flight before the server stops
    /// reading from it (backpressure instead of unbounded memory).
    pub max_in_flight_publishes: usize,
    /// How long a new connection may take to send its `Hello`.
    pub handshake_timeout: Duration,
    /// Checks the bearer token of each `Hello`; `None` accepts any (a
    /// bus run on its own, for tests). The node sets it so only its
    /// instances and its operator get in.
    pub authenticate: Option<TokenCheck>,
    /// Refuses and drops clients the node closed the bus to (fault
    /// injection); `None`: never.
    pub gate: Option<crate::Gate>,
}

/// Decides whether a `Hello`'s token is valid.
#[derive(Clone)]
pub struct TokenCheck(pub std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl std::fmt::Debug for TokenCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCheck")
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_message_bytes: mortar_bus::BrokerConfig::default().max_message_bytes,
            max_in_flight_publishes: 1024,
            authenticate: None,
            gate: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves the bus protocol on `listener` until `shutdown` is cancelled, with
/// default [`ServerOptions`]. Returns once every connection has closed.
pub async fn serve(listener: TcpListener, broker: Broker, shutdown: CancellationToken) {
    serve_with(listener, broker, ServerOptions::default(), shutdown).await;
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    listener: TcpListener,
    broker: Broker,
    options: ServerOptions,
    shutdown: CancellationToken,
) {
    let mut connections = JoinSet::new();
    let mut next_id: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    next_id += 1;
                    let connection = Connection {
                        id: next_id,
                        peer,
                        broker: broker.clone(),
                        options: options.clone(),
                        shutdown: shutdown.child_token(),
                    };
                    connections.spawn(connection.run(stream));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(%error, "bus: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}
