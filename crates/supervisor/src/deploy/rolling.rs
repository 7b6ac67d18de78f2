//! Rolling: replace instances a few at a time. At most `max_surge`
//! instances above the desired count run, at most `max_unavailable` below
//! it are not available; an old instance is drained only once a new one
//! has been ready for `min_ready`. A new instance that crashes, fails, or
//! makes no progress before `progress_deadline` rolls everything back.

use std::time::Instant;

use super::Run;
use super::wait::{Availability, POLL};
use crate::InstanceState;

pub(crate) async fn run(run: &Run<'_>) -> Result<(), String> {
    let spec = run.spec();
    let desired = run.desired() as usize;
    let (surge, unavailable) = (spec.max_surge as usize, spec.max_unavailable as usize);
    run.deployment.step(format!(
        "rolling {desired} instances: max_surge {surge}, max_unavailable {unavailable}, min_ready {}",
        humantime::format_duration(spec.min_ready)
    ));
    let mut availability = Availability::default();
    let mut progress_at = Instant::now();
    let mut available_count = 0;
    loop {
        let (new, old) = run.instances();
        let available = match availability.observe(&new, spec.min_ready) {
            Ok(available) => available,
            Err(why) => return undo(run, why).await,
        };
        if available.len() > available_count {
            available_count = available.len();
            progress_at = Instant::now();
            run.deployment.step(format!(
                "{available_count}/{desired} new instances available"
            ));
        }
        if old.is_empty() && available.len() >= desired {
            return Ok(());
        }
        let total = new.len() + old.len();
        if new.len() < desired && total < desired + surge {
            if let Err(why) = run.start_new() {
                return undo(run, why).await;
            }
            continue;
        }
        let old_ready = old
            .iter()
            .filter(|i| i.state == InstanceState::Ready)
            .count();
        // An old instance may go when what stays available is enough; one
        // that is not ready goes first, as it serves nothing.
        if let Some(victim) = old.iter().min_by_key(|i| i.state == InstanceState::Ready)
            && (old_ready + available.len())
                .saturating_sub(usize::from(victim.state == InstanceState::Ready))
                >= desired.saturating_sub(unavailable)
        {
            run.stop(&victim.id).await;
            progress_at = Instant::now();
            continue;
        }
        if progress_at.elapsed() >= spec.progress_deadline {
            let why = format!(
                "no new instance became available within the progress deadline of {}",
                humantime::format_duration(spec.progress_deadline)
            );
            return undo(run, why).await;
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn undo(run: &Run<'_>, why: String) -> Result<(), String> {
    run.deployment.step(format!("stopping the rollout: {why}"));
    run.restore_old().await;
    Err(why)
}
