//! The mortar bus client: what a service links to publish and consume.
//!
//! Why it is more than a socket: a service must keep working while the bus
//! is briefly away. [`Client`] reconnects on its own with backoff, and when
//! configured with an outbox ([`ClientConfig::outbox`]) a publish that cannot
//! reach the broker is appended to a local, fsynced [`Outbox`] file and
//! relayed in order once the broker is back — even after the service
//! restarts. Consuming is a handler per message: `Ok` acks it, `Err` nacks it
//! with exponential backoff, and flow control keeps at most `concurrency`
//! messages in the service at once.
//!
//! ```no_run
//! use mortar_bus_client::{Client, ClientConfig, Message};
//!
//! # async fn demo() -> Result<(), mortar_bus_client::ClientError> {
//! // MORTAR_BUS_URL=mortar://127.0.0.1:4222, optionally MORTAR_BUS_OUTBOX=/path
//! let bus = Client::from_env("billing").await?;
//! bus.create_topic("orders").await?;
//! bus.publish_json("orders", Some("order-7"), &serde_json::json!({"total": 12})).await?;
//! let _sub = bus
//!     .subscribe("orders", "billing", 8, |m: Message| async move {
//!         println!("order {} (attempt {})", m.id, m.attempt);
//!         Ok::<(), std::io::Error>(())
//!     })
//!     .await?;
//! # Ok(()) }
//! ```

mod client;
mod coalesce;
mod config;
mod error;
mod nats;
mod outbox;
mod relay;
mod session;
mod subscriber;
mod trace;
mod url;

pub use client::{Client, Published};
pub use config::{ClientConfig, DEFAULT_OUTBOX_MAX_BYTES};
pub use error::ClientError;
pub use mortar_bus_proto::{ErrorCode, Message, NewMessage};
pub use nats::{
    GroupBacklog, JetStream, TopicBacklog, jetstream_consumer, jetstream_stream,
    redact as redact_url,
};
pub use outbox::{Outbox, OutboxRecord};
pub use subscriber::Subscription;
pub use url::{BusUrl, Scheme};

/// The environment variable naming the bus, e.g. `mortar://127.0.0.1:4222`.
pub const BUS_URL_ENV: &str = "MORTAR_BUS_URL";
