//! `mortar check`: validate the manifest.

use std::path::Path;
use std::process::ExitCode;

pub(crate) fn run(file: &Path) -> anyhow::Result<ExitCode> {
    let manifest = match super::load_manifest(file) {
        Ok(manifest) => manifest,
        Err(code) => return Ok(code),
    };
    let order: Vec<&str> = manifest
        .start_order()
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    println!(
        "{}: ok; app {}, {} service(s), start order: {}",
        file.display(),
        manifest.app.name,
        manifest.services.len(),
        order.join(" → ")
    );
    Ok(ExitCode::SUCCESS)
}
