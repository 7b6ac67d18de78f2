//! A scripted chaos run against the shop: load through the gateway from
//! clients that never retry, faults at set times, then a wait for the read
//! model and the notifier to catch up, and the [`Scorecard`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mortar_node::client::AdminClient;

use crate::faults::{self, Fault, FaultError};
use crate::scorecard::{Recovery, Scorecard};
use crate::shop::{Answer, Customer};

/// What a scripted step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A signal to the service's first running instance.
    Signal {
        /// Which service.
        service: String,
        /// Kill or pause.
        fault: Fault,
    },
    /// The node's bus stops serving for this long.
    BusOutage(Duration),
    /// The gateway delays `percent` of the service's requests by `ms`, for
    /// `lasts`.
    Latency {
        /// Which service.
        service: String,
        /// The delay.
        ms: u64,
        /// The share of requests delayed.
        percent: f64,
        /// How long.
        lasts: Duration,
    },
    /// A rolling deploy of the service: a release of what is on disk, or
    /// back to the boot version when it already runs that release.
    Deploy {
        /// Which service.
        service: String,
    },
}

/// One scripted step: `action`, `at` after the load started.
#[derive(Debug, Clone)]
pub struct Step {
    /// When, from the start of the load.
    pub at: Duration,
    /// What.
    pub action: Action,
}

/// A chaos scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// How long the load runs.
    pub load: Duration,
    /// Customers, each signing up, browsing and ordering in a loop.
    pub customers: usize,
    /// The pause between one customer's rounds.
    pub think_time: Duration,
    /// The faults, in time order.
    pub steps: Vec<Step>,
    /// How long to wait for the read model and notifier to catch up.
    pub settle: Duration,
}

/// Why a scenario could not run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// An unknown scenario name.
    #[error("unknown scenario {0:?}; known: default")]
    Unknown(String),
    /// The node or a fault failed.
    #[error(transparent)]
    Fault(#[from] FaultError),
    /// The node has no gateway URL.
    #[error("the node publishes no gateway URL; is this a node of the shop?")]
    NoGateway,
    /// A deploy step needs the node's data directory (for its release).
    #[error(
        "the scenario deploys a service and needs the node's data directory to record its release"
    )]
    NoDataDir,
    /// The shop did not answer before the load.
    #[error("the shop did not answer through the gateway within 60 s: {0}")]
    NotServing(String),
}

impl Scenario {
    /// The scenario called `name`.
    pub fn named(name: &str) -> Result<Scenario, ScenarioError> {
        let step = |secs: f64, action: Action| Step {
            at: Duration::from_secs_f64(secs),
            action,
        };
        let signal = |service: &str, fault: Fault| Action::Signal {
            service: service.to_owned(),
            fault,
        };
        match name {
            // Each fault hits a different kind of part: a replicated
            // service on the request path, the bus under every publisher
            // and consumer, the single writer on the request path (a pause
            // shorter than the per-try timeout, while the bus is still
            // down), a slow service, the two consumers behind the bus, and
            // a new version of a service rolled out under load. Injected
            // errors are left out: the gateway answers them to the client
            // on purpose, so a client that never retries must see them.
            "default" => Ok(Scenario {
                name: name.to_owned(),
                load: Duration::from_secs(16),
                customers: 4,
                think_time: Duration::from_millis(250),
                steps: vec![
                    step(2.0, signal("catalog", Fault::Kill)),
                    step(4.0, Action::BusOutage(Duration::from_secs(3))),
                    step(
                        5.5,
                        signal("ordering", Fault::Pause(Duration::from_millis(1000))),
                    ),
                    step(
                        8.0,
                        Action::Latency {
                            service: "catalog".to_owned(),
                            ms: 150,
                            percent: 50.0,
                            lasts: Duration::from_secs(2),
                        },
                    ),
                    step(9.0, signal("notifier", Fault::Kill)),
                    step(
                        10.5,
                        Action::Deploy {
                            service: "catalog".to_owned(),
                        },
                    ),
                    step(12.0, signal("order-history", Fault::Kill)),
                ],
                settle: Duration::from_secs(60),
            }),
            other => Err(ScenarioError::Unknown(other.to_owned())),
        }
    }

    /// Runs the scenario against the node `admin` talks to; `data_dir` is
    /// its data directory, where a deploy step records its release.
    pub async fn run(
        &self,
        admin: &AdminClient,
        data_dir: Option<&Path>,
    ) -> Result<Scorecard, ScenarioError> {
        let status = admin.status().await.map_err(FaultError::from)?;
        let gateway = status
            .node
            .gateway_url
            .clone()
            .ok_or(ScenarioError::NoGateway)?;
        // Before the load: recording a release hashes and stores programs.
        let mut releases = HashMap::new();
        for step in &self.steps {
            if let Action::Deploy { service } = &step.action {
                let dir = data_dir.ok_or(ScenarioError::NoDataDir)?;
                releases.insert(
                    service.clone(),
                    faults::deploy_target(&status, service, dir)?,
                );
            }
        }
        let run_id = std::process::id();
        let mut customers = Vec::new();
        for n in 0..self.customers {
            let mut c = Customer::new(&gateway, format!("chaos-{run_id}-{n}"));
            warm_up(&mut c).await?;
            customers.push(c);
        }
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let loads: Vec<_> = customers
            .into_iter()
            .map(|c| {
                let (tally, stop, think) = (tally.clone(), stop.clone(), self.think_time);
                tokio::spawn(async move { shop_loop(c, tally, stop, think).await })
            })
            .collect();
        let started = Instant::now();
        let mut recoveries = Vec::new();
        for step in &self.steps {
            tokio::time::sleep(step.at.saturating_sub(started.elapsed())).await;
            let (what, admin, action) =
                (step.action.describe(), admin.clone(), step.action.clone());
            tracing::info!(fault = %what, "injecting");
            let at = Instant::now();
            let action_fut: std::pin::Pin<
                Box<dyn Future<Output = Result<Duration, FaultError>> + Send>,
            > = match action {
                Action::Signal { service, fault } => {
                    let (service, instance, pid) = faults::find(&admin, &service).await?;
                    let what = match fault {
                        Fault::Kill => format!("kill -9 {instance}"),
                        Fault::Pause(d) => format!("pause {instance} for {} ms", d.as_millis()),
                    };
                    recoveries.push(tokio::spawn(async move {
                        faults::inject(&instance, pid, fault).await?;
                        let dead = matches!(fault, Fault::Kill).then_some(pid);
                        let took =
                            faults::recovery(&admin, &service, dead, at, RECOVERY_TIMEOUT).await?;
                        Ok::<_, FaultError>(Recovery::new(what, took))
                    }));
                    continue;
                }
                Action::BusOutage(lasts) => {
                    Box::pin(
                        async move { faults::bus_outage(&admin, lasts, RECOVERY_TIMEOUT).await },
                    )
                }
                Action::Latency {
                    service,
                    ms,
                    percent,
                    lasts,
                } => Box::pin(async move {
                    faults::latency(&admin, &service, ms, percent, lasts, RECOVERY_TIMEOUT).await
                }),
                Action::Deploy { service } => {
                    let release = releases.get(&service).cloned().unwrap_or_default();
                    Box::pin(async move {
                        faults::deploy(&admin, &service, &release, RECOVERY_TIMEOUT).await
                    })
                }
            };
            recoveries.push(tokio::spawn(async move {
                Ok::<_, FaultError>(Recovery::new(what, action_fut.await?))
            }));
        }
        tokio::time::sleep(self.load.saturating_sub(started.elapsed())).await;
        stop.store(true, Ordering::Relaxed);
        let mut customers = Vec::new();
        for load in loads {
            if let Ok(c) = load.await {
                customers.push(c);
            }
        }
        let mut card = tally.card();
        for r in recoveries {
            if let Ok(result) = r.await {
                card.faults.push(result?);
            }
        }
        card.longest_recovery_ms = card
            .faults
            .iter()
            .map(|r| r.recovered_ms)
            .max()
            .unwrap_or(0);
        settle(&customers, &tally, self.settle, &mut card).await;
        Ok(card)
    }
}

/// How long a fault's service may take to recover before the run fails.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);

impl Action {
    /// What the scorecard calls it.
    pub fn describe(&self) -> String {
        match self {
            Action::Signal { service, fault } => match fault {
                Fault::Kill => format!("kill -9 {service}"),
                Fault::Pause(d) => format!("pause {service} for {} ms", d.as_millis()),
            },
            Action::BusOutage(d) => format!("bus outage for {} ms", d.as_millis()),
            Action::Latency {
                service,
                ms,
                percent,
                lasts,
            } => format!(
                "latency +{ms} ms on {percent}% of {service} for {} ms",
                lasts.as_millis()
            ),
            Action::Deploy { service } => format!("rolling deploy of {service}"),
        }
    }
}

/// Signs up and logs in before the load, waiting for the shop to answer:
/// these requests are not counted.
async fn warm_up(c: &mut Customer) -> Result<(), ScenarioError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        let (status, body) = c.sign_up().await;
        if status == 201 || status == 409 {
            let (status, body) = c.log_in().await;
            if status == 200 {
                return Ok(());
            }
            last = format!("log-in: {status} {body}");
        } else {
            last = format!("sign-up: {status} {body}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(ScenarioError::NotServing(last))
}

/// What the clients saw.
#[derive(Debug, Default)]
struct Tally {
    inner: Mutex<TallyInner>,
}

#[derive(Debug, Default)]
struct TallyInner {
    sent: u64,
    failures: BTreeMap<String, u64>,
    acknowledged: BTreeMap<String, Vec<String>>,
}

impl Tally {
    fn count(&self, what: &str, answer: &Answer) -> bool {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        t.sent += 1;
        let ok = (200..300).contains(&answer.0);
        if !ok {
            let kind = match answer.0 {
                0 => format!("{what}: no answer"),
                s => format!("{what}: {s}"),
            };
            *t.failures.entry(kind).or_default() += 1;
        }
        ok
    }

    fn acknowledged(&self, customer: &str, order: String) {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        t.acknowledged
            .entry(customer.to_owned())
            .or_default()
            .push(order);
    }

    fn acked_of(&self, customer: &str) -> Vec<String> {
        let t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        t.acknowledged.get(customer).cloned().unwrap_or_default()
    }

    fn card(&self) -> Scorecard {
        let t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Scorecard {
            requests_sent: t.sent,
            requests_failed: t.failures.values().sum(),
            failures: t.failures.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            orders_acknowledged: t.acknowledged.values().map(|v| v.len() as u64).sum(),
            ..Scorecard::default()
        }
    }
}

/// One customer: browse, order, think, until stopped.
async fn shop_loop(
    c: Customer,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    think: Duration,
) -> Customer {
    while !stop.load(Ordering::Relaxed) {
        let browse = c.browse().await;
        tally.count("browse", &browse);
        let order = c.order().await;
        if tally.count("order", &order)
            && let Some(id) = order.1["id"].as_str()
        {
            tally.acknowledged(&c.name, id.to_owned());
        }
        tokio::time::sleep(think).await;
    }
    c
}

/// Waits until every acknowledged order is in the read model and notified
/// (or `timeout`), then fills in the arrival figures.
async fn settle(customers: &[Customer], tally: &Tally, timeout: Duration, card: &mut Scorecard) {
    let deadline = Instant::now() + timeout;
    loop {
        let (mut seen_total, mut notified_total, mut duplicates) = (0, 0, 0);
        for c in customers {
            let acked: HashSet<String> = tally.acked_of(&c.name).into_iter().collect();
            let seen = c.orders_seen().await.unwrap_or_default();
            let notified = c.notified().await.unwrap_or_default();
            duplicates += dupes(&seen) + dupes(&notified);
            seen_total += seen
                .iter()
                .collect::<HashSet<_>>()
                .iter()
                .filter(|o| acked.contains(**o))
                .count() as u64;
            notified_total += notified
                .iter()
                .collect::<HashSet<_>>()
                .iter()
                .filter(|o| acked.contains(**o))
                .count() as u64;
        }
        card.orders_in_read_model = seen_total;
        card.orders_notified = notified_total;
        card.duplicates = duplicates;
        card.lost = card.orders_acknowledged - seen_total.min(notified_total);
        if card.lost == 0 || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn dupes(ids: &[String]) -> u64 {
    (ids.len() - ids.iter().collect::<HashSet<_>>().len()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_scenario_exists_and_unknown_names_are_refused() {
        let s = Scenario::named("default").unwrap();
        assert!(s.steps.windows(2).all(|w| w[0].at < w[1].at));
        assert!(s.steps.iter().all(|st| st.at < s.load));
        let kinds: HashSet<&str> = s
            .steps
            .iter()
            .map(|st| match st.action {
                Action::Signal { .. } => "signal",
                Action::BusOutage(_) => "bus",
                Action::Latency { .. } => "latency",
                Action::Deploy { .. } => "deploy",
            })
            .collect();
        assert_eq!(kinds.len(), 4, "every kind of step plays: {kinds:?}");
        let e = Scenario::named("nope").unwrap_err();
        assert!(e.to_string().contains("known: default"), "{e}");
    }

    #[test]
    fn duplicates_are_counted_once_per_extra_copy() {
        let ids: Vec<String> = ["a", "b", "a", "a"].map(String::from).to_vec();
        assert_eq!(dupes(&ids), 2);
    }
}
