//! The message bus, as a service uses it: publish (durable on return, or
//! buffered in this instance's outbox while the bus is away) and subscribe
//! with a handler. See [`crate::Context::bus`].

pub use mortar_bus_client::{
    BUS_URL_ENV, Client, ClientConfig, ClientError, Message, NewMessage, Published, Subscription,
};

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Connects with `config`, retrying every half second while the bus is
/// unreachable, until it answers or `shutdown` fires (`None`). For
/// background work that must start whenever the bus comes (a relay, a
/// consumer) without holding up the service's start.
pub async fn connect_when_reachable(
    config: ClientConfig,
    shutdown: CancellationToken,
) -> Option<Client> {
    loop {
        match Client::connect_with(config.clone()).await {
            Ok(bus) => return Some(bus),
            Err(e) => {
                tracing::warn!(error = %e, "bus not reachable yet; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
}
