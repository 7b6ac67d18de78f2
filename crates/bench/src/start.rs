//! `mortar bench start`: process start to ready, as the supervisor sees it.
//!
//! Each run launches the service with `PORT=0`, waits for its port report
//! (the same `POST /v1/instances/{id}/endpoint` the node receives), then
//! polls `/health/ready` until it answers 200. The clock runs from just
//! before `spawn` to that 200. A baseline spawns `true` in the same run, to
//! show what process creation alone costs on this machine.

use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::post;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::stats::Summary;

/// What to measure.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The service's command line.
    pub command: Vec<String>,
    /// How many launches.
    pub runs: usize,
    /// How long one launch may take to become ready.
    pub timeout: Duration,
}

/// The measured distributions, in milliseconds.
#[derive(Debug, Clone)]
pub struct StartReport {
    /// Spawn to first 200 from `/health/ready`.
    pub start_to_ready: Summary,
    /// SIGTERM to exit of an idle instance.
    pub shutdown: Summary,
    /// Spawn to exit of `true`: the floor set by process creation.
    pub baseline_spawn: Summary,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// No command, or zero runs.
    #[error("{0}")]
    Usage(String),
    /// The command could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The error.
        source: std::io::Error,
    },
    /// The service did not become ready in time.
    #[error(
        "run {run}: the service did not report ready within {timeout:?}; does it use the mortar SDK (it must report its port to MORTAR_NODE_URL)?"
    )]
    Timeout {
        /// Which run.
        run: usize,
        /// The limit.
        timeout: Duration,
    },
    /// Local I/O failed (binding the report listener).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[derive(Deserialize)]
struct Report {
    port: u16,
    pid: u32,
}

/// Runs the start benchmark.
pub async fn run(options: &StartOptions) -> Result<StartReport, BenchError> {
    let Some((program, args)) = options.command.split_first() else {
        return Err(BenchError::Usage(
            "no command given: pass the service to launch after --".into(),
        ));
    };
    if options.runs == 0 {
        return Err(BenchError::Usage("--runs must be at least 1".into()));
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let node_url = format!("http://{}", listener.local_addr()?);
    let app = Router::new()
        .route(
            "/v1/instances/{id}/endpoint",
            post(
                |State(tx): State<mpsc::UnboundedSender<Report>>,
                 Path(_id): Path<String>,
                 axum::Json(r): axum::Json<Report>| async move {
                    let _ = tx.send(r);
                    axum::http::StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(tx);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .map_err(|e| BenchError::Io(std::io::Error::other(e)))?;

    let mut ready_ms = Vec::with_capacity(options.runs);
    let mut shutdown_ms = Vec::with_capacity(options.runs);
    let mut baseline_ms = Vec::with_capacity(options.runs);
    for run in 0..options.runs {
        let t0 = Instant::now();
        let status = Command::new("true").status().await;
        if status.is_ok() {
            baseline_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        }

        let t0 = Instant::now();
        let mut child = Command::new(program)
            .args(args)
            .env("PORT", "0")
            .env("MORTAR_NODE_URL", &node_url)
            .env("MORTAR_INSTANCE", format!("bench-{run}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| BenchError::Spawn {
                program: program.clone(),
                source,
            })?;
        let pid = child.id().unwrap_or_default();
        let ready = async {
            let port = loop {
                match rx.recv().await {
                    Some(r) if r.pid == pid => break r.port,
                    Some(_) => continue,
                    None => return false,
                }
            };
            let url = format!("http://127.0.0.1:{port}/health/ready");
            loop {
                if let Ok(resp) = http.get(&url).send().await
                    && resp.status().is_success()
                {
                    return true;
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        };
        match tokio::time::timeout(options.timeout, ready).await {
            Ok(true) => ready_ms.push(t0.elapsed().as_secs_f64() * 1000.0),
            _ => {
                let _ = child.kill().await;
                return Err(BenchError::Timeout {
                    run,
                    timeout: options.timeout,
                });
            }
        }
        let t1 = Instant::now();
        if let Ok(raw) = i32::try_from(pid) {
            let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
        }
        let _ = child.wait().await;
        shutdown_ms.push(t1.elapsed().as_secs_f64() * 1000.0);
    }
    server.abort();
    let summary = |v: &[f64]| Summary::of(v).unwrap_or_default();
    Ok(StartReport {
        start_to_ready: summary(&ready_ms),
        shutdown: summary(&shutdown_ms),
        baseline_spawn: summary(&baseline_ms),
    })
}
