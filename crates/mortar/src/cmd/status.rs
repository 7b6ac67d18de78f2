//! `mortar status`: services and instances of the running node.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::StatusArgs;

pub(crate) async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = super::admin_client(&args.target.manifest.file, &args.target.node)?;
    let doc = client.status().await?;
    if args.json {
        println!("{}", serde_json_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "app {}  node pid {}  gateway {}  admin {}  dns {}  bus {}",
        doc.app,
        doc.node.pid,
        doc.node.gateway_url.as_deref().unwrap_or("-"),
        doc.node.admin_url,
        doc.node.dns_addr.as_deref().unwrap_or("-"),
        doc.node.bus_url.as_deref().unwrap_or("-")
    );
    println!("{:<20} {:<10} {:>7}", "SERVICE", "STATE", "READY");
    for service in &doc.services {
        println!(
            "{:<20} {:<10} {:>7}",
            service.name,
            format!("{:?}", service.state).to_lowercase(),
            format!("{}/{}", service.ready, service.desired)
        );
        for i in &service.instances {
            println!(
                "  {:<18} {:<10} {:<13} pid {:<8} {:<24} restarts {}{}",
                i.id,
                format!("{:?}", i.state).to_lowercase(),
                i.version.as_deref().unwrap_or("-"),
                i.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                i.url().unwrap_or_else(|| "-".into()),
                i.restarts,
                i.last_exit
                    .as_deref()
                    .map(|e| format!("  last exit: {e}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn serde_json_pretty(doc: &mortar_node::admin::StatusDoc) -> anyhow::Result<String> {
    mortar_node::admin::to_pretty_json(doc).context("cannot render the status as JSON")
}
