//! Constant HTTP load from a client that does not retry: what deploy and
//! chaos tests count failures with. Every request that does not come back
//! 2xx is a failure the user would have seen.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the load saw.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Requests sent.
    pub sent: u64,
    /// Requests not answered 2xx (including transport errors).
    pub failed: u64,
    /// How often each 2xx body was seen (e.g. which version answered).
    pub bodies: BTreeMap<String, u64>,
    /// The first few failures, for the test's message.
    pub failures: Vec<String>,
    /// How many failures of each kind (status code, or `transport`).
    pub failure_kinds: BTreeMap<String, u64>,
}

/// Workers sending `GET url` back to back until stopped.
pub struct ConstantLoad {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<LoadReport>>,
    workers: Vec<JoinHandle<()>>,
}

impl ConstantLoad {
    /// Starts `workers` threads, each with its own connection, pausing
    /// `pause` between requests.
    pub fn start(url: &str, workers: usize, pause: Duration) -> ConstantLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(LoadReport::default()));
        let workers = (0..workers)
            .map(|_| {
                let (stop, report, url) = (stop.clone(), report.clone(), url.to_owned());
                std::thread::spawn(move || {
                    let http = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(30))
                        .build()
                        .unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        let outcome = http.get(&url).send().and_then(|r| {
                            let status = r.status();
                            r.text().map(|body| (status, body))
                        });
                        let mut report = report.lock().unwrap();
                        report.sent += 1;
                        match outcome {
                            Ok((status, body)) if status.is_success() => {
                                *report.bodies.entry(body.trim().to_owned()).or_default() += 1;
                            }
                            Ok((status, body)) => {
                                report.failed += 1;
                                *report
                                    .failure_kinds
                                    .entry(status.as_u16().to_string())
                                    .or_default() += 1;
                                if report.failures.len() < 5
                                    || status.as_u16() != 500 && report.failures.len() < 8
                                {
                                    report.failures.push(format!("{status}: {body}"));
                                }
                            }
                            Err(e) => {
                                report.failed += 1;
                                *report
                                    .failure_kinds
                                    .entry("transport".to_owned())
                                    .or_default() += 1;
                                if report.failures.len() < 5 {
                                    report.failures.push(e.to_string());
                                }
                            }
                        }
                        drop(report);
                        std::thread::sleep(pause);
                    }
                })
            })
            .collect();
        ConstantLoad {
            stop,
            report,
            workers,
        }
    }

    /// What was seen so far.
    pub fn report(&self) -> LoadReport {
        self.report.lock().unwrap().clone()
    }

    /// Stops the workers and returns what they saw.
    pub fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.report()
    }
}
