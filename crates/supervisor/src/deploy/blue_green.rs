//! Blue-green: the new version starts at full size beside the old one and
//! gets `traffic_share`% of the gateway's requests. After the analysis
//! window its error rate and p99 are compared with the old version's over
//! the same time ([`super::analysis::judge`]); it is promoted (all traffic,
//! then the old version drained after `promote_delay`) or rolled back. With
//! `manual`, an operator decides with `mortar deploy promote|abort`.

use std::time::{Duration, Instant};

use mortar_resilience::RequestStats;

use super::analysis::{self, Verdict, VersionReport};
use super::{Control, DeployState, Run, wait};

/// How often the analysis numbers are refreshed in the status.
const REPORT_EVERY: Duration = Duration::from_millis(500);

pub(crate) async fn run(run: &Run<'_>, manual: bool) -> Result<(), String> {
    let spec = run.spec();
    let desired = run.desired() as usize;
    let mut started = Vec::new();
    for _ in 0..desired {
        match run.start_new() {
            Ok(id) => started.push(id),
            Err(why) => return undo(run, why).await,
        }
    }
    let deadline = Instant::now() + spec.progress_deadline;
    if let Err(why) = wait::ready(run, &started, spec.min_ready, deadline).await {
        return undo(run, why).await;
    }
    let (service, old, new) = (run.service(), &run.old.version, &run.new.version);
    let share = spec.traffic_share;
    run.traffic.set_split(
        service,
        vec![(old.clone(), 100 - share), (new.clone(), share)],
    );
    run.deployment.step(format!(
        "{share}% of the gateway's traffic to {new}, {}% to {old}",
        100 - share
    ));
    let decision = if manual {
        await_operator(run).await
    } else {
        analyse(run).await
    };
    match decision {
        Ok(()) => {
            run.traffic.set_split(service, vec![(new.clone(), 100)]);
            run.deployment
                .step(format!("promoted: all traffic to {new}"));
            run.deployment.update(|s| s.state = DeployState::Running);
            tokio::time::sleep(spec.promote_delay).await;
            let old_ids = run.ids(false);
            run.stop_all(&old_ids).await;
            run.traffic.set_split(service, Vec::new());
            Ok(())
        }
        Err(why) => {
            run.traffic.set_split(service, vec![(old.clone(), 100)]);
            run.deployment.step(format!("all traffic back to {old}"));
            run.deployment.update(|s| s.state = DeployState::Running);
            let new_ids = run.ids(true);
            run.stop_all(&new_ids).await;
            run.traffic.set_split(service, Vec::new());
            Err(why)
        }
    }
}

/// Both versions' statistics since `start`, recorded in the status.
fn report(run: &Run<'_>, start: &(RequestStats, RequestStats)) -> (RequestStats, RequestStats) {
    let service = run.service();
    let old = run.traffic.stats(service, &run.old.version).since(&start.0);
    let new = run.traffic.stats(service, &run.new.version).since(&start.1);
    let reports = vec![
        VersionReport::new(&run.old.version, &old),
        VersionReport::new(&run.new.version, &new),
    ];
    run.deployment.update(|s| s.analysis = Some(reports));
    run.refresh_counts();
    (old, new)
}

fn snapshot(run: &Run<'_>) -> (RequestStats, RequestStats) {
    let service = run.service();
    (
        run.traffic.stats(service, &run.old.version),
        run.traffic.stats(service, &run.new.version),
    )
}

/// Waits for the analysis window (and the minimum number of requests, up
/// to the progress deadline), then judges. An operator's abort wins.
async fn analyse(run: &Run<'_>) -> Result<(), String> {
    let spec = run.spec();
    let start = snapshot(run);
    let began = Instant::now();
    let mut control = run.deployment.control();
    run.deployment.step(format!(
        "analysing for {} (at least {} requests to the new version)",
        humantime::format_duration(spec.analysis),
        spec.min_requests
    ));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REPORT_EVERY) => {}
            _ = control.changed() => {}
        }
        if *control.borrow() == Control::Abort {
            return Err("aborted by an operator".to_owned());
        }
        let (old, new) = report(run, &start);
        if began.elapsed() < spec.analysis {
            continue;
        }
        match analysis::judge(&old, &new, spec) {
            Verdict::Promote => {
                run.deployment.step(format!(
                    "analysis passed: {} requests to the new version, error rate {:.2}% (old {:.2}%), p99 {} (old {})",
                    new.requests,
                    new.error_rate() * 100.0,
                    old.error_rate() * 100.0,
                    ms(new.p99()),
                    ms(old.p99())
                ));
                return Ok(());
            }
            Verdict::RollBack(why) => return Err(format!("analysis failed: {why}")),
            Verdict::Wait(why) if began.elapsed() >= spec.progress_deadline => {
                return Err(format!(
                    "no verdict within the progress deadline of {}: {why}; lower min_requests or use --manual",
                    humantime::format_duration(spec.progress_deadline)
                ));
            }
            Verdict::Wait(_) => {}
        }
    }
}

/// Shows the numbers and waits for `promote` or `abort`.
async fn await_operator(run: &Run<'_>) -> Result<(), String> {
    let start = snapshot(run);
    let mut control = run.deployment.control();
    run.deployment
        .update(|s| s.state = DeployState::AwaitingPromotion);
    let service = run.service();
    run.deployment.step(format!(
        "awaiting an operator: `mortar deploy promote {service}` or `mortar deploy abort {service}`"
    ));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REPORT_EVERY) => {}
            _ = control.changed() => {}
        }
        report(run, &start);
        match *control.borrow() {
            Control::Promote => return Ok(()),
            Control::Abort => return Err("aborted by an operator".to_owned()),
            Control::Pending => {}
        }
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0),
    )
}

async fn undo(run: &Run<'_>, why: String) -> Result<(), String> {
    run.deployment
        .step(format!("stopping the blue-green deploy: {why}"));
    let new_ids = run.ids(true);
    run.stop_all(&new_ids).await;
    Err(why)
}
