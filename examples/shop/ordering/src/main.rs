//! The shop's ordering service: an event-sourced Order aggregate.
//!
//! Commands arrive over HTTP; the command handler loads the order from the
//! event store (`MORTAR_STORE_URL`: SQLite by default, PostgreSQL for
//! scale-out), decides, and appends the events together with their outgoing
//! messages (the transactional outbox). The relay publishes those messages
//! to the bus topic `orders` — also after a crash, once the service is back.

mod api;
mod order;

use std::process::ExitCode;
use std::sync::Arc;

use mortar_cqrs::CommandHandler;
use mortar_cqrs::eventstore::{self, EventStore, OutboxRelay, STORE_URL_ENV};
use mortar_sdk::bus::connect_when_reachable;
use mortar_sdk::{ConfigError, Context};

/// The topic order events are published on.
const TOPIC: &str = "orders";

fn main() -> ExitCode {
    mortar_sdk::run("ordering", |ctx| async move {
        let url = ctx
            .env()
            .raw(STORE_URL_ENV)
            .ok_or_else(|| {
                mortar_sdk::BoxError::from(ConfigError::Missing {
                    name: STORE_URL_ENV.into(),
                    expected:
                        "sqlite:///path/store.db or postgres://user@host/db (mortar up sets it)"
                            .into(),
                })
            })?
            .to_owned();
        if let Err(e) = eventstore::StoreUrl::parse(&url) {
            return Err(mortar_sdk::BoxError::from(ConfigError::Invalid {
                name: STORE_URL_ENV.into(),
                value: url,
                expected: "sqlite:///path/store.db or postgres://user@host/db".into(),
                problem: e.to_string(),
            }));
        }
        let store = eventstore::open(&url).await?;
        start_relay(&ctx, store.clone());
        let orders = CommandHandler::new(store)
            .publish_to(TOPIC)
            .snapshot_every(50)
            .max_attempts(10);
        Ok(api::routes(orders))
    })
}

/// Publishes the outbox in the background. The bus may be away at start (or
/// for a long time): commands keep working, and their messages wait in the
/// outbox until the relay connects.
fn start_relay(ctx: &Context, store: Arc<dyn EventStore>) {
    let config = match ctx.bus_config() {
        Ok(config) => config,
        Err(e) => {
            tracing::warn!(error = %e, "no usable bus settings: order events stay in the outbox unpublished");
            return;
        }
    };
    let shutdown = ctx.shutdown_token();
    tokio::spawn(async move {
        let Some(bus) = connect_when_reachable(config, shutdown.clone()).await else {
            return;
        };
        if let Err(e) = bus.create_topic(TOPIC).await {
            tracing::warn!(error = %e, topic = TOPIC, "cannot create the topic");
        }
        tracing::info!("outbox relay started");
        let _ = OutboxRelay::new(store, Arc::new(bus)).spawn(shutdown).await;
    });
}
