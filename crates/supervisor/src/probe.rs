//! HTTP health probes against an instance's `/health/*` endpoints.

use std::time::Duration;

/// Probes health endpoints with short timeouts, so a hung instance reads as
/// unhealthy instead of hanging the supervisor.
#[derive(Debug, Clone)]
pub(crate) struct Prober {
    client: reqwest::Client,
    /// mTLS with the node's certificate, when instances serve TLS.
    tls: Option<mortar_tls::Caller>,
}

impl Prober {
    pub(crate) fn new(tls: Option<mortar_tls::Caller>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .pool_max_idle_per_host(1)
            .build()
            .unwrap_or_default();
        Prober { client, tls }
    }

    /// Whether `GET {base}{path}` of an instance of `service` answers 2xx.
    pub(crate) async fn ok(&self, service: &str, base: &str, path: &str) -> bool {
        if let Some(tls) = &self.tls {
            return match tls
                .request(
                    service,
                    base,
                    http::Method::GET,
                    path,
                    Default::default(),
                    Duration::from_secs(1),
                )
                .await
            {
                Ok((status, _)) => status.is_success(),
                Err(e) => {
                    tracing::trace!(error = %e, "probe failed");
                    false
                }
            };
        }
        match self.client.get(format!("{base}{path}")).send().await {
            Ok(resp) => resp.status().is_success(),
            Err(_) => false,
        }
    }
}
