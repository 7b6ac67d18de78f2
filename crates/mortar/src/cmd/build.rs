//! `mortar build`: run the services' build commands.

use std::path::Path;
use std::process::ExitCode;

pub(crate) fn run(file: &Path) -> anyhow::Result<ExitCode> {
    let manifest = match super::load_manifest(file) {
        Ok(manifest) => manifest,
        Err(code) => return Ok(code),
    };
    let built = mortar_supervisor::build::build_all(&manifest)?;
    if built.is_empty() {
        println!("no service has a build command; nothing to do");
    } else {
        println!("built: {}", built.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
