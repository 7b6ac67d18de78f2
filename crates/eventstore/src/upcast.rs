//! Upcasters: stored events are never rewritten; instead, an old schema
//! version is migrated to the current one each time it is read.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::RecordedEvent;

type Step = Arc<dyn Fn(Value) -> Result<Value, String> + Send + Sync>;

/// A migration step failed on a stored payload.
#[derive(Debug, thiserror::Error)]
#[error("cannot upcast {event_type} v{from} at {stream_id}@{version}: {problem}")]
pub struct UpcastError {
    /// The event's type.
    pub event_type: String,
    /// The schema version the failing step starts from.
    pub from: u32,
    /// The event's stream.
    pub stream_id: String,
    /// The event's version in its stream.
    pub version: i64,
    /// What the step reported.
    pub problem: String,
}

/// The registered migration steps: `(event type, from version)` → a
/// function producing the payload at `from + 1`. Steps chain, so v1 → v3
/// runs the v1 and v2 steps.
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: HashMap<(String, u32), Step>,
}

impl std::fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upcasters")
            .field("steps", &self.steps.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Upcasters {
    /// No steps: events are read as stored.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the step migrating `event_type` from schema `from` to `from + 1`.
    pub fn register(
        mut self,
        event_type: &str,
        from: u32,
        step: impl Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Self {
        self.steps
            .insert((event_type.to_owned(), from), Arc::new(step));
        self
    }

    /// Migrates an event to the newest schema version its steps reach.
    pub fn upcast(&self, mut event: RecordedEvent) -> Result<RecordedEvent, UpcastError> {
        if self.steps.is_empty() {
            return Ok(event);
        }
        while let Some(step) = self
            .steps
            .get(&(event.event_type.clone(), event.schema_version))
        {
            let payload = std::mem::take(&mut event.payload);
            event.payload = step(payload).map_err(|problem| UpcastError {
                event_type: event.event_type.clone(),
                from: event.schema_version,
                stream_id: event.stream_id.clone(),
                version: event.version,
                problem,
            })?;
            event.schema_version += 1;
        }
        Ok(event)
    }
}
