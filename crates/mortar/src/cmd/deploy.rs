//! `mortar deploy`, `mortar deploy promote|abort`, `mortar rollback` and
//! `mortar history`: the node does the work; these start it and show each
//! step as it happens, then a summary.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use mortar_node::client::AdminClient;
use mortar_node::deploys::DeployBody;
use mortar_release::Ledger;
use mortar_supervisor::deploy::{DeployState, DeployStatus};

use crate::cli::{DeployArgs, DeployDecision, HistoryArgs, RollbackArgs};

/// How often a followed deploy is asked for its status.
const POLL: Duration = Duration::from_millis(200);

pub(crate) async fn run(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let (service, decision, target) = match args.decision {
        Some(DeployDecision::Promote(a)) => (a.service, Some("promote"), a.target),
        Some(DeployDecision::Abort(a)) => (a.service, Some("abort"), a.target),
        None => (args.service.unwrap_or_default(), None, args.target),
    };
    let client = super::admin_client(&target.manifest.file, &target.node)?;
    if let Some(decision) = decision {
        let status = client.deploy_decide(&service, decision).await?;
        return follow(&client, status, false).await;
    }
    // Checked before a release is recorded: bad input changes nothing.
    if let Some(strategy) = &args.strategy
        && mortar_manifest::Strategy::parse(strategy).is_none()
    {
        anyhow::bail!("unknown strategy {strategy:?}; use rolling, recreate or blue-green");
    }
    let release = match args.release {
        Some(release) => release,
        None => {
            let manifest = match super::load_manifest(&target.manifest.file) {
                Ok(manifest) => manifest,
                Err(code) => return Ok(code),
            };
            if manifest.service(&service).is_none() {
                let known: Vec<&str> = manifest.services.iter().map(|s| s.name.as_str()).collect();
                anyhow::bail!(
                    "unknown service {service:?}; {} has: {}",
                    target.manifest.file.display(),
                    known.join(", ")
                );
            }
            let data_dir = super::data_dir(&target.manifest.file, target.node.data_dir.as_ref());
            let (release, new) = Ledger::open(&data_dir)
                .record(&manifest)
                .context("cannot record a release of what is on disk")?;
            println!(
                "release {} (#{}) {}",
                release.id,
                release.seq,
                if new { "recorded" } else { "(unchanged)" }
            );
            release.id
        }
    };
    let body = DeployBody {
        release,
        strategy: args.strategy,
        manual: args.manual.then_some(true),
    };
    let status = client.deploy(&service, &body).await?;
    if args.detach {
        println!(
            "deploy #{} of {} started in the background; `mortar history {}` shows how it ended",
            status.id, status.service, status.service
        );
        return Ok(ExitCode::SUCCESS);
    }
    follow(&client, status, true).await
}

pub(crate) async fn rollback(args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let client = super::admin_client(&args.target.manifest.file, &args.target.node)?;
    let status = client
        .rollback(&args.service, args.strategy.as_deref())
        .await?;
    follow(&client, status, true).await
}

pub(crate) async fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let client = super::admin_client(&args.target.manifest.file, &args.target.node)?;
    let deploys = client.history(&args.service).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&deploys)?);
        return Ok(ExitCode::SUCCESS);
    }
    if deploys.is_empty() {
        println!(
            "{} has no finished deploys; it runs what the node started it with",
            args.service
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<5} {:<25} {:<11} {:<13} {:<13} result",
        "#", "started", "strategy", "from", "to"
    );
    for d in &deploys {
        println!(
            "{:<5} {:<25} {:<11} {:<13} {:<13} {}",
            d.id,
            d.started_at,
            d.strategy,
            d.from,
            d.to,
            outcome(d)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints every new step until the deploy ends (or, when `stop_at_await`,
/// until it waits for an operator), then the summary; the exit code says
/// whether the new version runs.
async fn follow(
    client: &AdminClient,
    mut status: DeployStatus,
    stop_at_await: bool,
) -> anyhow::Result<ExitCode> {
    let tty = std::io::stdout().is_terminal();
    let mut shown = 0;
    loop {
        if tty {
            // Clear the progress line before printing steps over it.
            print!("\r\x1b[K");
        }
        for step in status.steps.iter().skip(shown) {
            println!(
                "[{:>7.2}s] {}",
                step.elapsed_ms as f64 / 1000.0,
                step.message
            );
        }
        shown = status.steps.len();
        if status.state.is_finished()
            || (stop_at_await && status.state == DeployState::AwaitingPromotion)
        {
            break;
        }
        if tty {
            print!("{}", progress_line(&status));
            let _ = std::io::stdout().flush();
        }
        tokio::time::sleep(POLL).await;
        status = client.deploy_status(&status.service).await?;
    }
    if let Some(analysis) = &status.analysis {
        for v in analysis {
            println!(
                "  {:<13} {:>7} requests  {:>6.2}% errors  p99 {}",
                v.version,
                v.requests,
                v.error_rate_percent,
                v.p99_ms
                    .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms"))
            );
        }
    }
    let elapsed = status.steps.last().map_or(0, |s| s.elapsed_ms) as f64 / 1000.0;
    println!(
        "deploy #{} of {} ({}, {} -> {}): {} after {elapsed:.1}s",
        status.id,
        status.service,
        status.strategy,
        status.from,
        status.to,
        outcome(&status)
    );
    Ok(match status.state {
        DeployState::Succeeded | DeployState::AwaitingPromotion => ExitCode::SUCCESS,
        DeployState::Running | DeployState::RolledBack => ExitCode::FAILURE,
    })
}

fn outcome(d: &DeployStatus) -> String {
    match d.state {
        DeployState::Succeeded => "succeeded".to_owned(),
        DeployState::RolledBack => format!(
            "rolled back ({})",
            d.reason.as_deref().unwrap_or("no reason recorded")
        ),
        DeployState::AwaitingPromotion => format!(
            "awaiting promotion: `mortar deploy promote {0}` or `mortar deploy abort {0}`",
            d.service
        ),
        DeployState::Running => "running".to_owned(),
    }
}

/// `[#####-----] 1/2 new ready, 1 old running`.
fn progress_line(status: &DeployStatus) -> String {
    const WIDTH: usize = 20;
    let desired = status.desired.max(1) as usize;
    let done = (status.new_ready as usize).min(desired) * WIDTH / desired;
    format!(
        "[{}{}] {}/{} new ready, {} old running",
        "#".repeat(done),
        "-".repeat(WIDTH - done),
        status.new_ready,
        status.desired,
        status.old_running
    )
}
