//! Recreate: stop every old instance, then start the new ones. The gateway
//! holds the service's requests during the swap (`hold_queue` of them for
//! at most `hold_timeout`), so a swap that fits the window loses none.

use std::time::{Duration, Instant};

use super::{Run, wait};

pub(crate) async fn run(run: &Run<'_>) -> Result<(), String> {
    let spec = run.spec();
    let service = run.service().to_owned();
    let desired = run.desired() as usize;
    run.traffic
        .hold(&service, spec.hold_timeout, spec.hold_queue);
    run.deployment.step(format!(
        "holding {service}'s requests at the gateway (up to {} for {})",
        spec.hold_queue,
        humantime::format_duration(spec.hold_timeout)
    ));
    let result = swap(run, desired).await;
    run.traffic.release(&service);
    run.deployment.step("released held requests");
    result
}

async fn swap(run: &Run<'_>, desired: usize) -> Result<(), String> {
    let old = run.ids(false);
    run.stop_all(&old).await;
    let mut started = Vec::new();
    for _ in 0..desired {
        match run.start_new() {
            Ok(id) => started.push(id),
            Err(why) => return undo(run, why).await,
        }
    }
    // Requests wait meanwhile, so only readiness is awaited, not min_ready.
    let deadline = Instant::now() + run.spec().progress_deadline;
    match wait::ready(run, &started, Duration::ZERO, deadline).await {
        Ok(()) => Ok(()),
        Err(why) => undo(run, why).await,
    }
}

async fn undo(run: &Run<'_>, why: String) -> Result<(), String> {
    run.deployment.step(format!("stopping the recreate: {why}"));
    run.restore_old().await;
    Err(why)
}
