//! One module per subcommand.

mod backup;
mod bench;
mod build;
mod bus;
mod chaos;
mod check;
mod dashboard;
mod deploy;
mod export;
mod logs;
mod projections;
mod release;
mod secrets;
mod service;
mod status;
mod top;
mod up;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use mortar_manifest::{LoadError, Manifest};
use mortar_node::client::AdminClient;

use crate::cli::{
    BackupCommand, BenchCommand, BusCommand, Command, DlqCommand, ExportCommand, NodeArgs,
    ProjectionsCommand,
};

/// The exit code for an invalid manifest or configuration (sysexits' EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

pub(crate) fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Up(args) => up::run(args),
        Command::Build(args) => build::run(&args.file),
        Command::Check(args) => check::run(&args.file),
        Command::Status(args) => runtime()?.block_on(status::run(args)),
        Command::Logs(args) => runtime()?.block_on(logs::run(args)),
        Command::Dashboard(args) => runtime()?.block_on(dashboard::run(args)),
        Command::Top(args) => runtime()?.block_on(top::run(args)),
        Command::Stop(args) => runtime()?.block_on(service::run(args, "stop")),
        Command::Start(args) => runtime()?.block_on(service::run(args, "start")),
        Command::Bus(BusCommand::Serve(args)) => bus::serve(args),
        Command::Bus(BusCommand::Http) => Ok(bus::http()),
        Command::Bus(BusCommand::Stats(args)) => runtime()?.block_on(bus::stats(args)),
        Command::Bus(BusCommand::Dlq(DlqCommand::Replay(args))) => {
            runtime()?.block_on(bus::replay(args))
        }
        Command::Release(args) => release::record(&args),
        Command::Releases(args) => release::list(&args),
        Command::Deploy(args) => runtime()?.block_on(deploy::run(args)),
        Command::Rollback(args) => runtime()?.block_on(deploy::rollback(args)),
        Command::History(args) => runtime()?.block_on(deploy::history(args)),
        Command::Chaos(command) => runtime()?.block_on(chaos::run(command)),
        Command::Projections(ProjectionsCommand::Status(args)) => {
            runtime()?.block_on(projections::status(args))
        }
        Command::Projections(ProjectionsCommand::Rebuild(args)) => {
            runtime()?.block_on(projections::rebuild(args))
        }
        Command::Bench(BenchCommand::Start(args)) => runtime()?.block_on(bench::start(args)),
        Command::Bench(BenchCommand::Bus(args)) => runtime()?.block_on(bench::bus(args)),
        Command::Bench(BenchCommand::Http(args)) => bench::http(args),
        Command::Bench(BenchCommand::Cqrs(args)) => runtime()?.block_on(bench::cqrs(args)),
        Command::Secrets(command) => secrets::run(command),
        Command::Backup(BackupCommand::Create(args)) => backup::create(&args),
        Command::Backup(BackupCommand::Verify(args)) => backup::verify(&args),
        Command::Backup(BackupCommand::Restore(args)) => backup::restore(&args),
        Command::Backup(BackupCommand::List(args)) => backup::list(&args),
        Command::Export(ExportCommand::Kubernetes(args)) => export::kubernetes(args),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Loads the manifest, or prints every problem with it and returns the exit code.
fn load_manifest(path: &Path) -> Result<Manifest, ExitCode> {
    match Manifest::load(path) {
        Ok(manifest) => Ok(manifest),
        Err(LoadError::Invalid(errors)) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: {} error(s); nothing was started",
                path.display(),
                errors.errors.len()
            );
            Err(ExitCode::from(EXIT_CONFIG))
        }
        Err(other) => {
            eprintln!("error: {other}");
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// The data directory of the manifest at `file`, unless one is given.
fn data_dir(file: &Path, explicit: Option<&PathBuf>) -> PathBuf {
    explicit.cloned().unwrap_or_else(|| {
        let dir = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        dir.join(mortar_node::datadir::DEFAULT_DIR)
    })
}

/// A client for the node named by the arguments.
fn admin_client(file: &Path, node: &NodeArgs) -> anyhow::Result<AdminClient> {
    if let Some(url) = &node.admin_url {
        // The token from MORTAR_ADMIN_TOKEN, else from the data directory.
        let token = std::env::var("MORTAR_ADMIN_TOKEN").ok().or_else(|| {
            mortar_tls::Credentials::read_admin_token(&data_dir(file, node.data_dir.as_ref())).ok()
        });
        return Ok(AdminClient::with_token(url, token.as_deref()));
    }
    Ok(AdminClient::for_data_dir(&data_dir(
        file,
        node.data_dir.as_ref(),
    ))?)
}
