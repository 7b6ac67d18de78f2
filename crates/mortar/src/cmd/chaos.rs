//! `mortar chaos kill|pause|run`: the work is in `mortar-chaos`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use mortar_chaos::{Fault, Scenario, faults};

use crate::cli::ChaosCommand;

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
            println!(
                "chaos scenario {:?}: {} customers for {} s, {} faults",
                scenario.name,
                scenario.customers,
                scenario.load.as_secs(),
                scenario.steps.len()
            );
            let card = scenario.run(&admin).await?;
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
    }
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
