//! CQRS and event sourcing on top of [`mortar_eventstore`].
//!
//! - [`Aggregate`]: the write model — state, `decide(command) → events or a
//!   domain error`, `apply(event)`. Pure and synchronous, so its rules are
//!   tested without a database.
//! - [`CommandHandler`]: loads an aggregate (snapshot + newer events,
//!   upcast), decides, appends with the version it loaded (optimistic
//!   concurrency), and on a conflict reloads and decides again, a bounded
//!   number of times; snapshots every N events.
//! - [`ReadStore`]: the read side's own database (a separate SQLite file or
//!   PostgreSQL schema). Changes are portable SQL statements ([`Sql`]),
//!   committed together with a checkpoint or an inbox entry, so each event
//!   takes effect exactly once.
//! - [`Projection`] and [`ProjectionRunner`]: turn events into read-model
//!   rows, catch up from a checkpoint, report lag, rebuild from scratch.
//! - [`Inbox`]: the same once-only effect for any message handler.
//! - [`replay_check`]: rebuilds a projection into a fresh read store and
//!   compares it row for row with an existing read model ([`compare`]).

mod aggregate;
pub mod compare;
mod handler;
mod inbox;
mod projection;
mod readstore;
mod replay_check;
mod sql;

pub use aggregate::{Aggregate, CodecError, DomainEvent, decode_event, encode_event};
pub use handler::{CommandError, CommandHandler, Executed};
pub use inbox::Inbox;
pub use projection::{Projection, ProjectionError, ProjectionRunner, ProjectionStatus};
pub use readstore::{
    Checkpoint, PostgresReadStore, ReadStore, ReadStoreError, SqliteReadStore, open_read_store,
};
pub use replay_check::{
    REPLAY_CHECK_ENV, ReplayBasis, ReplayCheck, ReplayReport, ReplaySpec, replay_check,
};
pub use sql::{Sql, SqlValue};

pub use mortar_eventstore as eventstore;
