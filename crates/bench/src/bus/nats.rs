//! The NATS JetStream side of `mortar bench bus`: a file-storage stream,
//! a durable pull consumer with explicit acks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::Mutex;

use super::{BusBenchError, BusBenchOptions, BusBenchReport, stamp_of, stamped_payload};
use crate::stats::Summary;

const STREAM: &str = "MORTAR_BENCH";

fn err(message: impl std::fmt::Display) -> BusBenchError {
    BusBenchError::Backend {
        backend: "nats-jetstream".into(),
        message: message.to_string(),
    }
}

async fn fresh_stream(
    js: &jetstream::Context,
    subject: &str,
) -> Result<stream::Stream, BusBenchError> {
    let _ = js.delete_stream(STREAM).await;
    js.create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec![subject.into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(err)
}

async fn durable(
    stream: &stream::Stream,
    name: &str,
) -> Result<consumer::PullConsumer, BusBenchError> {
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.into()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await
        .map_err(err)
}

/// Runs the three phases against JetStream at `options.url`.
pub async fn run(options: &BusBenchOptions) -> Result<BusBenchReport, BusBenchError> {
    let client = async_nats::connect(options.url.as_str())
        .await
        .map_err(err)?;
    let js = jetstream::new(client.clone());

    // Phase 1: publish.
    let subject = "bench.throughput";
    let stream = fresh_stream(&js, subject).await?;
    let per_producer = options.count / options.producers;
    let total = per_producer * options.producers;
    let started = Instant::now();
    let mut producers = Vec::new();
    for _ in 0..options.producers {
        let js = js.clone();
        let window = options.window;
        let size = options.size;
        producers.push(tokio::spawn(async move {
            let mut in_flight = FuturesUnordered::new();
            for _ in 0..per_producer {
                if in_flight.len() >= window
                    && let Some(ack) = in_flight.next().await
                {
                    ack?;
                }
                let ack = js
                    .publish(subject, stamped_payload(size))
                    .await
                    .map_err(err)?;
                in_flight.push(async move { ack.await.map(|_| ()).map_err(err) });
            }
            while let Some(ack) = in_flight.next().await {
                ack?;
            }
            Ok::<(), BusBenchError>(())
        }));
    }
    for p in producers {
        p.await.map_err(err)??;
    }
    let publish_per_sec = total as f64 / started.elapsed().as_secs_f64();

    // Phase 2: consume + ack with competing consumers of one durable.
    let durable_consumer = durable(&stream, "bench").await?;
    let acked = Arc::new(AtomicUsize::new(0));
    let all_done = Arc::new(tokio::sync::Notify::new());
    let started = Instant::now();
    let mut consumers = Vec::new();
    for _ in 0..options.consumers {
        let consumer = durable_consumer.clone();
        let (acked, all_done) = (acked.clone(), all_done.clone());
        consumers.push(tokio::spawn(async move {
            let mut messages = consumer.messages().await.map_err(err)?;
            while let Some(message) = messages.next().await {
                message.map_err(err)?.ack().await.map_err(err)?;
                if acked.fetch_add(1, Ordering::Relaxed) + 1 == total {
                    all_done.notify_one();
                }
            }
            Ok::<(), BusBenchError>(())
        }));
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
    client.flush().await.map_err(err)?;
    let consume_per_sec = total as f64 / started.elapsed().as_secs_f64();
    for c in consumers {
        c.abort();
    }

    // Phase 3: latency at a fixed rate.
    let subject = "bench.latency";
    let stream = fresh_stream(&js, subject).await?;
    let consumer = durable(&stream, "latency").await?;
    let samples = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let receiver = {
        let samples = samples.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut messages = consumer.messages().await.map_err(err)?;
            loop {
                match tokio::time::timeout(Duration::from_millis(500), messages.next()).await {
                    Ok(Some(Ok(message))) => {
                        if let Some(sent) = stamp_of(&message.payload) {
                            let now = super::now_micros();
                            samples.lock().await.push(now.saturating_sub(sent) as f64);
                        }
                        message.ack().await.map_err(err)?;
                    }
                    Ok(Some(Err(e))) => return Err(err(e)),
                    _ if done.load(Ordering::Relaxed) => return Ok::<(), BusBenchError>(()),
                    _ => {}
                }
            }
        })
    };
    let (sent, elapsed) = paced(options, |payload| {
        let js = js.clone();
        async move {
            let ack = js.publish(subject, payload).await.map_err(err)?;
            ack.await.map(|_| ()).map_err(err)
        }
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    done.store(true, Ordering::Relaxed);
    receiver.await.map_err(err)??;
    let _ = js.delete_stream(STREAM).await;
    let samples = samples.lock().await.clone();
    Ok(BusBenchReport {
        backend: "nats-jetstream (file storage; acks before fsync by default)".into(),
        publish_per_sec,
        consume_per_sec,
        latency_us: Summary::of(&samples).ok_or_else(|| err("no latency samples were received"))?,
        achieved_rate: sent as f64 / elapsed.as_secs_f64(),
    })
}

/// Publishes stamped payloads at `options.rate` for `options.latency_duration`
/// with up to a second's worth of publishes in flight (at least 1024), so a
/// broker whose acknowledgements lag (a slow fsync) does not hold back the
/// paced sends and turn them into bursts; returns how many were sent and how
/// long it took.
pub(crate) async fn paced<F, Fut>(
    options: &BusBenchOptions,
    publish: F,
) -> Result<(usize, Duration), BusBenchError>
where
    F: Fn(bytes::Bytes) -> Fut,
    Fut: Future<Output = Result<(), BusBenchError>>,
{
    let interval = Duration::from_secs_f64(1.0 / options.rate.max(1) as f64);
    let total = (options.rate as f64 * options.latency_duration.as_secs_f64()) as usize;
    let window = usize::try_from(options.rate)
        .unwrap_or(usize::MAX)
        .max(1024);
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    for i in 0..total {
        let due = started + interval.mul_f64(i as f64);
        let now = Instant::now();
        if due > now {
            // Drain completions while waiting for the next send slot.
            let sleep = tokio::time::sleep_until(due.into());
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    Some(r) = in_flight.next(), if !in_flight.is_empty() => r?,
                }
            }
        }
        if in_flight.len() >= window
            && let Some(r) = in_flight.next().await
        {
            r?;
        }
        in_flight.push(publish(stamped_payload(options.size)));
    }
    while let Some(r) = in_flight.next().await {
        r?;
    }
    Ok((total, started.elapsed()))
}
