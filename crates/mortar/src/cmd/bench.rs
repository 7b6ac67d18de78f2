//! `mortar bench ...`: benchmarks that ship with mortar.

use std::process::ExitCode;
use std::time::Duration;

use mortar_bench::start::{StartOptions, run};
use mortar_bench::stats::Summary;

use crate::cli::BenchStartArgs;

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
