//! The mortar side of `mortar bench bus`: the embedded broker over its own
//! TCP protocol, publishes acknowledged after fsync.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use mortar_bus_client::{Client, NewMessage, Published};
use tokio::sync::{Mutex, Notify};

use super::{BusBenchError, BusBenchOptions, BusBenchReport, stamp_of, stamped_payload};
use crate::bus::nats::paced;
use crate::stats::Summary;

fn err(message: impl std::fmt::Display) -> BusBenchError {
    BusBenchError::Backend {
        backend: "mortar".into(),
        message: message.to_string(),
    }
}

async fn connect(url: &str, name: &str) -> Result<Client, BusBenchError> {
    Client::connect(url, name, "").await.map_err(err)
}

async fn publish(client: &Client, topic: &str, payload: bytes::Bytes) -> Result<(), BusBenchError> {
    match client
        .publish(topic, NewMessage::new(payload))
        .await
        .map_err(err)?
    {
        Published::Durable(_) => Ok(()),
        other => Err(err(format!(
            "publish was not acknowledged by the broker: {other:?}"
        ))),
    }
}

/// Deletes the benchmark's topics (and their dead-letter topics) from a
/// JetStream server, which would otherwise keep them; best effort.
async fn remove_streams(url: &str, topics: &[String]) {
    let Ok(client) = async_nats::connect(url).await else {
        return;
    };
    let js = async_nats::jetstream::new(client);
    for topic in topics {
        for name in [topic.clone(), format!("{topic}.dlq")] {
            let _ = js
                .delete_stream(mortar_bus_client::jetstream_stream(&name))
                .await;
        }
    }
}

/// Runs the three phases against the bus at `options.url` through the
/// mortar client: the embedded broker (`mortar://`) or JetStream (`nats://`).
pub async fn run(options: &BusBenchOptions) -> Result<BusBenchReport, BusBenchError> {
    let run_id = super::now_micros();
    let admin = connect(&options.url, "bench-admin").await?;

    // Phase 1: publish.
    let topic = format!("bench.throughput.{run_id}");
    admin.create_topic(&topic).await.map_err(err)?;
    let per_producer = options.count / options.producers;
    let total = per_producer * options.producers;
    let mut clients = Vec::new();
    for i in 0..options.producers {
        clients.push(connect(&options.url, &format!("bench-producer-{i}")).await?);
    }
    let started = Instant::now();
    let mut producers = Vec::new();
    for client in clients {
        let topic = topic.clone();
        let (window, size) = (options.window, options.size);
        producers.push(tokio::spawn(async move {
            let mut in_flight = FuturesUnordered::new();
            for _ in 0..per_producer {
                if in_flight.len() >= window
                    && let Some(result) = in_flight.next().await
                {
                    result?;
                }
                let (client, topic) = (&client, &topic);
                in_flight.push(async move { publish(client, topic, stamped_payload(size)).await });
            }
            while let Some(result) = in_flight.next().await {
                result?;
            }
            Ok::<(), BusBenchError>(())
        }));
    }
    for p in producers {
        p.await.map_err(err)??;
    }
    let publish_per_sec = total as f64 / started.elapsed().as_secs_f64();

    // Phase 2: consume + ack, competing consumers of one group.
    let acked = Arc::new(AtomicUsize::new(0));
    let all_done = Arc::new(Notify::new());
    let started = Instant::now();
    let mut subscriptions = Vec::new();
    for i in 0..options.consumers {
        let client = connect(&options.url, &format!("bench-consumer-{i}")).await?;
        let (acked, all_done) = (acked.clone(), all_done.clone());
        let subscription = client
            .subscribe(&topic, "bench", 1024, move |_message| {
                let (acked, all_done) = (acked.clone(), all_done.clone());
                async move {
                    if acked.fetch_add(1, Ordering::Relaxed) + 1 == total {
                        all_done.notify_one();
                    }
                    Ok::<(), std::convert::Infallible>(())
                }
            })
            .await
            .map_err(err)?;
        subscriptions.push((client, subscription));
    }
    if tokio::time::timeout(Duration::from_secs(600), all_done.notified())
        .await
        .is_err()
    {
        return Err(err(format!(
            "consumers received {} of {total} messages within 10 min",
            acked.load(Ordering::Relaxed)
        )));
    }
    let consume_per_sec = total as f64 / started.elapsed().as_secs_f64();
    for (client, subscription) in subscriptions {
        subscription.stop().await;
        client.close();
    }

    // Phase 3: latency at a fixed rate.
    let topic = format!("bench.latency.{run_id}");
    admin.create_topic(&topic).await.map_err(err)?;
    let samples = Arc::new(Mutex::new(Vec::new()));
    let consumer = connect(&options.url, "bench-latency-consumer").await?;
    let subscription = {
        let samples = samples.clone();
        consumer
            .subscribe(&topic, "latency", 1024, move |message| {
                let samples = samples.clone();
                async move {
                    if let Some(sent) = stamp_of(&message.payload) {
                        let now = super::now_micros();
                        samples.lock().await.push(now.saturating_sub(sent) as f64);
                    }
                    Ok::<(), std::convert::Infallible>(())
                }
            })
            .await
            .map_err(err)?
    };
    let producer = connect(&options.url, "bench-latency-producer").await?;
    let (sent, elapsed) = paced(options, |payload| {
        let (producer, topic) = (&producer, &topic);
        async move { publish(producer, topic, payload).await }
    })
    .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while samples.lock().await.len() < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    subscription.stop().await;
    consumer.close();
    producer.close();
    admin.close();
    let samples = samples.lock().await.clone();
    if options.url.starts_with("nats://") {
        remove_streams(&options.url, &[format!("bench.throughput.{run_id}"), topic]).await;
    }
    let backend = if options.url.starts_with("nats://") {
        "mortar client on NATS JetStream (acks before fsync)"
    } else {
        "mortar (embedded broker; acks after fsync, group commit)"
    };
    Ok(BusBenchReport {
        backend: backend.into(),
        publish_per_sec,
        consume_per_sec,
        latency_us: Summary::of(&samples).ok_or_else(|| err("no latency samples were received"))?,
        achieved_rate: sent as f64 / elapsed.as_secs_f64(),
    })
}
