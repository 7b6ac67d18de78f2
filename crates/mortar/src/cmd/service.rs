//! `mortar stop <service>` and `mortar start <service>`.

use std::process::ExitCode;

use crate::cli::ServiceArgs;

pub(crate) async fn run(args: ServiceArgs, action: &str) -> anyhow::Result<ExitCode> {
    let client = super::admin_client(&args.target.manifest.file, &args.target.node)?;
    let status = client.service_action(&args.service, action).await?;
    println!(
        "{}: {} ({}/{} ready)",
        status.name,
        format!("{:?}", status.state).to_lowercase(),
        status.ready,
        status.desired
    );
    Ok(ExitCode::SUCCESS)
}
