//! `mortar up`: run the node in the foreground.

use std::process::ExitCode;

use mortar_node::{Node, NodeError, NodeOptions};
use mortar_supervisor::LogHub;

use crate::cli::UpArgs;

pub(crate) fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let manifest = match super::load_manifest(&args.manifest.file) {
        Ok(manifest) => manifest,
        Err(code) => return Ok(code),
    };
    let filter = args.log_level.clone().unwrap_or_else(|| "info".to_owned());
    if let Err(e) = mortar_sdk::logging::validate_filter(&filter) {
        eprintln!(
            "config error: MORTAR_LOG_LEVEL={filter:?} is invalid; expected a level such as info or a filter such as info,hyper=warn: {e}"
        );
        return Ok(ExitCode::from(super::EXIT_CONFIG));
    }
    let hub = LogHub::stdout();
    let writer_hub = hub.clone();
    mortar_sdk::logging::init_with_writer("mortar", "node", &filter, move || writer_hub.writer());
    let options = NodeOptions {
        data_dir: args.data_dir,
        admin_addr: args.admin_addr,
        dns_addr: args.dns_addr,
        bus_addr: args.bus_addr,
        gateway_addr: args.gateway_addr,
        bus_url: args.bus_url,
        store_url: args.store_url,
        log_level: args.log_level,
        secrets_key: args.secrets_key,
        secrets_cert: args.secrets_cert,
        cert_lifetime: args.cert_lifetime,
    };
    let runtime = super::runtime()?;
    match runtime.block_on(Node::run(manifest, hub, options)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // The app's secrets are its configuration: nothing was started.
        Err(e @ (NodeError::Secrets(_) | NodeError::SecretsKeyMissing { .. })) => {
            eprintln!("config error: {e}; nothing was started");
            Ok(ExitCode::from(super::EXIT_CONFIG))
        }
        Err(e) => Err(anyhow::Error::new(e).context("the node could not run")),
    }
}
