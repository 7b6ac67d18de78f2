//! `mortar backup create | verify | restore | list`: wiring to `mortar-backup`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mortar_backup::{
    BackupManifest, CreateOptions, RestoreOptions, ServiceProgram, VerifyOptions, VerifyReport,
};

use mortar_node::client::AdminClient;
use mortar_secrets::{Identity, Recipients};
use mortar_supervisor::{ServiceState, ServiceStatus};

use crate::cli::{
    BackupCreateArgs, BackupKeyArgs, BackupListArgs, BackupRestoreArgs, BackupTarget,
    BackupVerifyArgs,
};

fn data_dir(target: &BackupTarget) -> PathBuf {
    super::data_dir(&target.manifest.file, target.data_dir.as_ref())
}

/// `<data dir>-backups` beside the data directory, unless given.
fn backups_dir(data_dir: &Path, explicit: Option<&PathBuf>) -> PathBuf {
    explicit.cloned().unwrap_or_else(|| {
        let name = data_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "data".into());
        data_dir.with_file_name(format!("{name}-backups"))
    })
}

/// The decryption key, when one is named.
fn key(args: &BackupKeyArgs) -> anyhow::Result<Option<Identity>> {
    args.key
        .as_deref()
        .map(|path| {
            Identity::load(path, None)
                .with_context(|| format!("cannot use the key {}", path.display()))
        })
        .transpose()
}

pub(crate) fn create(args: &BackupCreateArgs) -> anyhow::Result<ExitCode> {
    if args.keep == Some(0) {
        anyhow::bail!("--keep 0 would delete every backup; keep at least 1");
    }
    let data_dir = data_dir(&args.target);
    let backups_dir = backups_dir(&data_dir, args.to.as_ref());
    let encrypt_to = match &args.encrypt_to {
        Some(cert) => Some(
            Recipients::load(std::slice::from_ref(cert))
                .with_context(|| format!("cannot encrypt to {}", cert.display()))?,
        ),
        None => None,
    };
    let manifest = mortar_backup::create(&CreateOptions {
        data_dir: data_dir.clone(),
        backups_dir: backups_dir.clone(),
        encrypt_to,
        postgres: args.target.store_url.clone(),
    })
    .with_context(|| format!("cannot back up {}", data_dir.display()))?;
    println!(
        "backup {} taken in {} ms: {} file(s), {} byte(s), {} topic(s), release {}{}",
        backups_dir.join(&manifest.id).display(),
        manifest.took_ms,
        manifest.files.len(),
        manifest.total_bytes(),
        manifest.topics.len(),
        manifest.release_id.as_deref().unwrap_or("none"),
        match &manifest.encryption {
            Some(e) => format!(", encrypted for {}", e.recipients.join(", ")),
            None => String::new(),
        }
    );
    if let Some(keep) = args.keep {
        let removed = mortar_backup::prune(&backups_dir, keep)
            .context("the backup was taken, but retention failed")?;
        for id in removed {
            println!("removed old backup {id} (--keep {keep})");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The services of the manifest at `file`, as the replay check starts
/// them; `None` (with a note printed) when there is no manifest there.
fn service_programs(file: &Path) -> Result<Option<Vec<ServiceProgram>>, ExitCode> {
    if !file.exists() {
        println!(
            "note: no manifest at {}: the read models were not compared with their events (pass -f mortar.toml)",
            file.display()
        );
        return Ok(None);
    }
    let manifest = super::load_manifest(file)?;
    Ok(Some(
        manifest
            .services
            .iter()
            .map(|spec| ServiceProgram {
                name: spec.name.clone(),
                program: manifest.resolve_program(spec),
                args: spec.command.iter().skip(1).cloned().collect(),
                env: spec.env.clone(),
                dir: manifest.dir.clone(),
            })
            .collect(),
    ))
}

pub(crate) fn verify(args: &BackupVerifyArgs) -> anyhow::Result<ExitCode> {
    let services = match service_programs(&args.manifest.file) {
        Ok(services) => services.unwrap_or_default(),
        Err(code) => return Ok(code),
    };
    let options = VerifyOptions {
        services,
        key: key(&args.key)?.map(Arc::new),
        postgres: args.store_url.clone(),
        ..VerifyOptions::default()
    };
    let report = mortar_backup::verify(&args.backup, &options)
        .with_context(|| format!("cannot verify {}", args.backup.display()))?;
    print_report(&report);
    print_replayed(&report);
    if report.ok() {
        println!("backup {} is good", args.backup.display());
        return Ok(ExitCode::SUCCESS);
    }
    for problem in &report.problems {
        eprintln!("FAIL {problem}");
    }
    eprintln!(
        "error: backup {} failed verification: {} problem(s); do not restore it",
        args.backup.display(),
        report.problems.len()
    );
    Ok(ExitCode::FAILURE)
}

/// One line per read store the replay check covered.
fn print_replayed(report: &VerifyReport) {
    for outcome in &report.replayed {
        let Some(replay) = &outcome.report else {
            println!(
                "replay {} ({}): could not check",
                outcome.service, outcome.read_store
            );
            continue;
        };
        if replay.projections.is_empty() {
            println!(
                "replay {} ({}): no declared projection has a checkpoint here; not compared",
                outcome.service, outcome.read_store
            );
        }
        for check in &replay.projections {
            let rows: usize = check.tables.iter().map(|t| t.expected_rows).sum();
            println!(
                "replay {} ({}): projection {}: {} event(s) up to position {} replayed, {} table(s), {} row(s): {}",
                outcome.service,
                outcome.read_store,
                check.projection,
                check.replayed,
                check.checkpoint,
                check.tables.len(),
                rows,
                if check.ok() { "equal" } else { "DIFFERENT" }
            );
        }
    }
}

fn print_report(report: &VerifyReport) {
    println!(
        "checked in {} ms: {}/{} file checksum(s), {} database(s) passed integrity_check, {} bus record checksum(s)",
        report.took_ms,
        report.files_checked,
        report.manifest.files.len(),
        report.databases_checked,
        report.records_checked,
    );
    if let Some(dump) = &report.manifest.postgres {
        println!(
            "PostgreSQL: dump of database {} (schemas {}, {} table(s)) checked with pg_restore into a scratch database",
            dump.database,
            dump.schemas.join(", "),
            dump.rows.len()
        );
    }
}

pub(crate) fn restore(args: &BackupRestoreArgs) -> anyhow::Result<ExitCode> {
    let data_dir = data_dir(&args.target);
    let key = key(&args.key)?;
    let options = RestoreOptions {
        force: args.force,
        key: key.as_ref(),
        postgres: args.target.store_url.as_deref(),
    };
    if args.force && mortar_backup::node_running(&data_dir)? {
        return restore_running(&args.backup, &data_dir, &options);
    }
    let report = mortar_backup::restore(&args.backup, &data_dir, &options)
        .with_context(|| format!("refused to restore {}", args.backup.display()))?;
    print_report(&report.verified);
    let manifest = &report.verified.manifest;
    println!(
        "restored backup {} (taken {}, release {}) into {}",
        manifest.id,
        manifest.created_at,
        manifest.release_id.as_deref().unwrap_or("none"),
        data_dir.display()
    );
    if let Some(dump) = &manifest.postgres {
        println!(
            "restored PostgreSQL schema(s) {} with pg_restore",
            dump.schemas.join(", ")
        );
    }
    if !report.previous_schemas.is_empty() {
        println!(
            "the previous schema(s) are kept as {}; drop them once the restored node serves",
            report.previous_schemas.join(", ")
        );
    }
    if let Some(previous) = &report.previous {
        println!(
            "the previous data is kept in {}; delete it once the restored node serves",
            previous.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// How long stopped services may take to stop, and restarted ones to be ready.
const SERVICE_DEADLINE: Duration = Duration::from_secs(180);

/// `--force` over a running node: stops the services whose stores the
/// backup holds through the node's admin API, restores their stores, and
/// starts them again, waiting until they are ready.
fn restore_running(
    backup: &Path,
    data_dir: &Path,
    options: &RestoreOptions<'_>,
) -> anyhow::Result<ExitCode> {
    let manifest = BackupManifest::load(backup)
        .with_context(|| format!("refused to restore {}", backup.display()))?;
    let client = AdminClient::for_data_dir(data_dir)
        .context("a node holds the data directory, but its admin API cannot be reached")?;
    let rt = super::runtime()?;
    let status = rt
        .block_on(client.status())
        .context("cannot read the node's status")?;
    let schemas: Vec<String> = manifest
        .postgres
        .as_ref()
        .map(|d| d.schemas.clone())
        .unwrap_or_default();
    let affected: Vec<String> = status
        .services
        .iter()
        .map(|s| s.name.clone())
        .filter(|name| {
            let dir = format!("{}/services/{name}/", mortar_backup::DATA_DIR);
            manifest.files.iter().any(|f| f.path.starts_with(&dir))
                || schemas.contains(&name.replace('-', "_"))
        })
        .collect();
    if affected.is_empty() {
        anyhow::bail!(
            "backup {} holds no store of the node's services; nothing to restore",
            backup.display()
        );
    }
    // Dependents first, as the node stops them.
    for service in affected.iter().rev() {
        rt.block_on(client.service_action(service, "stop"))
            .with_context(|| format!("cannot stop {service}"))?;
    }
    rt.block_on(wait_services(&client, &affected, "stopped", |s| {
        matches!(s.state, ServiceState::Stopped)
    }))?;
    println!("stopped {}", affected.join(", "));
    let restored = mortar_backup::restore_services(backup, data_dir, &affected, options);
    // Whatever happened, the services run again: on their restored stores,
    // or on their untouched ones when the backup was refused.
    for service in &affected {
        rt.block_on(client.service_action(service, "start"))
            .with_context(|| format!("cannot start {service} again"))?;
    }
    let ready = rt.block_on(wait_services(&client, &affected, "ready", |s| {
        s.ready >= s.desired && s.desired > 0
    }));
    let report = restored.with_context(|| {
        format!(
            "refused to restore {}; {} run on their current data again",
            backup.display(),
            affected.join(", ")
        )
    })?;
    ready?;
    print_report(&report.verified);
    println!(
        "restored the stores of {} from backup {} (taken {}) and started them: all ready",
        report.services.join(", "),
        manifest.id,
        manifest.created_at
    );
    if !report.previous_schemas.is_empty() {
        println!(
            "the previous schema(s) are kept as {}",
            report.previous_schemas.join(", ")
        );
    }
    if let Some(previous) = &report.previous {
        println!(
            "the previous stores are kept in {}; delete them once the services serve",
            previous.join("services").display()
        );
    }
    println!(
        "not replaced: the bus logs and acks, releases and the node's CA (the running node owns them); for a full restore stop the node and restore without --force"
    );
    Ok(ExitCode::SUCCESS)
}

/// Waits until every service in `services` satisfies `done`.
async fn wait_services(
    client: &AdminClient,
    services: &[String],
    what: &str,
    done: impl Fn(&ServiceStatus) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + SERVICE_DEADLINE;
    loop {
        let status = client.status().await?;
        let pending: Vec<&str> = status
            .services
            .iter()
            .filter(|s| services.contains(&s.name) && !done(s))
            .map(|s| s.name.as_str())
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{} not {what} after {} s; see `mortar status` and `mortar logs`",
                pending.join(", "),
                SERVICE_DEADLINE.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn list(args: &BackupListArgs) -> anyhow::Result<ExitCode> {
    let backups_dir = backups_dir(&data_dir(&args.target), args.from.as_ref());
    let backups = mortar_backup::list(&backups_dir)
        .with_context(|| format!("cannot list {}", backups_dir.display()))?;
    if backups.is_empty() {
        println!(
            "no backups in {}; take one with `mortar backup create`",
            backups_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<22} {:<26} {:>6} {:>12}  release",
        "id", "taken", "files", "bytes"
    );
    for b in &backups {
        print_row(b);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_row(b: &BackupManifest) {
    println!(
        "{:<22} {:<26} {:>6} {:>12}  {}",
        b.id,
        b.created_at,
        b.files.len(),
        b.total_bytes(),
        b.release_id.as_deref().unwrap_or("-")
    );
}
