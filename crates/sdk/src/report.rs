//! Reporting the bound port to the node.
//!
//! A service binds port 0 and lets the OS choose, so no port is ever
//! hardcoded; the supervisor learns which one was chosen from this report.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

#[derive(Serialize)]
struct Endpoint<'a> {
    service: &'a str,
    address: String,
    port: u16,
    pid: u32,
}

/// Headers carrying `token` as a bearer credential (none without one).
pub(crate) fn bearer_headers(token: Option<&str>) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(mut value) = token
        .filter(|t| !t.is_empty())
        .and_then(|t| reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).ok())
    {
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    headers
}

/// Posts the endpoint to `{node_url}/v1/instances/{instance}/endpoint`,
/// retrying briefly: the node may still be starting its admin API.
pub(crate) async fn report_endpoint(
    node_url: &str,
    service: &str,
    instance: &str,
    addr: SocketAddr,
    token: Option<&str>,
) -> Result<(), String> {
    let url = format!("{node_url}/v1/instances/{instance}/endpoint");
    let body = Endpoint {
        service,
        address: addr.ip().to_string(),
        port: addr.port(),
        pid: std::process::id(),
    };
    let client = reqwest::Client::builder()
        .default_headers(bearer_headers(token))
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    let mut delay = Duration::from_millis(20);
    let mut last_error = String::new();
    for _ in 0..10 {
        match client.post(&url).json(&body).send().await {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                // A 4xx will not change by retrying.
                if status.is_client_error() {
                    return Err(format!("{url} answered {status}: {text}"));
                }
                last_error = format!("{url} answered {status}: {text}");
            }
            Err(e) => last_error = format!("{url}: {e}"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
    Err(last_error)
}
