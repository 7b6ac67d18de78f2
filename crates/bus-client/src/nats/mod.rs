//! The NATS JetStream backend: the same client semantics on an existing
//! distributed engine, chosen by a `nats://` bus URL.
//!
//! Topics are file-storage streams, groups durable pull consumers with
//! explicit acks. What JetStream lacks is done here, in the client: a nack
//! with an exponential delay, and dead-lettering to `<topic>.dlq` with the
//! same headers as the embedded broker once a message used up its
//! deliveries (by failures or by missed ack deadlines).

mod consume;
mod names;
mod pull;

use std::time::Duration;

use async_nats::header::HeaderMap;
use async_nats::jetstream::{self, context, stream};
use mortar_bus_proto::{ErrorCode, Message, NewMessage};

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::session::RequestError;

pub(crate) use consume::subscribe;
pub use pull::{GroupBacklog, JetStream, TopicBacklog};

/// The JetStream stream that holds `topic` on a `nats://` bus (for
/// operators and tools: `nats stream info $(…)`).
pub fn jetstream_stream(topic: &str) -> String {
    names::stream(topic)
}

/// The durable JetStream consumer that serves `group` on a `nats://` bus
/// (for operators and autoscalers that read its lag, such as KEDA).
pub fn jetstream_consumer(group: &str) -> String {
    names::durable(group)
}

/// The header that carries a message's key (JetStream messages have none).
const KEY_HEADER: &str = "x-mortar-key";

/// The header that records the order of the other headers' names: NATS
/// keeps headers in a map, mortar promises them in order.
const ORDER_HEADER: &str = "x-mortar-header-order";

/// A connection to JetStream and the settings the client emulates on it.
#[derive(Debug)]
pub(crate) struct NatsLink {
    /// The URL with any credentials removed, for messages and logs.
    pub(crate) url: String,
    client: async_nats::Client,
    js: jetstream::Context,
    replicas: usize,
    pub(crate) max_deliveries: u32,
    pub(crate) ack_deadline: Duration,
    max_message_bytes: usize,
}

/// `url` with any `user:password@` removed, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Refuses a topic or group name the embedded broker would refuse too.
fn check_name(what: &str, name: &str) -> Result<(), ClientError> {
    if mortar_bus_proto::names::is_valid_name(name) {
        return Ok(());
    }
    Err(ClientError::Broker {
        code: ErrorCode::InvalidName,
        message: format!(
            "invalid {what} name {name:?}: use 1 to 128 of a-z 0-9 . _ - (not starting with .)"
        ),
    })
}

/// Asks JetStream for the account's info: no answer means JetStream is off
/// (or this account may not use it), which would otherwise show up later as
/// a confusing "no responders" on the first publish.
async fn check_jetstream(client: &async_nats::Client, url: &str) -> Result<(), ClientError> {
    let refused = |why: String| ClientError::Handshake {
        code: ErrorCode::Unavailable,
        message: format!(
            "NATS at {url} does not serve JetStream ({why}); start nats-server with -js (JetStream enabled) and check the account's permissions"
        ),
    };
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        client.request("$JS.API.INFO", bytes::Bytes::new()),
    )
    .await
    .map_err(|_| refused("no answer within 5 s".to_owned()))?
    .map_err(|e| refused(e.to_string()))?;
    let info: serde_json::Value = serde_json::from_slice(&answer.payload)
        .map_err(|e| refused(format!("unreadable answer: {e}")))?;
    match info.get("error") {
        Some(error) => Err(refused(error.to_string())),
        None => Ok(()),
    }
}

impl NatsLink {
    /// Connects and checks that JetStream answers. With `wait_for_server`
    /// (an outbox is configured) an unreachable server is not an error: the
    /// connection is made in the background and publishes buffer meanwhile.
    pub(crate) async fn connect(
        config: &ClientConfig,
        wait_for_server: bool,
    ) -> Result<NatsLink, ClientError> {
        let url = redact(&config.url);
        let mut options = async_nats::ConnectOptions::new()
            .name(&config.name)
            .connection_timeout(Duration::from_secs(5));
        if !config.token.is_empty() {
            options = options.token(config.token.clone());
        }
        if wait_for_server {
            options = options.retry_on_initial_connect();
        }
        let client =
            options
                .connect(config.url.as_str())
                .await
                .map_err(|e| ClientError::Unavailable {
                    url: url.clone(),
                    reason: format!("cannot connect to NATS: {e}"),
                })?;
        let js = jetstream::new(client.clone());
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        if connected {
            check_jetstream(&client, &url).await?;
        }
        let server_limit = client.server_info().max_payload;
        let max_message_bytes = if server_limit == 0 {
            config.max_message_bytes
        } else {
            // Headers travel inside max_payload too; keep room for ours.
            config
                .max_message_bytes
                .min(server_limit.saturating_sub(1024))
        };
        Ok(NatsLink {
            url,
            client,
            js,
            replicas: config.nats_replicas,
            max_deliveries: config.max_deliveries,
            ack_deadline: config.ack_deadline,
            max_message_bytes,
        })
    }

    /// Whether the connection to the server is up right now.
    pub(crate) fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Creates the streams of `topic` and of its dead-letter topic; idempotent.
    pub(crate) async fn create_topic(&self, topic: &str) -> Result<(), ClientError> {
        check_name("topic", topic)?;
        for name in [
            topic.to_owned(),
            mortar_bus_proto::dead_letter::dlq_topic(topic),
        ] {
            self.js
                .get_or_create_stream(stream::Config {
                    name: names::stream(&name),
                    subjects: vec![names::subject(&name)],
                    storage: stream::StorageType::File,
                    num_replicas: self.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| ClientError::Broker {
                    code: ErrorCode::Unavailable,
                    message: format!(
                        "cannot create the stream of topic {name:?} on {}: {e}",
                        self.url
                    ),
                })?;
        }
        Ok(())
    }

    /// Publishes `messages` in order and returns their stream sequences once
    /// JetStream acknowledged every one. Not atomic: a failure part-way
    /// leaves the earlier messages published (see docs/nats.md).
    pub(crate) async fn publish(
        &self,
        topic: &str,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<u64>, RequestError> {
        if let Some(m) = messages.iter().find(|m| m.size() > self.max_message_bytes) {
            return Err(RequestError::Refused(ClientError::Broker {
                code: ErrorCode::MessageTooLarge,
                message: format!(
                    "a message of {} bytes exceeds the limit of {} bytes (max_message_bytes, and the NATS server's max_payload); send a reference to the data instead",
                    m.size(),
                    self.max_message_bytes
                ),
            }));
        }
        let subject = names::subject(topic);
        let mut acks = Vec::with_capacity(messages.len());
        for message in messages {
            let ack = self
                .js
                .publish_with_headers(subject.clone(), headers_of(&message), message.payload)
                .await
                .map_err(|e| self.publish_error(topic, e))?;
            acks.push(ack);
        }
        let mut ids = Vec::with_capacity(acks.len());
        for ack in acks {
            ids.push(
                ack.await
                    .map_err(|e| self.publish_error(topic, e))?
                    .sequence,
            );
        }
        Ok(ids)
    }

    fn publish_error(&self, topic: &str, e: context::PublishError) -> RequestError {
        match e.kind() {
            context::PublishErrorKind::StreamNotFound => {
                RequestError::Refused(ClientError::Broker {
                    code: ErrorCode::UnknownTopic,
                    message: format!(
                        "topic {topic:?} does not exist on {}; create it first",
                        self.url
                    ),
                })
            }
            context::PublishErrorKind::MaxPayloadExceeded => {
                RequestError::Refused(ClientError::Broker {
                    code: ErrorCode::MessageTooLarge,
                    message: format!(
                        "the NATS server at {} refused the message as too large: {e}",
                        self.url
                    ),
                })
            }
            _ => RequestError::Disconnected,
        }
    }

    /// Publishes one message; dead letters go this way before their
    /// original is acked.
    pub(crate) async fn publish_one(
        &self,
        topic: &str,
        message: NewMessage,
    ) -> Result<u64, RequestError> {
        let ids = self.publish(topic, vec![message]).await?;
        ids.first().copied().ok_or(RequestError::Disconnected)
    }
}

/// JetStream headers for `message`: its own headers plus its key.
fn headers_of(message: &NewMessage) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in &message.headers {
        headers.append(name.as_str(), value.as_str());
    }
    if let Some(key) = &message.key {
        headers.insert(KEY_HEADER, key.as_str());
    }
    if message.headers.len() > 1 && message.headers.iter().all(|(n, _)| !n.contains(',')) {
        let order: Vec<&str> = message.headers.iter().map(|(n, _)| n.as_str()).collect();
        headers.insert(ORDER_HEADER, order.join(","));
    }
    headers
}

/// A delivered JetStream message as the client's [`Message`].
pub(crate) fn to_message(topic: &str, message: &jetstream::Message) -> Option<Message> {
    let info = message.info().ok()?;
    let mut key = None;
    let mut order = String::new();
    // Values per name, in order; NATS keeps names in a map.
    let mut by_name: Vec<(String, std::collections::VecDeque<String>)> = Vec::new();
    if let Some(map) = &message.headers {
        for (name, values) in map.iter() {
            let name: &str = name.as_ref();
            let mut values = values.iter().map(|v| v.as_str().to_owned());
            match name {
                KEY_HEADER => key = values.next_back(),
                ORDER_HEADER => order = values.next_back().unwrap_or_default(),
                _ => by_name.push((name.to_owned(), values.collect())),
            }
        }
    }
    let mut headers = Vec::new();
    for name in order.split(',').filter(|n| !n.is_empty()) {
        if let Some((_, values)) = by_name.iter_mut().find(|(n, _)| n == name)
            && let Some(value) = values.pop_front()
        {
            headers.push((name.to_owned(), value));
        }
    }
    for (name, values) in by_name {
        headers.extend(values.into_iter().map(|v| (name.clone(), v)));
    }
    let publish_time_ms =
        u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    Some(Message {
        id: info.stream_sequence,
        topic: topic.to_owned(),
        key,
        headers,
        payload: message.payload.clone(),
        publish_time_ms,
        attempt: u32::try_from(info.delivered).unwrap_or(u32::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_messages() {
        assert_eq!(
            redact("nats://app:s3cret@10.0.0.1:4222"),
            "nats://***@10.0.0.1:4222"
        );
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }
}
