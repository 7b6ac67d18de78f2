//! `mortar backup create | verify | restore | list`: wiring to `mortar-backup`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use mortar_backup::{
    BackupManifest, CreateOptions, RestoreOptions, ServiceProgram, VerifyOptions, VerifyReport,
};

use mortar_secrets::{Identity, Recipients};

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
