//! `mortar bench cqrs`: commands per second through the command handler and
//! event store (in process, every command durable on return), latency, and
//! projection lag at half the measured load.
//!
//! Each client runs its own aggregates (a new one every 8 commands, so
//! loads stay short, as with snapshots), which is the shape of a shop: many
//! orders, few commands each. The store is SQLite in a scratch directory, or
//! the PostgreSQL a `--store-url` names (a fresh schema, dropped after).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mortar_cqrs::eventstore::{self, Metadata, RecordedEvent};
use mortar_cqrs::{
    Aggregate, CommandHandler, DomainEvent, Projection, ProjectionRunner, Sql, open_read_store,
};
use serde::{Deserialize, Serialize};

use crate::stats::Summary;

/// What to run.
#[derive(Debug, Clone)]
pub struct CqrsBenchOptions {
    /// `postgres://…` to bench PostgreSQL; `None`: SQLite in a scratch directory.
    pub store_url: Option<String>,
    /// Concurrent clients.
    pub clients: usize,
    /// Length of each phase.
    pub duration: Duration,
}

/// What it measured.
#[derive(Debug, Clone)]
pub struct CqrsBenchReport {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Commands per second, closed loop (full load).
    pub commands_per_sec: f64,
    /// Command latency at full load, ms.
    pub latency: Summary,
    /// The rate of the half-load phase.
    pub half_rate: f64,
    /// Command latency at half load, ms.
    pub half_latency: Summary,
    /// Projection lag at half load (append returned → projected), ms.
    pub lag: Summary,
    /// The machine's load average (1, 5, 15 min) before and after the run:
    /// numbers from a shared machine mean little without it.
    pub load: (Option<String>, Option<String>),
}

/// A bench failure.
#[derive(Debug, thiserror::Error)]
pub enum CqrsBenchError {
    /// The event store failed.
    #[error("event store: {0}")]
    Store(#[from] eventstore::StoreError),
    /// The read store failed.
    #[error("read store: {0}")]
    Read(#[from] mortar_cqrs::ReadStoreError),
    /// No sample was taken.
    #[error("no command completed")]
    Empty,
    /// The scratch directory or PostgreSQL setup failed.
    #[error("{0}")]
    Setup(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Tab {
    items: u32,
    total: i64,
    closed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
enum TabEvent {
    ItemAdded { price_cents: i64 },
}

impl DomainEvent for TabEvent {}

#[derive(Debug, thiserror::Error)]
#[error("a tab holds at most 100 items")]
struct Full;

impl Aggregate for Tab {
    const TYPE: &'static str = "tab";
    type Command = i64;
    type Event = TabEvent;
    type Error = Full;

    fn decide(&self, price: &i64) -> Result<Vec<TabEvent>, Full> {
        if self.items >= 100 {
            return Err(Full);
        }
        Ok(vec![TabEvent::ItemAdded {
            price_cents: *price,
        }])
    }

    fn apply(&mut self, TabEvent::ItemAdded { price_cents }: &TabEvent) {
        self.items += 1;
        self.total += price_cents;
    }
}

struct Totals;

impl Projection for Totals {
    fn name(&self) -> &str {
        "tab-totals"
    }
    fn schema(&self) -> &str {
        "CREATE TABLE IF NOT EXISTS tab_totals (tab TEXT PRIMARY KEY, items BIGINT NOT NULL, total BIGINT NOT NULL)"
    }
    fn clear(&self) -> Vec<Sql> {
        vec![Sql::new("DELETE FROM tab_totals")]
    }
    fn handle(&self, event: &RecordedEvent) -> Result<Vec<Sql>, String> {
        let price = event.payload["price_cents"].as_i64().ok_or("no price")?;
        Ok(vec![
            Sql::new(
                "INSERT INTO tab_totals (tab, items, total) VALUES ($1, 1, $2)
                 ON CONFLICT (tab) DO UPDATE SET items = tab_totals.items + 1, total = tab_totals.total + $2",
            )
            .bind(event.stream_id.as_str())
            .bind(price),
        ])
    }
}

/// Runs the bench; see the module docs.
pub async fn run(options: &CqrsBenchOptions) -> Result<CqrsBenchReport, CqrsBenchError> {
    let dir = tempfile::tempdir().map_err(|e| CqrsBenchError::Setup(e.to_string()))?;
    let suffix = format!("{:08x}", rand::random::<u32>());
    let (events_url, read_url, schemas) = match &options.store_url {
        None => (
            format!("sqlite://{}", dir.path().join("events.db").display()),
            format!("sqlite://{}", dir.path().join("read.db").display()),
            vec![],
        ),
        Some(url) => {
            let base = url.split_once('?').map_or(url.as_str(), |(b, _)| b);
            let (e, r) = (
                format!("bench_events_{suffix}"),
                format!("bench_read_{suffix}"),
            );
            (
                format!("{base}?schema={e}"),
                format!("{base}?schema={r}"),
                vec![(base.to_owned(), e), (base.to_owned(), r)],
            )
        }
    };
    let result = bench(options, &events_url, &read_url).await;
    for (base, schema) in schemas {
        if let Ok((client, conn)) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .await;
        }
    }
    result
}

async fn bench(
    options: &CqrsBenchOptions,
    events_url: &str,
    read_url: &str,
) -> Result<CqrsBenchReport, CqrsBenchError> {
    let load_before = load_average();
    let store = eventstore::open(events_url).await?;
    let handler = CommandHandler::<Tab>::new(store.clone()).max_attempts(10);

    // Phase 1: closed loop, as fast as the store allows.
    let latencies = phase(&handler, options, None, 0).await;
    let count = latencies.len();
    let latency = Summary::of(&latencies).ok_or(CqrsBenchError::Empty)?;
    let commands_per_sec = count as f64 / options.duration.as_secs_f64();

    // Phase 2: half that rate, with a live projection measuring lag.
    let read = open_read_store(read_url).await?;
    let runner = Arc::new(
        ProjectionRunner::new(store.clone(), read, Arc::new(Totals))
            .wake_on(store.watch_head())
            .batch_size(2000),
    );
    runner
        .init()
        .await
        .map_err(|e| CqrsBenchError::Setup(e.to_string()))?;
    runner
        .catch_up()
        .await
        .map_err(|e| CqrsBenchError::Setup(e.to_string()))?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let pending: Arc<Mutex<BTreeMap<i64, Instant>>> = Arc::default();
    let lags: Arc<Mutex<Vec<f64>>> = Arc::default();
    let watcher = {
        let (pending, lags, mut applied) = (pending.clone(), lags.clone(), runner.applied());
        tokio::spawn(async move {
            while applied.changed().await.is_ok() {
                let upto = *applied.borrow_and_update();
                let now = Instant::now();
                let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
                let rest = pending.split_off(&(upto + 1));
                let done = std::mem::replace(&mut *pending, rest);
                let mut lags = lags.lock().unwrap_or_else(|p| p.into_inner());
                lags.extend(
                    done.values()
                        .map(|t| now.duration_since(*t).as_secs_f64() * 1000.0),
                );
            }
        })
    };
    let live = runner.clone().spawn(shutdown.clone());
    let half_rate = commands_per_sec / 2.0;
    let half = phase(&handler, options, Some((half_rate, pending.clone())), 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    let _ = live.await;
    watcher.abort();
    let half_latency = Summary::of(&half).ok_or(CqrsBenchError::Empty)?;
    let lags = lags.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let lag = Summary::of(&lags).ok_or(CqrsBenchError::Empty)?;
    Ok(CqrsBenchReport {
        backend: store.backend(),
        commands_per_sec,
        latency,
        half_rate,
        half_latency,
        lag,
        load: (load_before, load_average()),
    })
}

/// `/proc/loadavg`'s first three fields, where there is one.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

type Pending = Arc<Mutex<BTreeMap<i64, Instant>>>;

/// One phase: `clients` loops for `duration`; closed loop, or paced to
/// `rate` in total (latency then counts from the scheduled time).
async fn phase(
    handler: &CommandHandler<Tab>,
    options: &CqrsBenchOptions,
    paced: Option<(f64, Pending)>,
    round: usize,
) -> Vec<f64> {
    let end = Instant::now() + options.duration;
    let clients = options.clients.max(1);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let handler = handler.clone();
            let paced = paced.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let interval = paced
                    .as_ref()
                    .map(|(rate, _)| Duration::from_secs_f64(clients as f64 / rate.max(1.0)));
                let mut next = Instant::now();
                let meta = Metadata::default();
                let mut n = 0u64;
                while Instant::now() < end {
                    let start = match interval {
                        Some(every) => {
                            next += every;
                            tokio::time::sleep_until(next.into()).await;
                            next
                        }
                        None => Instant::now(),
                    };
                    let id = format!("r{round}-c{c}-{}", n / 8);
                    n += 1;
                    if let Ok(done) = handler.execute(&id, &((n as i64) % 500 + 1), &meta).await {
                        samples.push(start.elapsed().as_secs_f64() * 1000.0);
                        if let Some((_, pending)) = &paced {
                            pending
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(done.position, Instant::now());
                        }
                    }
                }
                samples
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(samples) = t.await {
            all.extend(samples);
        }
    }
    all
}

/// The report as the CLI prints it.
pub fn format_report(options: &CqrsBenchOptions, r: &CqrsBenchReport) -> String {
    format!(
        "cqrs bench: {} clients, {:?} per phase, store {}\n\
         full load:  {:>9.0} commands/s   latency ms p50 {:.2}  p99 {:.2}  max {:.2}\n\
         half load:  {:>9.0} commands/s   latency ms p50 {:.2}  p99 {:.2}\n\
         projection lag at half load: ms p50 {:.2}  p99 {:.2}  max {:.2}  ({} samples)\n\
         load average (1/5/15 min): before {}, after {}",
        options.clients,
        options.duration,
        r.backend,
        r.commands_per_sec,
        r.latency.p50,
        r.latency.p99,
        r.latency.max,
        r.half_rate,
        r.half_latency.p50,
        r.half_latency.p99,
        r.lag.p50,
        r.lag.p99,
        r.lag.max,
        r.lag.count,
        r.load.0.as_deref().unwrap_or("unknown"),
        r.load.1.as_deref().unwrap_or("unknown"),
    )
}
