//! `mortar bus …`: the broker on its own, its stats, dead-letter replay.

use std::process::ExitCode;

use std::future::IntoFuture;

use anyhow::Context;
use mortar_bus::BrokerConfig;
use mortar_bus_server::{http_router, run_embedded};
use tokio_util::sync::CancellationToken;

use crate::cli::{BusServeArgs, BusStatsArgs, DlqReplayArgs};

pub(crate) fn serve(args: BusServeArgs) -> anyhow::Result<ExitCode> {
    mortar_sdk::logging::init("mortar-bus", "bus", "info");
    super::runtime()?.block_on(async move {
        let mut signals = mortar_sdk::shutdown::Signals::install();
        let config = BrokerConfig {
            data_dir: args.data_dir.join("bus"),
            preallocate_segments: args.preallocate,
            delivery: args.delivery,
            ..BrokerConfig::default()
        };
        let (addr, bus) = run_embedded(config, args.addr).await?;
        for topic in &args.topics {
            bus.broker()
                .create_topic(topic)
                .await
                .with_context(|| format!("cannot create topic {topic:?}"))?;
        }
        let listener = tokio::net::TcpListener::bind(args.http_addr)
            .await
            .with_context(|| format!("cannot listen for the bus HTTP API on {}", args.http_addr))?;
        let http_addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let http = tokio::spawn(
            axum::serve(listener, http_router(std::sync::Arc::new(bus.broker().clone())))
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .into_future(),
        );
        tracing::info!(url = %bus.url(), %addr, http = %format!("http://{http_addr}"), "bus serving");
        let signal = signals.recv().await;
        tracing::info!(signal, "bus stopping");
        stop.cancel();
        let _ = http.await;
        bus.shutdown().await;
        tracing::info!("bus stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// `mortar bus http`: the HTTP bus API over NATS JetStream, run like a
/// service by the SDK (environment, port, health, JSON logs, drain).
pub(crate) fn http() -> ExitCode {
    mortar_sdk::run("bus-http", |ctx| async move {
        let config = ctx.bus_config().map_err(as_config_error)?;
        let url = mortar_bus_client::BusUrl::parse(&config.url)
            .map_err(|e| as_config_error(Box::new(e)))?;
        if url.scheme != mortar_bus_client::Scheme::Nats {
            return Err(Box::new(mortar_sdk::ConfigError::Invalid {
                name: mortar_bus_client::BUS_URL_ENV.into(),
                value: mortar_bus_client::redact_url(&config.url),
                expected: "nats://HOST:PORT".into(),
                problem: "`mortar bus http` bridges NATS JetStream; the embedded broker (`mortar up`, `mortar bus serve`) serves /v1/bus itself".into(),
            }) as mortar_sdk::BoxError);
        }
        let token = ctx.env().raw(BUS_HTTP_TOKEN_ENV).filter(|t| !t.is_empty());
        if token.is_none() && !ctx.local_addr().ip().is_loopback() {
            tracing::warn!(
                address = %ctx.local_addr(),
                "{BUS_HTTP_TOKEN_ENV} is not set and the bridge listens beyond loopback: anyone who reaches this port may use the bus"
            );
        }
        let bridge = mortar_bus_server::Bridge::new(&config.url, token);
        let ready = bridge.clone();
        ctx.readiness().add_check("jetstream", move || {
            let connected = ready.is_connected();
            async move {
                connected
                    .then_some(())
                    .ok_or_else(|| "not connected to NATS JetStream yet".to_owned())
            }
        });
        tokio::spawn(bridge.clone().connect(config, ctx.shutdown_token()));
        Ok(bridge.router())
    })
}

/// A bad bus setting as a configuration error, so the bridge exits 78 with
/// one line naming the variable, as a service does.
fn as_config_error(error: mortar_sdk::BoxError) -> mortar_sdk::BoxError {
    match error.downcast::<mortar_bus_client::ClientError>() {
        Ok(client) => {
            let (name, value) = match &*client {
                mortar_bus_client::ClientError::InvalidConfig {
                    variable, value, ..
                } => ((*variable).to_owned(), value.clone()),
                mortar_bus_client::ClientError::InvalidUrl { url, .. } => (
                    mortar_bus_client::BUS_URL_ENV.to_owned(),
                    mortar_bus_client::redact_url(url),
                ),
                _ => (mortar_bus_client::BUS_URL_ENV.to_owned(), String::new()),
            };
            Box::new(mortar_sdk::ConfigError::Invalid {
                name,
                value,
                expected: "nats://HOST:PORT and the bus settings a service takes".into(),
                problem: client.to_string(),
            })
        }
        Err(other) => other,
    }
}

/// The bearer token clients of `mortar bus http` must send, when set.
const BUS_HTTP_TOKEN_ENV: &str = "MORTAR_BUS_HTTP_TOKEN";

pub(crate) async fn stats(args: BusStatsArgs) -> anyhow::Result<ExitCode> {
    let client = super::admin_client(&args.target.manifest.file, &args.target.node)?;
    let stats = client.bus_stats().await?;
    println!(
        "{:<28} {:<20} {:>10} {:>10} {:>10} {:>8}",
        "TOPIC", "GROUP", "BACKLOG", "LAG", "IN FLIGHT", "DLQ"
    );
    for topic in stats["topics"].as_array().into_iter().flatten() {
        let name = topic["topic"].as_str().unwrap_or("?");
        let groups = topic["groups"].as_array().cloned().unwrap_or_default();
        if groups.is_empty() {
            println!("{name:<28} {:<20} published {}", "-", topic["next_offset"]);
        }
        for g in groups {
            println!(
                "{name:<28} {:<20} {:>10} {:>10} {:>10} {:>8}",
                g["group"].as_str().unwrap_or("?"),
                g["backlog"],
                g["lag"],
                g["in_flight"],
                g["dead_lettered"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn replay(args: DlqReplayArgs) -> anyhow::Result<ExitCode> {
    let client = super::admin_client(&args.target.manifest.file, &args.target.node)?;
    let moved = client.replay_dead_letters(&args.topic, args.max).await?;
    println!(
        "{}: {moved} dead letter(s) moved back from {}.dlq",
        args.topic, args.topic
    );
    Ok(ExitCode::SUCCESS)
}
