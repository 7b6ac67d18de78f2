//! The inbox: once-only effects for handlers of at-least-once messages.
//!
//! The bus may deliver a message twice (a redelivery after a lost ack, or
//! the outbox relay publishing again after a crash). The inbox records each
//! message id in the same read-store transaction as the handler's changes:
//! a second delivery finds the id and changes nothing.

use std::sync::Arc;

use mortar_eventstore::{RecordedEvent, Upcasters};

use crate::Sql;
use crate::projection::{Projection, ProjectionError};
use crate::readstore::{ReadStore, ReadStoreError};

/// One consumer's inbox in a read store.
#[derive(Clone)]
pub struct Inbox {
    read: Arc<dyn ReadStore>,
    consumer: String,
    upcasters: Upcasters,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl Inbox {
    /// The inbox of `consumer` (e.g. the projection's or handler's name).
    pub fn new(read: Arc<dyn ReadStore>, consumer: impl Into<String>) -> Self {
        Inbox {
            read,
            consumer: consumer.into(),
            upcasters: Upcasters::new(),
        }
    }

    /// Migrates old event versions before [`Inbox::project`] hands them on.
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Runs `statements` unless `message_id` was handled before; returns
    /// whether they ran.
    pub async fn handle(
        &self,
        message_id: &str,
        statements: Vec<Sql>,
    ) -> Result<bool, ReadStoreError> {
        self.read
            .once(&self.consumer, message_id, None, statements)
            .await
    }

    /// Applies an event (e.g. received from the bus) to `projection` once,
    /// keyed by the event's id, and raises the consumer's checkpoint to its
    /// position so lag can be reported.
    pub async fn project(
        &self,
        projection: &dyn Projection,
        event: RecordedEvent,
    ) -> Result<bool, ProjectionError> {
        let event = self.upcasters.upcast(event)?;
        let statements = projection
            .handle(&event)
            .map_err(|problem| ProjectionError::Handler {
                name: projection.name().to_owned(),
                position: event.position,
                problem,
            })?;
        Ok(self
            .read
            .once(
                &self.consumer,
                &event.event_id(),
                Some(event.position),
                statements,
            )
            .await?)
    }
}
