//! `mortar release` and `mortar releases`: the immutable release ledger.

use std::process::ExitCode;

use anyhow::Context;
use mortar_release::Ledger;

use crate::cli::{ReleaseArgs, ReleasesArgs};

pub(crate) fn record(args: &ReleaseArgs) -> anyhow::Result<ExitCode> {
    let manifest = match super::load_manifest(&args.manifest.file) {
        Ok(manifest) => manifest,
        Err(code) => return Ok(code),
    };
    let data_dir = super::data_dir(&args.manifest.file, args.data_dir.as_ref());
    let (release, new) = Ledger::open(&data_dir)
        .record(&manifest)
        .context("cannot record the release")?;
    let files: usize = release.services.iter().map(|s| s.artifacts.len()).sum();
    if new {
        println!(
            "release {} (#{}) recorded: {} service(s), {files} file(s) stored in {}",
            release.id,
            release.seq,
            release.services.len(),
            data_dir.join("releases").display()
        );
    } else {
        println!(
            "release {} (#{}) already records exactly this; nothing changed",
            release.id, release.seq
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn list(args: &ReleasesArgs) -> anyhow::Result<ExitCode> {
    let data_dir = super::data_dir(&args.release.manifest.file, args.release.data_dir.as_ref());
    let releases = Ledger::open(&data_dir)
        .list()
        .context("cannot read the release ledger")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&releases)?);
        return Ok(ExitCode::SUCCESS);
    }
    if releases.is_empty() {
        println!(
            "no releases yet in {}; record one with `mortar release`",
            data_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<4} {:<12} {:<25} services (program digest)",
        "#", "id", "recorded"
    );
    for r in &releases {
        let services: Vec<String> = r
            .services
            .iter()
            .map(|s| {
                let digest = s.artifacts.first().map_or("-", |a| &a.sha256[..12]);
                format!("{} ({digest})", s.name)
            })
            .collect();
        println!(
            "{:<4} {:<12} {:<25} {}",
            r.seq,
            r.id,
            r.created_at,
            services.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
