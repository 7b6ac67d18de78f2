//! One suite for the bus semantics a service relies on, run against the
//! embedded broker and against NATS JetStream: moving from `mortar://` to
//! `nats://` must change a URL, not behaviour.
//!
//! The NATS half uses the shared server on 127.0.0.1:4222 (skipped with a
//! printed reason where there is none, never in CI) and, where a test must
//! stop the server, a private `nats-server` of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::wait_until;
use mortar_bus::BrokerConfig;
use mortar_bus_client::{Client, ClientConfig, ErrorCode, Message, NewMessage, Published};
use mortar_bus_proto::dead_letter::{HEADER_ATTEMPTS, HEADER_ORIGINAL_TOPIC, HEADER_REASON};
use mortar_bus_server::EmbeddedBus;
use mortar_test_support::nats::{PrivateNats, shared_or_skip};

/// Settings both backends get, so their behaviour can be compared.
const MAX_DELIVERIES: u32 = 3;
const ACK_DEADLINE: Duration = Duration::from_secs(2);
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A bus under test.
enum Bus {
    Embedded {
        url: String,
        _bus: EmbeddedBus,
        _dir: tempfile::TempDir,
    },
    Nats {
        url: String,
    },
}

fn broker_config(dir: &std::path::Path) -> BrokerConfig {
    BrokerConfig {
        data_dir: dir.to_path_buf(),
        max_message_bytes: MAX_MESSAGE_BYTES,
        ack_deadline: ACK_DEADLINE,
        max_deliveries: MAX_DELIVERIES,
        ..BrokerConfig::default()
    }
}

impl Bus {
    async fn embedded() -> Bus {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (bound, bus) = mortar_bus_server::run_embedded(broker_config(dir.path()), addr)
            .await
            .unwrap();
        Bus::Embedded {
            url: format!("mortar://{bound}"),
            _bus: bus,
            _dir: dir,
        }
    }

    fn nats(test: &str) -> Option<Bus> {
        shared_or_skip(test).map(|url| Bus::Nats { url })
    }

    fn url(&self) -> &str {
        match self {
            Bus::Embedded { url, .. } | Bus::Nats { url } => url,
        }
    }

    async fn client(&self, name: &str) -> Client {
        Client::connect_with(config(self.url(), name))
            .await
            .unwrap()
    }
}

fn config(url: &str, name: &str) -> ClientConfig {
    let mut config = ClientConfig::new(url, name, "");
    config.max_deliveries = MAX_DELIVERIES;
    config.ack_deadline = ACK_DEADLINE;
    config.max_message_bytes = MAX_MESSAGE_BYTES;
    config
}

/// A topic name no other test (or earlier run on the shared NATS) uses.
fn fresh_topic(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("conf-{what}-{nanos}-{}", N.fetch_add(1, Ordering::Relaxed))
}

type Seen = Arc<Mutex<Vec<Message>>>;

/// Subscribes `group` with a handler that records every delivery and
/// answers with `outcome(&message)`.
async fn record(
    client: &Client,
    topic: &str,
    group: &str,
    concurrency: usize,
    outcome: impl Fn(&Message) -> Result<(), String> + Send + Sync + 'static,
) -> (Seen, mortar_bus_client::Subscription) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let outcome = Arc::new(outcome);
    let subscription = client
        .subscribe(topic, group, concurrency, move |m: Message| {
            let result = outcome(&m);
            sink.lock().unwrap().push(m);
            async move { result }
        })
        .await
        .unwrap();
    (seen, subscription)
}

fn payloads(seen: &Seen) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect()
}

async fn publish_numbered(client: &Client, topic: &str, count: usize) {
    for i in 0..count {
        let published = client
            .publish(topic, NewMessage::new(format!("m{i}")))
            .await
            .unwrap();
        assert!(matches!(published, Published::Durable(_)), "{published:?}");
    }
}

fn numbered(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("m{i}")).collect()
}

async fn delivers_in_publish_order_to_a_single_member(bus: &Bus) {
    let client = bus.client("order").await;
    let topic = fresh_topic("order");
    client.create_topic(&topic).await.unwrap();
    publish_numbered(&client, &topic, 50).await;
    let (seen, sub) = record(&client, &topic, "g", 1, |_| Ok(())).await;
    wait_until("50 deliveries", || seen.lock().unwrap().len() >= 50).await;
    assert_eq!(payloads(&seen), numbered(50));
    let ids: Vec<u64> = seen.lock().unwrap().iter().map(|m| m.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");
    sub.stop().await;
}

async fn members_of_a_group_compete_and_every_group_sees_everything(bus: &Bus) {
    let client = bus.client("compete").await;
    let topic = fresh_topic("compete");
    client.create_topic(&topic).await.unwrap();
    let slow = |_: &Message| {
        std::thread::sleep(Duration::from_millis(2));
        Ok(())
    };
    let (a, sub_a) = record(&client, &topic, "workers", 1, slow).await;
    let other = bus.client("compete-2").await;
    let (b, sub_b) = record(&other, &topic, "workers", 1, slow).await;
    let (audit, sub_audit) = record(&client, &topic, "audit", 8, |_| Ok(())).await;
    publish_numbered(&client, &topic, 200).await;
    wait_until("the workers to share 200 messages", || {
        a.lock().unwrap().len() + b.lock().unwrap().len() >= 200
    })
    .await;
    wait_until("the audit group to see 200", || {
        audit.lock().unwrap().len() >= 200
    })
    .await;
    let mut shared = payloads(&a);
    shared.extend(payloads(&b));
    shared.sort();
    let mut expected = numbered(200);
    expected.sort();
    assert_eq!(shared, expected, "each message went to exactly one worker");
    assert!(
        !a.lock().unwrap().is_empty() && !b.lock().unwrap().is_empty(),
        "both members got work: {} and {}",
        a.lock().unwrap().len(),
        b.lock().unwrap().len()
    );
    let mut audited = payloads(&audit);
    audited.sort();
    assert_eq!(audited, expected);
    for sub in [sub_a, sub_b, sub_audit] {
        sub.stop().await;
    }
}

async fn a_failed_message_comes_back_after_its_nack_delay(bus: &Bus) {
    let client = bus.client("nack").await;
    let topic = fresh_topic("nack");
    client.create_topic(&topic).await.unwrap();
    let (seen, sub) = record(&client, &topic, "g", 4, |m| {
        if m.attempt == 1 {
            Err("not yet".to_owned())
        } else {
            Ok(())
        }
    })
    .await;
    let started = Instant::now();
    publish_numbered(&client, &topic, 1).await;
    wait_until("the redelivery", || seen.lock().unwrap().len() >= 2).await;
    let elapsed = started.elapsed();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].attempt, 1);
    assert_eq!(seen[1].attempt, 2);
    assert_eq!(seen[0].id, seen[1].id, "the same message again");
    // The first nack asks for 100 ms (doubling per attempt).
    assert!(
        elapsed >= Duration::from_millis(90),
        "redelivered after {elapsed:?}, before the nack delay"
    );
    sub.stop().await;
}

async fn a_message_out_of_deliveries_goes_to_the_dead_letter_topic(bus: &Bus) {
    let client = bus.client("dlq").await;
    let topic = fresh_topic("dlq");
    client.create_topic(&topic).await.unwrap();
    let (seen, sub) = record(&client, &topic, "g", 4, |_| Err("cannot parse".to_owned())).await;
    let (dead, dlq_sub) = record(&client, &format!("{topic}.dlq"), "ops", 4, |_| Ok(())).await;
    client
        .publish(&topic, NewMessage::new("poison").with_header("trace", "t1"))
        .await
        .unwrap();
    wait_until("the dead letter", || !dead.lock().unwrap().is_empty()).await;
    let letter = dead.lock().unwrap()[0].clone();
    assert_eq!(&letter.payload[..], b"poison");
    assert_eq!(letter.header(HEADER_REASON), Some("cannot parse"));
    assert_eq!(
        letter.header(HEADER_ATTEMPTS),
        Some(MAX_DELIVERIES.to_string().as_str())
    );
    assert_eq!(letter.header(HEADER_ORIGINAL_TOPIC), Some(topic.as_str()));
    assert_eq!(letter.header("trace"), Some("t1"));
    assert_eq!(seen.lock().unwrap().len(), MAX_DELIVERIES as usize);
    // It does not come back to the group.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(seen.lock().unwrap().len(), MAX_DELIVERIES as usize);
    sub.stop().await;
    dlq_sub.stop().await;
}

async fn an_unacked_message_comes_back_after_the_ack_deadline(bus: &Bus) {
    let client = bus.client("deadline").await;
    let topic = fresh_topic("deadline");
    client.create_topic(&topic).await.unwrap();
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let sub = client
        .subscribe(&topic, "g", 4, move |m: Message| {
            let attempt = m.attempt;
            sink.lock().unwrap().push(m);
            async move {
                if attempt == 1 {
                    // Hangs past the ack deadline: the broker must not wait for it.
                    tokio::time::sleep(ACK_DEADLINE * 4).await;
                }
                Ok::<(), String>(())
            }
        })
        .await
        .unwrap();
    publish_numbered(&client, &topic, 1).await;
    wait_until("the redelivery after the deadline", || {
        seen.lock().unwrap().iter().any(|m| m.attempt == 2)
    })
    .await;
    drop(sub);
}

async fn headers_and_key_arrive_unchanged_and_in_order(bus: &Bus) {
    let client = bus.client("headers").await;
    let topic = fresh_topic("headers");
    client.create_topic(&topic).await.unwrap();
    let message = NewMessage::new("body")
        .with_key("order-7")
        .with_header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .with_header("content-type", "application/json")
        .with_header("x-b", "2")
        .with_header("x-a", "1")
        .with_header("x-b", "3");
    client.publish(&topic, message.clone()).await.unwrap();
    let (seen, sub) = record(&client, &topic, "g", 1, |_| Ok(())).await;
    wait_until("the delivery", || !seen.lock().unwrap().is_empty()).await;
    let got = seen.lock().unwrap()[0].clone();
    assert_eq!(got.key.as_deref(), Some("order-7"));
    assert_eq!(got.headers, message.headers);
    assert_eq!(got.payload, message.payload);
    assert_eq!(got.topic, topic);
    sub.stop().await;
}

async fn an_oversize_message_is_refused_and_nothing_is_published(bus: &Bus) {
    let client = bus.client("oversize").await;
    let topic = fresh_topic("oversize");
    client.create_topic(&topic).await.unwrap();
    let too_big = NewMessage::new(vec![b'x'; MAX_MESSAGE_BYTES + 1]);
    let error = client.publish(&topic, too_big).await.unwrap_err();
    match &error {
        mortar_bus_client::ClientError::Broker { code, message } => {
            assert_eq!(*code, ErrorCode::MessageTooLarge, "{message}");
            assert!(
                message.contains(&MAX_MESSAGE_BYTES.to_string()),
                "{message}"
            );
        }
        other => panic!("expected a too-large refusal, got {other}"),
    }
    let unknown = client
        .publish(&fresh_topic("never-created"), NewMessage::new("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            unknown,
            mortar_bus_client::ClientError::Broker {
                code: ErrorCode::UnknownTopic,
                ..
            }
        ),
        "{unknown}"
    );
    publish_numbered(&client, &topic, 1).await;
    let (seen, sub) = record(&client, &topic, "g", 1, |_| Ok(())).await;
    wait_until("the one good message", || !seen.lock().unwrap().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        payloads(&seen),
        ["m0"],
        "the refused message was not stored"
    );
    sub.stop().await;
}

/// Publishes while the bus is not running (they buffer in the outbox),
/// restarts the client, then starts the bus: all arrive, in order.
async fn outbox_buffers_while_the_bus_is_away(url: &str, start_bus: impl AsyncFnOnce()) {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let topic = fresh_topic("outbox");
    {
        let client = Client::connect_with(config(url, "outbox").outbox(&outbox))
            .await
            .unwrap();
        for i in 0..20 {
            let published = client
                .publish(&topic, NewMessage::new(format!("m{i}")))
                .await
                .unwrap();
            assert_eq!(published, Published::Buffered);
        }
        client.close();
    }
    start_bus().await;
    let client = Client::connect_with(config(url, "outbox").outbox(&outbox))
        .await
        .unwrap();
    client.create_topic(&topic).await.unwrap();
    let (seen, sub) = record(&client, &topic, "g", 1, |_| Ok(())).await;
    wait_until("the buffered publishes", || {
        seen.lock().unwrap().len() >= 20
    })
    .await;
    assert_eq!(payloads(&seen), numbered(20));
    wait_until("the outbox to drain", || {
        client.outbox().is_some_and(|o| o.is_empty())
    })
    .await;
    sub.stop().await;
}

/// One test per scenario and backend.
macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let bus = super::Bus::embedded().await;
                    super::$scenario(&bus).await;
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let Some(bus) = super::Bus::nats(stringify!($scenario)) else { return };
                    super::$scenario(&bus).await;
                }
            )*
        }
    };
}

conformance!(
    delivers_in_publish_order_to_a_single_member,
    members_of_a_group_compete_and_every_group_sees_everything,
    a_failed_message_comes_back_after_its_nack_delay,
    a_message_out_of_deliveries_goes_to_the_dead_letter_topic,
    an_unacked_message_comes_back_after_the_ack_deadline,
    headers_and_key_arrive_unchanged_and_in_order,
    an_oversize_message_is_refused_and_nothing_is_published,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_outbox_buffers_while_the_bus_is_away() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut running = None;
    outbox_buffers_while_the_bus_is_away(&format!("mortar://{addr}"), async || {
        running = Some(
            mortar_bus_server::run_embedded(broker_config(dir.path()), addr)
                .await
                .unwrap(),
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outbox_buffers_while_the_bus_is_away() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut server) = PrivateNats::new(dir.path()) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nats-server is not installed, and CI=true requires the NATS tests to run"
        );
        eprintln!(
            "SKIPPED nats_outbox_buffers_while_the_bus_is_away: nats-server is not installed"
        );
        return;
    };
    let url = server.url();
    outbox_buffers_while_the_bus_is_away(&url, async || server.start()).await;
}
