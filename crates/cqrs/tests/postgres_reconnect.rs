//! Commands, a live projection and the outbox relay on PostgreSQL while
//! every session of the event store and the read store is terminated
//! (`pg_terminate_backend`, found by `application_name`): commands succeed
//! again, and the projection and the relay reconnect and catch up with no
//! event lost or applied twice.
//!
//! PostgreSQL only; skipped when the server is unreachable, except under
//! `CI=true`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mortar_cqrs::eventstore::{
    self, EVENT_ID_HEADER, Metadata, OutboxMessage, OutboxRelay, Publisher, RecordedEvent,
};
use mortar_cqrs::{
    Aggregate, CommandError, CommandHandler, DomainEvent, Projection, ProjectionRunner, Sql,
    SqlValue, open_read_store,
};
use mortar_test_support::eventually;
use mortar_test_support::stores::{Backend, TestStores, schema_of, terminate_sessions};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Generous: the machine is shared; this only turns a hang into a failure.
const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Counter {
    total: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
enum Ev {
    Added { n: i64 },
}

impl DomainEvent for Ev {}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Command = i64;
    type Event = Ev;
    type Error = Never;

    fn decide(&self, n: &i64) -> Result<Vec<Ev>, Never> {
        Ok(vec![Ev::Added { n: *n }])
    }

    fn apply(&mut self, Ev::Added { n }: &Ev) {
        self.total += n;
    }
}

struct Totals;

impl Projection for Totals {
    fn name(&self) -> &str {
        "totals"
    }
    fn schema(&self) -> &str {
        "CREATE TABLE IF NOT EXISTS totals (counter TEXT PRIMARY KEY, total BIGINT NOT NULL, events BIGINT NOT NULL)"
    }
    fn clear(&self) -> Vec<Sql> {
        vec![Sql::new("DELETE FROM totals")]
    }
    fn handle(&self, event: &RecordedEvent) -> Result<Vec<Sql>, String> {
        let n = event.payload["n"].as_i64().ok_or("no n")?;
        Ok(vec![
            Sql::new(
                "INSERT INTO totals (counter, total, events) VALUES ($1, $2, 1)
                 ON CONFLICT (counter) DO UPDATE SET total = totals.total + $2, events = totals.events + 1",
            )
            .bind(event.stream_id.as_str())
            .bind(n),
        ])
    }
}

#[derive(Default)]
struct Collect {
    ids: Mutex<Vec<String>>,
}

#[async_trait]
impl Publisher for Collect {
    async fn publish(&self, _topic: &str, messages: Vec<OutboxMessage>) -> Result<(), String> {
        let mut ids = self.ids.lock().unwrap();
        for m in messages {
            let id = m.headers.iter().find(|(k, _)| k == EVENT_ID_HEADER);
            ids.push(id.map(|(_, v)| v.clone()).unwrap_or_default());
        }
        Ok(())
    }
}

/// Runs `n` commands, retrying the ones a dropped session refused (a clear,
/// retryable error); returns how many were refused.
async fn commands(handler: &CommandHandler<Counter>, from: i64, n: i64) -> usize {
    let mut refused = 0;
    for i in from..from + n {
        let id = format!("c{}", i % 4);
        loop {
            match handler.execute(&id, &1, &Metadata::default()).await {
                Ok(_) => break,
                Err(CommandError::Store(e)) if e.is_unavailable() => {
                    refused += 1;
                    assert!(refused < 600, "the store did not come back: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("not a clear, retryable error: {e}"),
            }
        }
    }
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projection_and_relay_recover_after_every_session_is_terminated() {
    let Some(stores) = TestStores::new(Backend::Postgres).await else {
        return;
    };
    let store = eventstore::open(&stores.events_url).await.unwrap();
    let read = open_read_store(&stores.read_url).await.unwrap();
    let handler = CommandHandler::<Counter>::new(store.clone()).publish_to("counters");
    let runner = Arc::new(
        ProjectionRunner::new(store.clone(), read.clone(), Arc::new(Totals))
            .wake_on(store.watch_head()),
    );
    runner.init().await.unwrap();
    let shutdown = CancellationToken::new();
    let live = runner.clone().spawn(shutdown.clone());
    let publisher = Arc::new(Collect::default());
    let relay = OutboxRelay::new(store.clone(), publisher.clone()).spawn(shutdown.clone());

    let caught_up = |events: i64| {
        let (store, read, runner, publisher) = (
            store.clone(),
            read.clone(),
            runner.clone(),
            publisher.clone(),
        );
        async move {
            let status = runner.status().await.ok()?;
            let published: BTreeSet<String> =
                publisher.ids.lock().unwrap().iter().cloned().collect();
            let pending = store.outbox_pending(10).await.ok()?;
            let rows = read
                .query(
                    "SELECT COALESCE(SUM(events), 0)::BIGINT FROM totals",
                    vec![],
                )
                .await
                .ok()?;
            (status.head == events
                && status.lag == 0
                && published.len() == events as usize
                && pending.is_empty()
                && rows == vec![vec![SqlValue::Int(events)]])
            .then_some(())
        }
    };

    assert_eq!(commands(&handler, 0, 40).await, 0);
    eventually(
        "the projection and relay to take 40 events",
        PATIENCE,
        || caught_up(40),
    )
    .await;

    // Every session of both stores: the writer, the readers, and the read
    // store's transaction and query sessions.
    let events_schema = schema_of(&stores.events_url).unwrap();
    let read_schema = schema_of(&stores.read_url).unwrap();
    let killed = terminate_sessions(&format!("mortar/{events_schema}/%")).await
        + terminate_sessions(&format!("mortar/{read_schema}/%")).await;
    assert_eq!(killed, 6, "writer, 3 readers, read-writer, read-reader");

    commands(&handler, 40, 40).await;
    eventually(
        "the projection and relay to take 80 events",
        PATIENCE,
        || caught_up(80),
    )
    .await;

    // Each event took effect once in the read model, whatever was retried.
    let rows = read
        .query(
            "SELECT counter, total, events FROM totals ORDER BY counter",
            vec![],
        )
        .await
        .unwrap();
    let expected: Vec<Vec<SqlValue>> = (0..4)
        .map(|c| {
            vec![
                SqlValue::Text(format!("counter-c{c}")),
                SqlValue::Int(20),
                SqlValue::Int(20),
            ]
        })
        .collect();
    assert_eq!(rows, expected);
    shutdown.cancel();
    live.await.unwrap();
    relay.await.unwrap();
}
