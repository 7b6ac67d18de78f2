//! `mortar chaos kill|pause|run`, and the faults the node injects itself:
//! `bus-outage`, `cut-bus`, `latency`, `errors`, `faults`, `clear`. The
//! work is in `mortar-chaos` and the node.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use mortar_chaos::{Fault, Scenario, faults};
use mortar_node::client::AdminClient;
use mortar_node::faults::{ActiveFault, FaultRequest, MAX_LATENCY_MS, MAX_SECONDS};

use crate::cli::{ChaosCommand, TargetArgs};

pub(crate) async fn run(command: ChaosCommand) -> anyhow::Result<ExitCode> {
    match command {
        ChaosCommand::Kill(args) => {
            let admin = super::admin_client(&args.node.manifest.file, &args.node.node)?;
            one_fault(&admin, &args.target, Fault::Kill).await
        }
        ChaosCommand::Pause(args) => {
            if !(args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 3600.0) {
                anyhow::bail!(
                    "--seconds must be more than 0 and at most 3600, got {}",
                    args.seconds
                );
            }
            let admin = super::admin_client(&args.node.manifest.file, &args.node.node)?;
            one_fault(
                &admin,
                &args.target,
                Fault::Pause(Duration::from_secs_f64(args.seconds)),
            )
            .await
        }
        ChaosCommand::Run(args) => {
            let scenario = Scenario::named(&args.scenario)?;
            let admin = super::admin_client(&args.node.manifest.file, &args.node.node)?;
            let data_dir =
                super::data_dir(&args.node.manifest.file, args.node.node.data_dir.as_ref());
            // On stderr with --json, so stdout is the document alone.
            let intro = format!(
                "chaos scenario {:?}: {} customers for {} s, {} faults",
                scenario.name,
                scenario.customers,
                scenario.load.as_secs(),
                scenario.steps.len()
            );
            if args.json {
                eprintln!("{intro}");
            } else {
                println!("{intro}");
            }
            let card = scenario.run(&admin, Some(&data_dir)).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&card)?);
            } else {
                println!("{card}");
            }
            Ok(if card.nothing_lost() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        ChaosCommand::BusOutage(args) => {
            let seconds = check_seconds(args.seconds)?;
            node_fault(
                &args.node,
                FaultRequest {
                    kind: "bus-outage".to_owned(),
                    seconds,
                    ..FaultRequest::default()
                },
            )
            .await
        }
        ChaosCommand::CutBus(args) => {
            let seconds = check_seconds(args.seconds)?;
            node_fault(
                &args.node,
                FaultRequest {
                    kind: "cut-bus".to_owned(),
                    service: Some(args.service),
                    seconds,
                    ..FaultRequest::default()
                },
            )
            .await
        }
        ChaosCommand::Latency(args) => {
            let seconds = check_seconds(args.seconds)?;
            if !(1..=MAX_LATENCY_MS).contains(&args.ms) {
                anyhow::bail!("--ms must be from 1 to {MAX_LATENCY_MS}, got {}", args.ms);
            }
            let percent = check_percent("--percent", args.percent)?;
            node_fault(
                &args.node,
                FaultRequest {
                    kind: "latency".to_owned(),
                    service: Some(args.service),
                    seconds,
                    ms: Some(args.ms),
                    percent: Some(percent),
                },
            )
            .await
        }
        ChaosCommand::Errors(args) => {
            let seconds = check_seconds(args.seconds)?;
            let rate = parse_rate(&args.rate)?;
            node_fault(
                &args.node,
                FaultRequest {
                    kind: "errors".to_owned(),
                    service: Some(args.service),
                    seconds,
                    percent: Some(rate),
                    ..FaultRequest::default()
                },
            )
            .await
        }
        ChaosCommand::Faults(args) => {
            let admin = super::admin_client(&args.node.manifest.file, &args.node.node)?;
            let active = admin.faults().await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&active)?);
            } else if active.is_empty() {
                println!("no injected faults");
            } else {
                for f in &active {
                    println!("{}", describe(f));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ChaosCommand::Clear(args) => {
            let admin = super::admin_client(&args.node.manifest.file, &args.node.node)?;
            let ended = admin.clear_faults().await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&ended)?);
            } else if ended.is_empty() {
                println!("no injected faults to clear");
            } else {
                for f in &ended {
                    println!("cleared {}", describe(f));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check_seconds(seconds: f64) -> anyhow::Result<f64> {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= MAX_SECONDS) {
        anyhow::bail!("--seconds must be more than 0 and at most {MAX_SECONDS}, got {seconds}");
    }
    Ok(seconds)
}

fn check_percent(flag: &str, percent: f64) -> anyhow::Result<f64> {
    if !(percent.is_finite() && percent > 0.0 && percent <= 100.0) {
        anyhow::bail!("{flag} must be more than 0 and at most 100 (percent), got {percent}");
    }
    Ok(percent)
}

/// `20` or `20%`: a percentage.
fn parse_rate(text: &str) -> anyhow::Result<f64> {
    let number = text.trim().trim_end_matches('%');
    let Ok(rate) = number.parse::<f64>() else {
        anyhow::bail!("--rate must be a percentage such as 20 or 20%, got {text:?}");
    };
    check_percent("--rate", rate)
}

/// One line per fault: `#3 latency +200 ms on 50% of catalog, 4.2 s left`.
fn describe(f: &ActiveFault) -> String {
    let r = &f.request;
    let service = r.service.as_deref().unwrap_or_default();
    let what = match r.kind.as_str() {
        "bus-outage" => "bus outage".to_owned(),
        "cut-bus" => format!("{service} cut off from the bus"),
        "latency" => format!(
            "latency +{} ms on {}% of {service}'s requests",
            r.ms.unwrap_or_default(),
            r.percent.unwrap_or(100.0)
        ),
        "errors" => format!(
            "errors: {}% of {service}'s requests answered 503",
            r.percent.unwrap_or_default()
        ),
        other => other.to_owned(),
    };
    format!(
        "#{} {what}, {:.1} s left",
        f.id,
        f.remaining_ms as f64 / 1000.0
    )
}

async fn node_fault(target: &TargetArgs, req: FaultRequest) -> anyhow::Result<ExitCode> {
    let admin: AdminClient = super::admin_client(&target.manifest.file, &target.node)?;
    let fault = admin.inject_fault(&req).await?;
    println!(
        "injected {}; the node ends it by itself (or `mortar chaos clear`)",
        describe(&fault)
    );
    Ok(ExitCode::SUCCESS)
}

async fn one_fault(
    admin: &mortar_node::client::AdminClient,
    target: &str,
    fault: Fault,
) -> anyhow::Result<ExitCode> {
    let (service, instance, pid) = faults::find(admin, target).await?;
    let at = Instant::now();
    faults::inject(&instance, pid, fault).await?;
    println!(
        "{instance} (pid {pid}): {}",
        match fault {
            Fault::Kill => "killed".to_owned(),
            Fault::Pause(d) => format!("paused for {:.1} s, resumed", d.as_secs_f64()),
        }
    );
    let dead = matches!(fault, Fault::Kill).then_some(pid);
    let took = faults::recovery(admin, &service, dead, at, Duration::from_secs(60)).await?;
    println!("{service} fully ready again after {} ms", took.as_millis());
    Ok(ExitCode::SUCCESS)
}
