//! `mortar export kubernetes`: the manifest as Kubernetes objects.

use std::process::ExitCode;

use anyhow::Context;
use mortar_export::{ExportOptions, kubernetes as export_kubernetes, parse_image};

use super::EXIT_CONFIG;
use crate::cli::ExportKubernetesArgs;

pub(crate) fn kubernetes(args: ExportKubernetesArgs) -> anyhow::Result<ExitCode> {
    let manifest = match super::load_manifest(&args.manifest.file) {
        Ok(manifest) => manifest,
        Err(code) => return Ok(code),
    };
    let mut options = ExportOptions {
        namespace: args.namespace,
        registry: args.registry,
        bus_url: args.bus_url,
        nats_replicas: args.nats_replicas,
        store_url: args.store_url,
        mortar_image: args.mortar_image,
        ..ExportOptions::default()
    };
    for image in &args.images {
        match parse_image(image) {
            Ok((service, image)) => {
                options.images.insert(service, image);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
        }
    }
    let export = match export_kubernetes(&manifest, &options) {
        Ok(export) => export,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    match &args.output {
        Some(dir) => {
            let written = export
                .write_to(dir)
                .with_context(|| format!("exporting {}", args.manifest.file.display()))?;
            for path in written {
                println!("wrote {}", path.display());
            }
        }
        None => print!("{}", export.to_stream()),
    }
    for note in &export.notes {
        eprintln!("note: {note}");
    }
    Ok(ExitCode::SUCCESS)
}
