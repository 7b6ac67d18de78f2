//! HTTP health probes against an instance's `/health/*` endpoints.

use std::time::Duration;

/// Probes health endpoints with short timeouts, so a hung instance reads as
/// unhealthy instead of hanging the supervisor.
#[derive(Debug, Clone)]
pub(crate) struct Prober {
    client: reqwest::Client,
}

impl Prober {
    pub(crate) fn new() -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .pool_max_idle_per_host(1)
            .build()
            .unwrap_or_default();
        Prober { client }
    }

    /// Whether `GET {base}{path}` answers 2xx.
    pub(crate) async fn ok(&self, base: &str, path: &str) -> bool {
        match self.client.get(format!("{base}{path}")).send().await {
            Ok(resp) => resp.status().is_success(),
            Err(_) => false,
        }
    }
}
