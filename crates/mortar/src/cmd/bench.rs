//! `mortar bench ...`: benchmarks that ship with mortar.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use mortar_bench::bus::{BusBenchOptions, BusBenchReport, run_mortar, run_nats};
use mortar_bench::http::{HttpBenchOptions, HttpBenchReport, RunReport};
use mortar_bench::start::{StartOptions, run};
use mortar_bench::stats::Summary;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cli::{BenchBusArgs, BenchCqrsArgs, BenchHttpArgs, BenchStartArgs};

pub(crate) async fn start(args: BenchStartArgs) -> anyhow::Result<ExitCode> {
    let options = StartOptions {
        command: args.command,
        runs: args.runs,
        timeout: Duration::from_secs(10),
    };
    println!(
        "start-to-ready of `{}`, {} runs",
        options.command.join(" "),
        options.runs
    );
    let report = run(&options).await?;
    println!(
        "{:<34} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "ms", "min", "p50", "p90", "p99", "max"
    );
    row("spawn → /health/ready 200", &report.start_to_ready);
    row("SIGTERM → exit (idle)", &report.shutdown);
    row("baseline: spawn → exit of `true`", &report.baseline_spawn);
    println!(
        "median start-to-ready is {:.1}× the bare process spawn",
        report.start_to_ready.p50 / report.baseline_spawn.p50.max(f64::EPSILON)
    );
    Ok(ExitCode::SUCCESS)
}

fn row(name: &str, s: &Summary) {
    println!(
        "{name:<34} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        s.min, s.p50, s.p90, s.p99, s.max
    );
}

pub(crate) async fn bus(args: BenchBusArgs) -> anyhow::Result<ExitCode> {
    let mut options = BusBenchOptions {
        url: String::new(),
        producers: args.producers,
        consumers: args.consumers,
        size: args.size,
        count: args.count,
        window: args.window,
        rate: args.rate,
        latency_duration: Duration::from_secs(args.latency_secs),
    };
    options.validate()?;
    // A broker of our own in a scratch directory, as its own process, like
    // the NATS server it is compared with.
    let scratch =
        tempfile::tempdir().context("cannot create a scratch directory for the broker")?;
    let mut child = None;
    let mut broker_http = None;
    options.url = match args.mortar_url {
        Some(url) => url,
        None => {
            let (process, url, http) = spawn_broker(scratch.path(), args.delivery).await?;
            child = Some(process);
            broker_http = http;
            url
        }
    };
    println!(
        "bus bench: {} producers (window {}), {} consumers, {} × {} B; latency at {} msg/s for {} s",
        options.producers,
        options.window,
        options.consumers,
        options.count,
        options.size,
        options.rate,
        args.latency_secs
    );
    if child.is_some() {
        println!(
            "mortar broker: acknowledges publishes once fsynced, delivers once {}",
            args.delivery
        );
    }
    // The floor under the broker's acknowledgements, just before and after its run.
    let disk_before = match child {
        Some(_) => Some(disk_probe(scratch.path()).await),
        None => None,
    };
    let mut reports = vec![run_mortar(&options).await?];
    if let Some(before) = disk_before {
        println!(
            "disk under the broker, fdatasync of 8 KiB ({DISK_PROBE_SYNCS} syncs): before the run {}, after it {}",
            before,
            disk_probe(scratch.path()).await
        );
    }
    if let Some(http) = &broker_http {
        println!(
            "broker's fsyncs in the latency phase: {}",
            latency_phase_commits(http).await
        );
    }
    if let Some(mut c) = child {
        if let Some(pid) = c.id() {
            let data = options.count as f64 * options.size as f64 / (1 << 20) as f64;
            println!(
                "broker process memory: peak RSS {} (VmHWM), now {} (VmRSS), after {data:.0} MiB of payloads",
                proc_status(pid, "VmHWM").unwrap_or_else(|| "?".into()),
                proc_status(pid, "VmRSS").unwrap_or_else(|| "?".into()),
            );
        }
        let _ = c.kill().await;
    }
    if let Some(nats) = args.url {
        options.url = nats;
        reports.push(run_nats(&options).await?);
        reports.push(run_mortar(&options).await?);
    }
    print_bus(&reports);
    Ok(ExitCode::SUCCESS)
}

/// Syncs per disk probe: a fraction of a second on a healthy disk.
const DISK_PROBE_SYNCS: usize = 1000;

/// The disk's `fdatasync` p50/p99 in `dir`, as text for the report.
async fn disk_probe(dir: &std::path::Path) -> String {
    let dir = dir.to_owned();
    let probed = tokio::task::spawn_blocking(move || {
        mortar_bench::disk::fdatasync_latency(&dir, DISK_PROBE_SYNCS)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    match probed {
        Ok(s) => format!("p50 {:.0} µs, p99 {:.0} µs", s.p50, s.p99),
        Err(e) => format!("not measured ({e})"),
    }
}

/// The latency topic's commit histogram from the broker's `/v1/bus/stats`,
/// as text: how much of the phase's latency the disk took.
async fn latency_phase_commits(http: &str) -> String {
    let stats = async {
        reqwest::get(format!("{http}/v1/bus/stats"))
            .await?
            .error_for_status()?
            .json::<serde_json::Value>()
            .await
    };
    let stats = match stats.await {
        Ok(v) => v,
        Err(e) => return format!("not read ({e})"),
    };
    let commits = stats["topics"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| {
            t["topic"]
                .as_str()
                .is_some_and(|n| n.starts_with("bench.latency."))
        })
        .map(|t| &t["commits"]);
    let Some(commits) = commits.filter(|c| c["count"].as_u64().is_some_and(|n| n > 0)) else {
        return "none recorded".into();
    };
    let count = commits["count"].as_u64().unwrap_or(1).max(1);
    let mean = commits["sum_micros"].as_u64().unwrap_or(0) as f64 / count as f64;
    // Share of commits at or under `limit` seconds (bucket bounds include 0.001, 0.002, 0.005).
    let within = |limit: f64| {
        let n: u64 = commits["buckets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["le_seconds"].as_f64().is_some_and(|le| le <= limit))
            .filter_map(|b| b["count"].as_u64())
            .sum();
        100.0 * n as f64 / count as f64
    };
    format!(
        "{count} fsyncs, mean {mean:.0} µs; within 1 ms {:.1}%, within 2 ms {:.1}%, over 5 ms {:.2}%",
        within(0.001),
        within(0.002),
        100.0 - within(0.005)
    )
}

/// Starts `mortar bus serve` on `dir` with `delivery`; returns the process,
/// its bus URL and the base URL of its HTTP API (when it reported one).
async fn spawn_broker(
    dir: &std::path::Path,
    delivery: mortar_bus::Delivery,
) -> anyhow::Result<(tokio::process::Child, String, Option<String>)> {
    let exe = std::env::current_exe().context("cannot find the mortar binary")?;
    let mut child = tokio::process::Command::new(exe)
        .args([
            "bus",
            "serve",
            "--delivery",
            delivery.as_str(),
            "--data-dir",
        ])
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start `mortar bus serve`")?;
    let stdout = child
        .stdout
        .take()
        .context("no stdout from `mortar bus serve`")?;
    let mut lines = BufReader::new(stdout).lines();
    let (url, http) = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(url) = v["url"].as_str()
            {
                return Some((url.to_owned(), v["http"].as_str().map(str::to_owned)));
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .context("`mortar bus serve` did not report its URL")?;
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, url, http))
}

/// One field of `/proc/<pid>/status`, such as `VmRSS`.
fn proc_status(pid: u32, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

fn print_bus(reports: &[BusBenchReport]) {
    println!(
        "{:<62} {:>12} {:>12} {:>9} {:>9} {:>9} {:>10}",
        "backend", "publish/s", "consume/s", "p50 µs", "p99 µs", "p999 µs", "rate/s"
    );
    for r in reports {
        let p999 = r.latency_us.p999;
        println!(
            "{:<62} {:>12.0} {:>12.0} {:>9.0} {:>9.0} {:>9.0} {:>10.0}",
            r.backend,
            r.publish_per_sec,
            r.consume_per_sec,
            r.latency_us.p50,
            r.latency_us.p99,
            p999,
            r.achieved_rate
        );
    }
    let ratio = |label: &str, ours: &BusBenchReport, theirs: &BusBenchReport| {
        println!(
            "{label}: publish {:.2}×, consume+ack {:.2}×, p99 latency {:.2}×",
            ours.publish_per_sec / theirs.publish_per_sec,
            ours.consume_per_sec / theirs.consume_per_sec,
            ours.latency_us.p99 / theirs.latency_us.p99
        );
    };
    if let [embedded, jetstream, rest @ ..] = reports {
        ratio("mortar / JetStream", embedded, jetstream);
        if let [through_client] = rest {
            ratio(
                "mortar client on JetStream / JetStream",
                through_client,
                jetstream,
            );
        }
    }
}

/// Blocking: the bench builds its own runtimes (load and gateway apart).
pub(crate) fn http(args: BenchHttpArgs) -> anyhow::Result<ExitCode> {
    let options = HttpBenchOptions {
        instances: args.instances,
        concurrency: args.concurrency,
        duration: Duration::from_secs(args.duration_secs),
        rate: args.rate,
        nginx: !args.no_nginx,
        gateway_threads: args.gateway_threads,
    };
    options.validate()?;
    println!(
        "http bench: {} instances, concurrency {}, {} s per run, light load {} req/s, gateway {} threads",
        options.instances,
        options.concurrency,
        args.duration_secs,
        options.rate,
        options.gateway_threads
    );
    let report = mortar_bench::http::run(&options)?;
    print_http(&report);
    Ok(ExitCode::SUCCESS)
}

fn print_http(r: &HttpBenchReport) {
    if let Some(why) = &r.nginx_skipped {
        println!("nginx skipped: {why}");
    }
    let header = |title: &str| {
        println!(
            "{title:<24} {:>10} {:>9} {:>9} {:>12} {:>12} {:>7} {:>13}",
            "req/s", "p50 µs", "p99 µs", "+p50 µs", "+p99 µs", "errors", "cpu µs/req"
        );
    };
    let table = |runs: &[RunReport]| {
        let direct = HttpBenchReport::find(runs, "direct");
        for run in runs {
            let added = |f: fn(&RunReport) -> f64| match direct {
                Some(d) if run.name != "direct" => format!("{:>12.0}", f(run) - f(d)),
                _ => format!("{:>12}", "-"),
            };
            let cpu = run
                .cpu_us_per_req
                .map_or_else(|| format!("{:>13}", "-"), |c| format!("{c:>13.1}"));
            println!(
                "{:<24} {:>10.0} {:>9.0} {:>9.0} {} {} {:>7} {cpu}",
                run.name,
                run.per_sec,
                run.latency_us.p50,
                run.latency_us.p99,
                added(|r| r.latency_us.p50),
                added(|r| r.latency_us.p99),
                run.errors
            );
        }
    };
    header("closed loop");
    table(&r.closed);
    header("light load (paced)");
    table(&r.paced);
    println!("(+p50/+p99: added latency over calling the instance directly)");
    let ratios = |runs: &[RunReport], label: &str| {
        let pick = |n| HttpBenchReport::find(runs, n);
        if let (Some(d), Some(g), Some(n)) = (pick("direct"), pick("gateway"), pick("nginx")) {
            let added = |x: &RunReport, f: fn(&Summary) -> f64| f(&x.latency_us) - f(&d.latency_us);
            println!(
                "gateway / nginx, {label}: throughput {:.2}×, added p50 {:.0} vs {:.0} µs, added p99 {:.0} vs {:.0} µs",
                g.per_sec / n.per_sec,
                added(g, |s| s.p50),
                added(n, |s| s.p50),
                added(g, |s| s.p99),
                added(n, |s| s.p99)
            );
            if let (Some(gc), Some(nc)) = (g.cpu_us_per_req, n.cpu_us_per_req) {
                println!(
                    "gateway / nginx, {label}: CPU per request {gc:.1} vs {nc:.1} µs ({:.2}×)",
                    gc / nc
                );
            }
            if let (Some(gs), Some(ns)) = (g.switches_per_req, n.switches_per_req) {
                println!(
                    "gateway / nginx, {label}: context switches per request {gs:.2} vs {ns:.2}"
                );
            }
            if let (Some(gr), Some(nr)) = (g.rest_per_req, n.rest_per_req) {
                println!(
                    "gateway / nginx, {label}: per request, upstream {:.1} vs {:.1} µs CPU and {:.2} vs {:.2} switches, load generator {:.1} vs {:.1} µs and {:.2} vs {:.2}",
                    gr.upstream_us,
                    nr.upstream_us,
                    gr.upstream_switches,
                    nr.upstream_switches,
                    gr.load_us,
                    nr.load_us,
                    gr.load_switches,
                    nr.load_switches
                );
            }
        }
    };
    ratios(&r.closed, "closed loop");
    ratios(&r.paced, "light load");
    let spread: Vec<String> = r.gateway_connections.iter().map(usize::to_string).collect();
    println!(
        "gateway connections per serving thread after the closed loop: {}",
        spread.join(", ")
    );
    println!(
        "{:<24} {:>10.0} {:>9.0} {:>9.0}",
        r.bare_client.name,
        r.bare_client.per_sec,
        r.bare_client.latency_us.p50,
        r.bare_client.latency_us.p99
    );
    println!(
        "{:<24} {:>10.0} {:>9.0} {:>9.0}",
        r.sdk_client.name,
        r.sdk_client.per_sec,
        r.sdk_client.latency_us.p50,
        r.sdk_client.latency_us.p99
    );
    println!(
        "SDK client / bare hyper client throughput: {:.2}× ({:.1}% overhead)",
        r.sdk_client.per_sec / r.bare_client.per_sec,
        (1.0 - r.sdk_client.per_sec / r.bare_client.per_sec) * 100.0
    );
}

pub(crate) async fn cqrs(args: BenchCqrsArgs) -> anyhow::Result<ExitCode> {
    let options = mortar_bench::cqrs::CqrsBenchOptions {
        store_url: args.store_url,
        clients: args.clients,
        duration: Duration::from_secs(args.duration_secs.max(1)),
    };
    let report = mortar_bench::cqrs::run(&options)
        .await
        .context("the cqrs bench failed")?;
    println!("{}", mortar_bench::cqrs::format_report(&options, &report));
    Ok(ExitCode::SUCCESS)
}
