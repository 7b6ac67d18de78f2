//! `mortar projections status` and `mortar projections rebuild <name>`.
//!
//! Projections live in the services, not in the node: the node only knows
//! which instances are ready and where. So both commands ask the node for
//! its status, then ask each ready service's `GET /v1/projections` (a
//! service without projections answers 404 and is skipped), and a rebuild
//! goes to the service that owns the projection
//! (`POST /v1/projections/{name}/rebuild`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use mortar_sdk::Problem;
use mortar_supervisor::{InstanceState, ServiceStatus};
use serde_json::Value;

use crate::cli::{ProjectionsRebuildArgs, ProjectionsStatusArgs};

/// One projection as a service reports it.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    service: String,
    /// The instance that answered (rebuilds go there).
    url: String,
    projection: String,
    position: i64,
    lag: Option<i64>,
}

/// The rows in a service's `/v1/projections` answer.
fn parse_listing(service: &str, url: &str, body: &Value) -> anyhow::Result<Vec<Row>> {
    let list = body["projections"].as_array().ok_or_else(|| {
        anyhow!("{service} at {url}: /v1/projections has no \"projections\" list: {body}")
    })?;
    list.iter()
        .map(|p| {
            let projection = p["name"]
                .as_str()
                .ok_or_else(|| anyhow!("{service} at {url}: a projection without a name: {p}"))?;
            Ok(Row {
                service: service.to_owned(),
                url: url.to_owned(),
                projection: projection.to_owned(),
                position: p["position"]
                    .as_i64()
                    .or_else(|| p["checkpoint"].as_i64())
                    .unwrap_or(0),
                lag: p["lag"].as_i64(),
            })
        })
        .collect()
}

fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<20} {:<24} {:>10} {:>8}\n",
        "SERVICE", "PROJECTION", "POSITION", "LAG"
    );
    for r in rows {
        let lag = r.lag.map_or_else(|| "-".to_owned(), |l| l.to_string());
        out.push_str(&format!(
            "{:<20} {:<24} {:>10} {:>8}\n",
            r.service, r.projection, r.position, lag
        ));
    }
    out
}

/// The row of projection `name`, or an error listing the known ones.
fn owner<'a>(rows: &'a [Row], name: &str) -> anyhow::Result<&'a Row> {
    rows.iter().find(|r| r.projection == name).ok_or_else(|| {
        let mut known: Vec<&str> = rows.iter().map(|r| r.projection.as_str()).collect();
        known.sort_unstable();
        known.dedup();
        if known.is_empty() {
            anyhow!("unknown projection {name:?}: no ready service reports any projection")
        } else {
            anyhow!("unknown projection {name:?}; known: {}", known.join(", "))
        }
    })
}

/// The URL of each service's first ready instance.
fn ready_instances(services: &[ServiceStatus]) -> Vec<(String, String)> {
    services
        .iter()
        .filter_map(|s| {
            s.instances
                .iter()
                .filter(|i| i.state == InstanceState::Ready)
                .find_map(|i| i.url())
                .map(|url| (s.name.clone(), url))
        })
        .collect()
}

/// A service's error answer as one line (its problem detail when it sent one).
fn failure(what: &str, status: http::StatusCode, body: &[u8]) -> anyhow::Error {
    let text = String::from_utf8_lossy(body);
    match serde_json::from_str::<Problem>(&text) {
        Ok(problem) => anyhow!("{what}: {problem}"),
        Err(_) => anyhow!("{what}: {status}: {}", text.trim()),
    }
}

/// Every projection of every ready service; services that cannot be asked
/// are reported on stderr and left out.
async fn collect(args_target: &crate::cli::TargetArgs) -> anyhow::Result<Vec<Row>> {
    let node = super::admin_client(&args_target.manifest.file, &args_target.node)?;
    let status = node.status().await?;
    let http = node_caller(args_target)?;
    let mut rows = Vec::new();
    for (service, url) in ready_instances(&status.services) {
        let resp = http
            .request(
                &service,
                &url,
                http::Method::GET,
                "/v1/projections",
                Default::default(),
                Duration::from_secs(15),
            )
            .await;
        let (code, body) = match resp {
            Ok(resp) => resp,
            Err(e) => {
                eprintln!("warning: {service} at {url} did not answer: {e}");
                continue;
            }
        };
        if code == http::StatusCode::NOT_FOUND {
            continue;
        }
        if !code.is_success() {
            let e = failure(&format!("{service} at {url}"), code, &body);
            eprintln!("warning: {e}");
            continue;
        }
        let body: Value = match serde_json::from_slice(&body) {
            Ok(body) => body,
            Err(e) => {
                eprintln!("warning: {service} at {url}: /v1/projections is not JSON: {e}");
                continue;
            }
        };
        match parse_listing(&service, &url, &body) {
            Ok(found) => rows.extend(found),
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    Ok(rows)
}

/// Services serve mTLS and admit the node: act as the node, with the
/// certificate it keeps (renewed) in `<data dir>/tls/node/`.
fn node_caller(target: &crate::cli::TargetArgs) -> anyhow::Result<mortar_tls::Caller> {
    let dir = super::data_dir(&target.manifest.file, target.node.data_dir.as_ref())
        .join("tls")
        .join("node");
    let tls = mortar_tls::InstanceTls::from_dir(&dir).with_context(|| {
        format!(
            "cannot read the node's certificate in {}; is the node running with this data directory (--data-dir)?",
            dir.display()
        )
    })?;
    Ok(mortar_tls::Caller::new(&tls)?)
}

pub(crate) async fn status(args: ProjectionsStatusArgs) -> anyhow::Result<ExitCode> {
    let rows = collect(&args.target).await?;
    if rows.is_empty() {
        bail!("no ready service reports a projection");
    }
    print!("{}", table(&rows));
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn rebuild(args: ProjectionsRebuildArgs) -> anyhow::Result<ExitCode> {
    let rows = collect(&args.target).await?;
    let row = owner(&rows, &args.name)?;
    let http = node_caller(&args.target)?;
    let endpoint = format!("/v1/projections/{}/rebuild", row.projection);
    let (code, body) = http
        .request(
            &row.service,
            &row.url,
            http::Method::POST,
            &endpoint,
            Default::default(),
            Duration::from_secs(3600),
        )
        .await
        .with_context(|| format!("{} at {} did not answer", row.service, row.url))?;
    if !code.is_success() {
        return Err(failure(
            &format!("rebuilding {} in {}", row.projection, row.service),
            code,
            &body,
        ));
    }
    let done: Value = serde_json::from_slice(&body)
        .with_context(|| format!("{endpoint} answered something that is not JSON"))?;
    println!("{}", rebuilt_line(&row.service, &row.projection, &done));
    Ok(ExitCode::SUCCESS)
}

fn rebuilt_line(service: &str, projection: &str, done: &Value) -> String {
    let num = |key: &str| {
        done[key]
            .as_i64()
            .map_or_else(|| "?".to_owned(), |n| n.to_string())
    };
    format!(
        "{projection} ({service}): rebuilt; {} event(s) replayed, now at position {}, took {} ms",
        num("replayed"),
        num("position"),
        num("took_ms")
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn rows() -> Vec<Row> {
        let body = json!({"projections": [
            {"name": "order-history", "position": 41, "head": 42, "lag": 1},
        ]});
        let mut rows = parse_listing("order-history", "http://127.0.0.1:1", &body).unwrap();
        let other = json!({"projections": [{"name": "stock", "checkpoint": 7, "lag": null}]});
        rows.extend(parse_listing("inventory", "http://127.0.0.1:2", &other).unwrap());
        rows
    }

    #[test]
    fn listings_become_a_table() {
        let rows = rows();
        assert_eq!(rows[1].position, 7);
        assert_eq!(rows[1].lag, None);
        let out = table(&rows);
        let lines: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines,
            [
                vec!["SERVICE", "PROJECTION", "POSITION", "LAG"],
                vec!["order-history", "order-history", "41", "1"],
                vec!["inventory", "stock", "7", "-"],
            ]
        );
        assert!(parse_listing("x", "u", &json!({"oops": 1})).is_err());
    }

    #[test]
    fn rebuild_finds_the_owner_or_lists_the_known_names() {
        let rows = rows();
        assert_eq!(owner(&rows, "stock").unwrap().service, "inventory");
        let err = owner(&rows, "nope").unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown projection \"nope\"; known: order-history, stock"
        );
        let err = owner(&[], "nope").unwrap_err().to_string();
        assert!(err.contains("no ready service"), "{err}");
    }

    #[test]
    fn the_rebuild_line_says_what_happened() {
        let done = json!({"name": "order-history", "replayed": 12, "position": 12, "took_ms": 30});
        assert_eq!(
            rebuilt_line("order-history", "order-history", &done),
            "order-history (order-history): rebuilt; 12 event(s) replayed, now at position 12, took 30 ms"
        );
    }
}
