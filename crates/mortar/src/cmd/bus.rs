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
