//! Replay-check mode: a service that declares its projections (see
//! [`run_with_projections`](crate::run_with_projections)) can check a read
//! model against its events without serving. `mortar backup verify` starts
//! the service's own binary with [`REPLAY_CHECK_ENV`] set against a scratch
//! restore: the node cannot link application code, but the application's
//! binary knows its projections.

use std::process::ExitCode;
use std::sync::Arc;

use mortar_cqrs::eventstore::Upcasters;
use mortar_cqrs::{Projection, ReplayReport, ReplaySpec, open_read_store, replay_check};

pub use mortar_cqrs::REPLAY_CHECK_ENV;

/// The exit code when the check could not run at all (bad spec, store
/// unreachable), as opposed to 1: it ran and found differences.
const EXIT_CANNOT_CHECK: u8 = 2;

/// A projection a service keeps, declared so the SDK can check its read
/// model against the events it is built from.
#[derive(Clone)]
pub struct DeclaredProjection {
    projection: Arc<dyn Projection>,
    events_of: Option<String>,
    upcasters: Upcasters,
}

impl std::fmt::Debug for DeclaredProjection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeclaredProjection")
            .field("projection", &self.projection.name())
            .field("events_of", &self.events_of)
            .finish_non_exhaustive()
    }
}

impl DeclaredProjection {
    /// A projection fed by this service's own event store.
    pub fn new(projection: impl Projection) -> Self {
        DeclaredProjection {
            projection: Arc::new(projection),
            events_of: None,
            upcasters: Upcasters::new(),
        }
    }

    /// The projection is fed by another service's events (e.g. through the
    /// bus): name that service.
    pub fn events_of(mut self, service: impl Into<String>) -> Self {
        self.events_of = Some(service.into());
        self
    }

    /// The upcasters the projection's events go through.
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }
}

/// Runs the replay check described by `spec` (the JSON value of
/// [`REPLAY_CHECK_ENV`]) for `projections` of `service`; prints the report.
pub(crate) fn run(service: &str, projections: &[DeclaredProjection], spec: &str) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("replay check: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_CANNOT_CHECK);
        }
    };
    match runtime.block_on(check(service, projections, spec)) {
        Ok(report) => {
            match serde_json::to_string(&report) {
                Ok(json) => println!("{json}"),
                Err(e) => {
                    eprintln!("replay check: cannot encode the report: {e}");
                    return ExitCode::from(EXIT_CANNOT_CHECK);
                }
            }
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("replay check of {service}: {e}");
            ExitCode::from(EXIT_CANNOT_CHECK)
        }
    }
}

async fn check(
    service: &str,
    projections: &[DeclaredProjection],
    spec: &str,
) -> Result<ReplayReport, crate::BoxError> {
    let spec: ReplaySpec = serde_json::from_str(spec)
        .map_err(|e| format!("{REPLAY_CHECK_ENV} is not a replay spec: {e}"))?;
    let existing = open_read_store(&spec.read_store).await?;
    let fresh = open_read_store(&spec.fresh_store).await?;
    let applied: Vec<String> = existing
        .checkpoints()
        .await?
        .into_iter()
        .map(|c| c.name)
        .collect();
    let mut report = ReplayReport {
        service: service.to_owned(),
        projections: Vec::new(),
        skipped: Vec::new(),
    };
    for declared in projections {
        let name = declared.projection.name();
        if !applied.iter().any(|a| a == name) {
            report.skipped.push(name.to_owned());
            continue;
        }
        let source_service = declared.events_of.as_deref().unwrap_or(service);
        let url = spec.event_stores.get(source_service).ok_or_else(|| {
            format!("projection {name} reads the events of {source_service}, whose event store is not in the backup")
        })?;
        let source = mortar_cqrs::eventstore::open(url).await?;
        report.projections.push(
            replay_check(
                &*source,
                &*existing,
                &*fresh,
                &*declared.projection,
                &declared.upcasters,
            )
            .await?,
        );
    }
    Ok(report)
}
