//! Measures durable publish throughput and how well group commit folds fsyncs.
//!
//! ```sh
//! cargo run --release -p mortar-bus --example publish_throughput -- --publishers 16 --messages 20000 --size 256
//! ```
//!
//! Opens a broker in a temporary directory, runs `publishers` concurrent tasks that
//! publish `messages` messages in total, one message per publish, and prints msg/s,
//! fsyncs/s and messages per fsync. Each publish returns only after its fsync.

use std::error::Error;
use std::time::Instant;

use bytes::Bytes;
use mortar_bus::{Broker, BrokerConfig, NewMessage};

struct Args {
    publishers: usize,
    messages: usize,
    size: usize,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        publishers: 16,
        messages: 20_000,
        size: 256,
    };
    let mut rest = std::env::args().skip(1);
    while let Some(flag) = rest.next() {
        let value: usize = rest
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .parse()
            .map_err(|e| format!("{flag}: {e}"))?;
        match flag.as_str() {
            "--publishers" => args.publishers = value.max(1),
            "--messages" => args.messages = value,
            "--size" => args.size = value,
            _ => {
                return Err(format!(
                    "unknown flag {flag}: use --publishers N --messages N --size BYTES"
                )
                .into());
            }
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let broker = Broker::open(BrokerConfig {
        data_dir: dir.path().to_owned(),
        ..BrokerConfig::default()
    })
    .await?;
    broker.create_topic("bench").await?;
    let payload = Bytes::from(vec![b'x'; args.size]);
    let per_publisher = args.messages.div_ceil(args.publishers);

    let fsyncs_before = broker.fsyncs();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.publishers {
        let broker = broker.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_publisher {
                broker
                    .publish("bench", vec![NewMessage::new(payload.clone())])
                    .await?;
            }
            Ok::<_, mortar_bus::BusError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let fsyncs = broker.fsyncs() - fsyncs_before;
    let total = per_publisher * args.publishers;
    broker.close().await;

    println!(
        "publishers={} messages={} size={}B elapsed={:.2}s msg/s={:.0} fsyncs={} fsyncs/s={:.0} msgs/fsync={:.1}",
        args.publishers,
        total,
        args.size,
        elapsed,
        total as f64 / elapsed,
        fsyncs,
        fsyncs as f64 / elapsed,
        total as f64 / fsyncs.max(1) as f64,
    );
    Ok(())
}
