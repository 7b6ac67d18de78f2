//! `mortar build`: the build stage, kept apart from release and run.
//!
//! Each service's `build` command runs once in the manifest's directory with
//! the terminal's stdout and stderr, so compiler output reaches the person
//! who ran it. Identical commands (one cargo invocation for several
//! services) run once.

use std::process::Command;

use mortar_manifest::Manifest;

/// A build step that failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The build program could not be started.
    #[error("service {service}: cannot run build command `{command}`: {source}")]
    Spawn {
        /// The service whose build failed.
        service: String,
        /// The command line.
        command: String,
        /// Why it could not start.
        source: std::io::Error,
    },
    /// The build program exited with an error.
    #[error("service {service}: build command `{command}` failed with {status}")]
    Failed {
        /// The service whose build failed.
        service: String,
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
}

/// Runs every distinct build command in declaration order; stops at the
/// first failure. Returns the names of the services that were built.
pub fn build_all(manifest: &Manifest) -> Result<Vec<String>, BuildError> {
    let mut done: Vec<&Vec<String>> = Vec::new();
    let mut built = Vec::new();
    for service in &manifest.services {
        let Some(build) = &service.build else {
            continue;
        };
        built.push(service.name.clone());
        if done.contains(&build) {
            continue;
        }
        done.push(build);
        let command = build.join(" ");
        let Some((program, args)) = build.split_first() else {
            continue;
        };
        tracing::info!(managed_service = %service.name, command = %command, "building");
        let status = Command::new(program)
            .args(args)
            .current_dir(&manifest.dir)
            .status()
            .map_err(|source| BuildError::Spawn {
                service: service.name.clone(),
                command: command.clone(),
                source,
            })?;
        if !status.success() {
            return Err(BuildError::Failed {
                service: service.name.clone(),
                command,
                status,
            });
        }
    }
    Ok(built)
}
