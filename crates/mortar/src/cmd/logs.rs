//! `mortar logs`: the merged JSON log stream of the running node.

use std::io::Write;
use std::process::ExitCode;

use crate::cli::LogsArgs;

pub(crate) async fn run(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let client = super::admin_client(&args.file, &args.node)?;
    let stdout = std::io::stdout();
    client
        .logs(args.service.as_deref(), args.tail, args.follow, |line| {
            let mut out = stdout.lock();
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}
