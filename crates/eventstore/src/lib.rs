//! The mortar event store: an append-only log of domain events per stream,
//! behind one trait, [`EventStore`], with two backends chosen by URL
//! (`MORTAR_STORE_URL`):
//!
//! - `sqlite:///path/to/store.db` — embedded, the default: one writer thread
//!   group-commits every append queued at that moment in one transaction
//!   (`synchronous=FULL`), so each append is durable on return and many
//!   concurrent appends share one fsync;
//! - `postgres://user@host/db?schema=name` — for scale-out: the same group
//!   commit on one writer connection, in its own schema.
//!
//! Why one crate holds events, snapshots and the outbox: they must commit in
//! the same transaction. An append writes its events *and* the messages that
//! announce them (the transactional outbox); [`OutboxRelay`] later publishes
//! those messages to the bus, at least once, surviving restarts.
//!
//! Reading is `read_stream` (one aggregate) or `read_all` (everything, in
//! commit order, for projections); [`Upcasters`] migrate old event schema
//! versions as they are read.

mod batch;
mod error;
mod event;
mod open;
mod outbox;
mod pg;
mod postgres;
mod relay;
mod snapshot;
mod sqlite;
mod store;
mod upcast;

pub use error::StoreError;
pub use event::{Metadata, NewEvent, RecordedEvent};
pub use open::{STORE_URL_ENV, StoreUrl, open};
pub use outbox::{EVENT_ID_HEADER, OutboxMessage, PendingMessage};
pub use pg::{
    PgConn, PgExclusive, PgSession, PgTarget, Reconnect, describe as describe_postgres_error,
    is_connection_error, is_store_connection_error,
};
pub use postgres::{PostgresStore, migrate as migrate_schema};
pub use relay::{OutboxRelay, Publisher, RelayError};
pub use snapshot::Snapshot;
pub use sqlite::SqliteStore;
pub use store::{AppendRequest, Appended, EventSource, EventStore, ExpectedVersion};
pub use upcast::{UpcastError, Upcasters};
