//! Helpers shared by this crate's cross-process tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use mortar_bus::BrokerConfig;
use mortar_bus_server::EmbeddedBus;

/// A broker config on `dir` with small limits so tests can hit them.
pub(crate) fn config(dir: &std::path::Path, max_message_bytes: usize) -> BrokerConfig {
    BrokerConfig {
        data_dir: dir.to_path_buf(),
        max_message_bytes,
        nack_base_delay: Duration::from_millis(50),
        ack_deadline: Duration::from_secs(5),
        max_deliveries: 3,
        ..BrokerConfig::default()
    }
}

/// Starts a bus on 127.0.0.1 with a random port, with `topics` created.
pub(crate) async fn start(
    dir: &std::path::Path,
    max_message_bytes: usize,
    topics: &[&str],
) -> (String, EmbeddedBus) {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (bound, bus) = mortar_bus_server::run_embedded(config(dir, max_message_bytes), addr)
        .await
        .unwrap();
    for t in topics {
        bus.broker().create_topic(t).await.unwrap();
    }
    (format!("mortar://{bound}"), bus)
}

/// Waits until `check` is true, failing the test after a generous deadline.
pub(crate) async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
