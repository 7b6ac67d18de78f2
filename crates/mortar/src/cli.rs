//! The command line: every subcommand and flag, with its environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// mortar runs a multi-service application on one machine: processes,
/// readiness, restarts, merged logs, and an admin API.
#[derive(Debug, Parser)]
#[command(name = "mortar", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the application's services until Ctrl-C or SIGTERM.
    Up(UpArgs),
    /// Run each service's build command (the build stage; `up` never builds).
    Build(ManifestArgs),
    /// Validate the manifest and print every error; starts nothing.
    Check(ManifestArgs),
    /// Show the services and instances of the running node.
    Status(StatusArgs),
    /// Print the merged JSON log lines of the running node.
    Logs(LogsArgs),
    /// Run a benchmark that ships with mortar.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// Where the manifest is.
#[derive(Debug, Args)]
pub(crate) struct ManifestArgs {
    /// The manifest file.
    #[arg(
        short = 'f',
        long = "file",
        env = "MORTAR_MANIFEST",
        default_value = "mortar.toml"
    )]
    pub(crate) file: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    pub(crate) manifest: ManifestArgs,
    /// The node's data directory [default: .mortar beside the manifest].
    #[arg(long, env = "MORTAR_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Where the admin API listens (loopback; port 0 picks a free port).
    #[arg(long, env = "MORTAR_ADMIN_ADDR", default_value = "127.0.0.1:0")]
    pub(crate) admin_addr: SocketAddr,
    /// Log filter for the node and its instances (error, warn, info, debug, trace).
    #[arg(long, env = "MORTAR_LOG_LEVEL")]
    pub(crate) log_level: Option<String>,
}

/// How a one-off command finds the running node: the data directory (from
/// the manifest's location unless given) holds `node.json`.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// The node's data directory [default: .mortar beside the manifest].
    #[arg(long, env = "MORTAR_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// The admin API's URL; overrides the data directory.
    #[arg(long, env = "MORTAR_ADMIN_URL")]
    pub(crate) admin_url: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The manifest whose node to ask.
    #[arg(
        short = 'f',
        long = "file",
        env = "MORTAR_MANIFEST",
        default_value = "mortar.toml"
    )]
    pub(crate) file: PathBuf,
    #[command(flatten)]
    pub(crate) node: NodeArgs,
    /// Print the status document as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// Only this service's lines (`mortar` for the node's own).
    pub(crate) service: Option<String>,
    /// Keep printing new lines as they arrive.
    #[arg(short = 'f', long)]
    pub(crate) follow: bool,
    /// How many recent lines to print first.
    #[arg(long, default_value_t = 100)]
    pub(crate) tail: usize,
    /// The manifest whose node to ask (`-f` means --follow here).
    #[arg(long = "file", env = "MORTAR_MANIFEST", default_value = "mortar.toml")]
    pub(crate) file: PathBuf,
    #[command(flatten)]
    pub(crate) node: NodeArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Process start to ready of a service, e.g. `mortar bench start -- target/release/examples/minimal`.
    Start(BenchStartArgs),
}

#[derive(Debug, Args)]
pub(crate) struct BenchStartArgs {
    /// How many launches to measure.
    #[arg(long, default_value_t = 50)]
    pub(crate) runs: usize,
    /// The service to launch, after `--`.
    #[arg(last = true, required = true)]
    pub(crate) command: Vec<String>,
}
