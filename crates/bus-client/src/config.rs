//! How a client connects and buffers.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::ClientError;
use crate::url::BusUrl;

/// The default bound of the outbox file.
pub const DEFAULT_OUTBOX_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Settings of a [`crate::Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `mortar://HOST:PORT` (the embedded broker) or `nats://[USER:PASSWORD@]HOST:PORT`
    /// (NATS JetStream).
    pub url: String,
    /// Who connects: shows in the broker's logs and consumer names.
    pub name: String,
    /// The bearer token sent in the handshake.
    pub token: String,
    /// The outbox file; `None` means publishes fail while the bus is away.
    pub outbox: Option<PathBuf>,
    /// The outbox's bound; a publish that would exceed it fails with `OutboxFull`.
    pub outbox_max_bytes: u64,
    /// Without an outbox: how long a publish waits for a connection.
    pub publish_timeout: Duration,
    /// First delay between reconnection attempts; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest delay between reconnection attempts.
    pub max_backoff: Duration,
    /// NATS only (the embedded broker has its own setting): deliveries of a
    /// message before it goes to the dead-letter topic.
    pub max_deliveries: u32,
    /// NATS only: how long a delivered message may stay unacked before it
    /// is delivered again.
    pub ack_deadline: Duration,
    /// NATS only: the largest message (payload, key and headers) to accept;
    /// the server's `max_payload` lowers it further.
    pub max_message_bytes: usize,
    /// NATS only: replicas of the streams `create_topic` makes (1 on a
    /// single server; 3 in a cluster keeps a topic through a node's loss).
    pub nats_replicas: usize,
}

impl ClientConfig {
    /// Settings with defaults: no outbox, 10 s publish timeout, 50 ms–5 s backoff.
    pub fn new(url: impl Into<String>, name: impl Into<String>, token: impl Into<String>) -> Self {
        ClientConfig {
            url: url.into(),
            name: name.into(),
            token: token.into(),
            outbox: None,
            outbox_max_bytes: DEFAULT_OUTBOX_MAX_BYTES,
            publish_timeout: Duration::from_secs(10),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            max_deliveries: 5,
            ack_deadline: Duration::from_secs(30),
            max_message_bytes: 1024 * 1024,
            nats_replicas: 1,
        }
    }

    /// Settings from the environment the node gives every instance:
    /// `MORTAR_BUS_URL` (required), `MORTAR_BUS_TOKEN` (default empty),
    /// `MORTAR_BUS_OUTBOX` (an outbox file; default none),
    /// `MORTAR_BUS_OUTBOX_MAX_BYTES` (default 64 MiB), and for NATS
    /// `MORTAR_BUS_MAX_DELIVERIES` (5), `MORTAR_BUS_ACK_DEADLINE_MS` (30000),
    /// `MORTAR_BUS_MAX_MESSAGE_BYTES` (1 MiB) and `MORTAR_BUS_NATS_REPLICAS` (1).
    pub fn from_env(name: &str) -> Result<Self, ClientError> {
        Self::from_lookup(name, |key| std::env::var(key).ok())
    }

    /// [`ClientConfig::from_env`] with another source of variables (tests).
    pub fn from_lookup(
        name: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ClientError> {
        let url = lookup(crate::BUS_URL_ENV).ok_or_else(|| ClientError::InvalidUrl {
            url: String::new(),
            reason: format!(
                "{} is not set; set it to the bus, e.g. mortar://127.0.0.1:4222 (mortar up sets it for every service)",
                crate::BUS_URL_ENV
            ),
        })?;
        BusUrl::parse(&url)?;
        let mut config =
            ClientConfig::new(url, name, lookup("MORTAR_BUS_TOKEN").unwrap_or_default());
        if let Some(path) = lookup("MORTAR_BUS_OUTBOX").filter(|p| !p.is_empty()) {
            config.outbox = Some(PathBuf::from(path));
        }
        if let Some(max) = lookup("MORTAR_BUS_OUTBOX_MAX_BYTES") {
            config.outbox_max_bytes = max.parse().map_err(|e| ClientError::InvalidConfig {
                variable: "MORTAR_BUS_OUTBOX_MAX_BYTES",
                value: max.clone(),
                reason: format!("expected a number of bytes, e.g. 67108864: {e}"),
            })?;
        }
        let number = |variable: &'static str, example: &str| -> Result<Option<u64>, ClientError> {
            match lookup(variable) {
                None => Ok(None),
                Some(value) => match value.parse::<u64>() {
                    Ok(n) if n > 0 => Ok(Some(n)),
                    _ => Err(ClientError::InvalidConfig {
                        variable,
                        value,
                        reason: format!("expected a whole number above 0, e.g. {example}"),
                    }),
                },
            }
        };
        if let Some(n) = number("MORTAR_BUS_MAX_DELIVERIES", "5")? {
            config.max_deliveries = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(ms) = number("MORTAR_BUS_ACK_DEADLINE_MS", "30000")? {
            config.ack_deadline = Duration::from_millis(ms);
        }
        if let Some(n) = number("MORTAR_BUS_MAX_MESSAGE_BYTES", "1048576")? {
            config.max_message_bytes = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = number("MORTAR_BUS_NATS_REPLICAS", "3")? {
            config.nats_replicas = usize::try_from(n).unwrap_or(1);
        }
        Ok(config)
    }

    /// Buffers publishes in this file while the bus is unreachable.
    pub fn outbox(mut self, path: impl Into<PathBuf>) -> Self {
        self.outbox = Some(path.into());
        self
    }

    /// Sets the outbox's bound.
    pub fn outbox_max_bytes(mut self, max: u64) -> Self {
        self.outbox_max_bytes = max;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn reads_the_bus_from_the_environment() {
        let c = ClientConfig::from_lookup(
            "svc",
            lookup(&[
                ("MORTAR_BUS_URL", "mortar://127.0.0.1:9"),
                ("MORTAR_BUS_OUTBOX", "/tmp/o"),
                ("MORTAR_BUS_OUTBOX_MAX_BYTES", "1000"),
            ]),
        )
        .unwrap();
        assert_eq!(c.url, "mortar://127.0.0.1:9");
        assert_eq!(c.outbox, Some(PathBuf::from("/tmp/o")));
        assert_eq!(c.outbox_max_bytes, 1000);
    }

    #[test]
    fn missing_or_bad_variables_are_named() {
        let e = ClientConfig::from_lookup("svc", lookup(&[])).unwrap_err();
        assert!(e.to_string().contains("MORTAR_BUS_URL is not set"), "{e}");
        let e = ClientConfig::from_lookup(
            "svc",
            lookup(&[
                ("MORTAR_BUS_URL", "mortar://h:1"),
                ("MORTAR_BUS_OUTBOX_MAX_BYTES", "lots"),
            ]),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("MORTAR_BUS_OUTBOX_MAX_BYTES=\"lots\""),
            "{e}"
        );
    }
}
