//! The shop's order-history service: the read model behind "my orders".
//!
//! It consumes ordering's events from the bus topic `orders` (group
//! `order-history`) and projects each one exactly once into its own read
//! store (`MORTAR_READ_STORE_URL`; by default `read.db` beside the
//! service's `MORTAR_STORE_URL` file), through the inbox: a message
//! delivered twice changes the read model once. Because the read model is
//! derived data, it can always be thrown away and rebuilt from ordering's
//! event feed (`POST /v1/projections/order-history/rebuild`, or `mortar
//! projections rebuild order-history`).

mod api;
mod config;
mod feed;
mod history;
mod projection;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use mortar_cqrs::open_read_store;
use mortar_sdk::Context;
use mortar_sdk::bus::connect_when_reachable;
use mortar_sdk::replay_check::DeclaredProjection;

use crate::feed::{Feed, SOURCE};
use crate::history::History;
use crate::projection::OrderHistory;

/// The topic ordering publishes its events on.
const TOPIC: &str = "orders";
/// This service's consumer group on it.
const GROUP: &str = "order-history";
/// Messages handled at once (the upserts do not depend on arrival order).
const CONCURRENCY: usize = 4;

fn main() -> ExitCode {
    // Declared so `mortar backup verify` can rebuild the read model from
    // ordering's events and compare it with the backed-up one.
    let projections = vec![DeclaredProjection::new(OrderHistory).events_of(SOURCE)];
    mortar_sdk::run_with_projections("order-history", projections, |ctx| async move {
        let url = config::read_store_url(ctx.env())?;
        let read = open_read_store(&url).await?;
        let feed = match ctx.client(mortar_sdk::call::ClientConfig::default()) {
            Ok(client) => Some(Feed::new(client)),
            Err(e) => {
                tracing::warn!(error = %e, "ordering cannot be called by name: no lag, no rebuild");
                None
            }
        };
        let history = Arc::new(History::open(read, feed).await?);
        let probe = history.clone();
        ctx.readiness().add_check("read-store", move || {
            let history = probe.clone();
            async move {
                history
                    .read_store()
                    .checkpoints()
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        });
        start_consumer(&ctx, history.clone());
        Ok(api::routes(history))
    })
}

/// Consumes `orders` in the background. The bus may be away at start: the
/// service answers from what it has, and catches up once it connects (a
/// new group starts at the beginning of the topic).
fn start_consumer(ctx: &Context, history: Arc<History>) {
    let config = match ctx.bus_config() {
        Ok(config) => config,
        Err(e) => {
            tracing::warn!(error = %e, "no usable bus settings: the order history is not updated live");
            return;
        }
    };
    let shutdown = ctx.shutdown_token();
    // Waited for at shutdown: the subscription drains (handles and acks
    // what it holds) before the process exits.
    ctx.spawn_drained(async move {
        let pause = || async {
            tokio::select! {
                () = shutdown.cancelled() => false,
                () = tokio::time::sleep(Duration::from_millis(500)) => true,
            }
        };
        let Some(bus) = connect_when_reachable(config, shutdown.clone()).await else {
            return;
        };
        // ordering may not have created the topic yet.
        if let Err(e) = bus.create_topic(TOPIC).await {
            tracing::warn!(error = %e, topic = TOPIC, "cannot create the topic");
        }
        let subscription = loop {
            let history = history.clone();
            let handler = move |message: mortar_sdk::bus::Message| {
                let history = history.clone();
                async move { history.apply_message(&message.payload).await.map(drop) }
            };
            match bus.subscribe(TOPIC, GROUP, CONCURRENCY, handler).await {
                Ok(subscription) => break subscription,
                Err(e) => {
                    tracing::warn!(error = %e, topic = TOPIC, "cannot subscribe yet");
                    if !pause().await {
                        return;
                    }
                }
            }
        };
        tracing::info!(topic = TOPIC, group = GROUP, "projecting order events");
        shutdown.cancelled().await;
        subscription.stop().await;
    });
}
