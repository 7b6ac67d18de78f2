//! `mortar backup create | verify | restore | list`: wiring to `mortar-backup`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use mortar_backup::{BackupManifest, CreateOptions, VerifyReport};

use crate::cli::{
    BackupCreateArgs, BackupListArgs, BackupRestoreArgs, BackupTarget, BackupVerifyArgs,
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

pub(crate) fn create(args: &BackupCreateArgs) -> anyhow::Result<ExitCode> {
    if args.keep == Some(0) {
        anyhow::bail!("--keep 0 would delete every backup; keep at least 1");
    }
    let data_dir = data_dir(&args.target);
    let backups_dir = backups_dir(&data_dir, args.to.as_ref());
    let manifest = mortar_backup::create(&CreateOptions {
        data_dir: data_dir.clone(),
        backups_dir: backups_dir.clone(),
    })
    .with_context(|| format!("cannot back up {}", data_dir.display()))?;
    println!(
        "backup {} taken in {} ms: {} file(s), {} byte(s), {} topic(s), release {}",
        backups_dir.join(&manifest.id).display(),
        manifest.took_ms,
        manifest.files.len(),
        manifest.total_bytes(),
        manifest.topics.len(),
        manifest.release_id.as_deref().unwrap_or("none"),
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

pub(crate) fn verify(args: &BackupVerifyArgs) -> anyhow::Result<ExitCode> {
    let report = mortar_backup::verify(&args.backup)
        .with_context(|| format!("cannot verify {}", args.backup.display()))?;
    print_report(&report);
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

fn print_report(report: &VerifyReport) {
    println!(
        "checked in {} ms: {}/{} file checksum(s), {} database(s) passed integrity_check, {} bus record checksum(s)",
        report.took_ms,
        report.files_checked,
        report.manifest.files.len(),
        report.databases_checked,
        report.records_checked,
    );
}

pub(crate) fn restore(args: &BackupRestoreArgs) -> anyhow::Result<ExitCode> {
    let data_dir = data_dir(&args.target);
    let report = mortar_backup::restore(&args.backup, &data_dir, args.force)
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
