//! The CQRS suite, run on both backends (`sqlite::*` and `postgres::*`):
//! conflicts, upcasting, snapshots, the outbox, projection checkpoints,
//! the inbox, and rebuild == live.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mortar_cqrs::eventstore::{
    self, AppendRequest, EventStore, ExpectedVersion, Metadata, NewEvent, OutboxMessage,
    OutboxRelay, Publisher, RecordedEvent, Upcasters,
};
use mortar_cqrs::{
    Aggregate, CommandError, CommandHandler, DomainEvent, Inbox, Projection, ProjectionRunner,
    ReadStore, ReadStoreError, Sql, SqlValue, open_read_store,
};
use mortar_test_support::stores::TestStores;
use serde::{Deserialize, Serialize};
use serde_json::json;

// ---- a small aggregate with a real rule: the balance never goes negative

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Account {
    balance: i64,
    owner: String,
}

enum Cmd {
    Deposit(i64),
    Withdraw(i64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
enum Ev {
    Deposited { amount: i64, owner: String },
    Withdrawn { amount: i64 },
}

impl DomainEvent for Ev {
    fn schema_version(event_type: &str) -> u32 {
        if event_type == "Deposited" { 2 } else { 1 }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("insufficient funds: balance {0}")]
struct Insufficient(i64);

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = Cmd;
    type Event = Ev;
    type Error = Insufficient;

    fn decide(&self, command: &Cmd) -> Result<Vec<Ev>, Insufficient> {
        match command {
            Cmd::Deposit(amount) => Ok(vec![Ev::Deposited {
                amount: *amount,
                owner: "ann".into(),
            }]),
            Cmd::Withdraw(amount) if *amount > self.balance => Err(Insufficient(self.balance)),
            Cmd::Withdraw(amount) => Ok(vec![Ev::Withdrawn { amount: *amount }]),
        }
    }

    fn apply(&mut self, event: &Ev) {
        match event {
            Ev::Deposited { amount, owner } => {
                self.balance += amount;
                self.owner = owner.clone();
            }
            Ev::Withdrawn { amount } => self.balance -= amount,
        }
    }
}

/// v1 `Deposited` had `cents` and no owner.
fn upcasters() -> Upcasters {
    Upcasters::new().register("Deposited", 1, |mut v| {
        let cents = v.get("cents").and_then(|c| c.as_i64()).ok_or("no cents")?;
        v["amount"] = json!(cents);
        v["owner"] = json!("legacy");
        Ok(v)
    })
}

// ---- a projection: balances per account

struct Balances;

impl Projection for Balances {
    fn name(&self) -> &str {
        "balances"
    }
    fn schema(&self) -> &str {
        "CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY, balance BIGINT NOT NULL, events BIGINT NOT NULL)"
    }
    fn clear(&self) -> Vec<Sql> {
        vec![Sql::new("DELETE FROM balances")]
    }
    fn handle(&self, event: &RecordedEvent) -> Result<Vec<Sql>, String> {
        let delta = match event.event_type.as_str() {
            "Deposited" => event.payload["amount"].as_i64().ok_or("no amount")?,
            "Withdrawn" => -event.payload["amount"].as_i64().ok_or("no amount")?,
            _ => return Ok(vec![]),
        };
        Ok(vec![
            Sql::new(
                "INSERT INTO balances (account, balance, events) VALUES ($1, $2, 1)
                 ON CONFLICT (account) DO UPDATE SET balance = balances.balance + $2, events = balances.events + 1",
            )
            .bind(event.stream_id.as_str())
            .bind(delta),
        ])
    }
}

async fn dump(read: &Arc<dyn ReadStore>) -> Vec<Vec<SqlValue>> {
    read.query(
        "SELECT account, balance, events FROM balances ORDER BY account",
        vec![],
    )
    .await
    .unwrap()
}

async fn open(stores: &TestStores) -> (Arc<dyn EventStore>, Arc<dyn ReadStore>) {
    (
        eventstore::open(&stores.events_url).await.unwrap(),
        open_read_store(&stores.read_url).await.unwrap(),
    )
}

// ---- the tests

/// Many concurrent commands on one aggregate: none lost, versions dense.
async fn concurrent_commands_lose_no_update(stores: TestStores) {
    let (store, _) = open(&stores).await;
    let handler = CommandHandler::<Account>::new(store.clone()).max_attempts(1000);
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let h = handler.clone();
            tokio::spawn(async move {
                h.execute("a1", &Cmd::Deposit(1), &Metadata::default())
                    .await
            })
        })
        .collect();
    let mut retries = 0;
    for t in tasks {
        retries += t.await.unwrap().unwrap().retries;
    }
    let (state, version) = handler.load("a1").await.unwrap();
    assert_eq!(state.balance, 40);
    assert_eq!(version, 40);
    let events = store.read_stream("account-a1", 0).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=40).collect::<Vec<_>>()
    );
    eprintln!("{retries} conflicts retried to success");
}

/// With one attempt, each conflict is reported, and what succeeded is
/// exactly what the stream holds.
async fn conflicts_are_reported_when_not_retried(stores: TestStores) {
    let (store, _) = open(&stores).await;
    let handler = CommandHandler::<Account>::new(store.clone()).max_attempts(1);
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let h = handler.clone();
            tokio::spawn(async move {
                h.execute("a2", &Cmd::Deposit(1), &Metadata::default())
                    .await
            })
        })
        .collect();
    let (mut ok, mut conflicts) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(CommandError::Conflict { attempts: 1, .. }) => conflicts += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok + conflicts, 40);
    let (state, _) = handler.load("a2").await.unwrap();
    assert_eq!(state.balance, ok);
}

/// Two appends expecting the same version: exactly one wins.
async fn same_expected_version_only_one_wins(stores: TestStores) {
    let (store, _) = open(&stores).await;
    let append = |s: Arc<dyn EventStore>| async move {
        s.append(AppendRequest::new(
            "s",
            ExpectedVersion::Exact(0),
            vec![NewEvent::new("E", json!({}))],
        ))
        .await
    };
    let results = futures_join(vec![
        append(store.clone()),
        append(store.clone()),
        append(store.clone()),
    ])
    .await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.is_conflict())
    );
}

async fn futures_join<F: std::future::Future + Send + 'static>(fs: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// The domain rule holds and a refused command appends nothing.
async fn domain_errors_append_nothing(stores: TestStores) {
    let (store, _) = open(&stores).await;
    let handler = CommandHandler::<Account>::new(store.clone());
    handler
        .execute("a3", &Cmd::Deposit(5), &Metadata::default())
        .await
        .unwrap();
    let err = handler
        .execute("a3", &Cmd::Withdraw(6), &Metadata::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, CommandError::Domain(Insufficient(5))),
        "{err}"
    );
    assert_eq!(store.read_stream("account-a3", 0).await.unwrap().len(), 1);
}

/// A v1 event written long ago is read as v2 through the upcaster; the
/// metadata travels with events.
async fn old_versions_are_upcast_on_read(stores: TestStores) {
    let (store, _) = open(&stores).await;
    let mut old = NewEvent::new("Deposited", json!({"cents": 7}));
    old.metadata.correlation_id = Some("c-1".into());
    old.metadata.causation_id = Some("cmd-1".into());
    old.metadata.traceparent =
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
    store
        .append(AppendRequest::new(
            "account-old",
            ExpectedVersion::Exact(0),
            vec![old.clone()],
        ))
        .await
        .unwrap();
    let stored = store.read_stream("account-old", 0).await.unwrap();
    assert_eq!(stored[0].schema_version, 1);
    assert_eq!(stored[0].metadata, old.metadata);
    let handler = CommandHandler::<Account>::new(store.clone()).upcasters(upcasters());
    let (state, version) = handler.load("old").await.unwrap();
    assert_eq!(
        (state.balance, state.owner.as_str(), version),
        (7, "legacy", 1)
    );
    // Without the upcaster the old payload does not decode.
    assert!(
        CommandHandler::<Account>::new(store)
            .load("old")
            .await
            .is_err()
    );
}

/// Snapshots every 3 events; loading from one equals a full replay.
async fn snapshots_every_n_events(stores: TestStores) {
    let (store, _) = open(&stores).await;
    let handler = CommandHandler::<Account>::new(store.clone()).snapshot_every(3);
    for i in 1..=10 {
        handler
            .execute("a4", &Cmd::Deposit(i), &Metadata::default())
            .await
            .unwrap();
    }
    let snapshot = store.load_snapshot("account-a4").await.unwrap().unwrap();
    assert_eq!(snapshot.version, 9);
    assert_eq!(snapshot.state["balance"], 45);
    let from_snapshot = handler.load("a4").await.unwrap();
    let replayed = CommandHandler::<Account>::new(store)
        .load("a4")
        .await
        .unwrap();
    assert_eq!(from_snapshot.0, replayed.0);
    assert_eq!((from_snapshot.1, from_snapshot.0.balance), (10, 55));
}

#[derive(Default)]
struct Collect {
    got: Mutex<Vec<(String, OutboxMessage)>>,
    fail: Mutex<bool>,
}

#[async_trait]
impl Publisher for Collect {
    async fn publish(&self, topic: &str, messages: Vec<OutboxMessage>) -> Result<(), String> {
        if *self.fail.lock().unwrap() {
            return Err("bus away".into());
        }
        let mut got = self.got.lock().unwrap();
        got.extend(messages.into_iter().map(|m| (topic.to_owned(), m)));
        Ok(())
    }
}

/// Events and their messages commit together; the relay publishes them in
/// order and marks them sent; a failed publish leaves them pending.
async fn outbox_relays_committed_events(stores: TestStores) {
    let (store, _) = open(&stores).await;
    let handler = CommandHandler::<Account>::new(store.clone()).publish_to("accounts");
    for _ in 0..3 {
        handler
            .execute("a5", &Cmd::Deposit(2), &Metadata::default())
            .await
            .unwrap();
    }
    // A refused command leaves no message behind.
    handler
        .execute("a5", &Cmd::Withdraw(100), &Metadata::default())
        .await
        .unwrap_err();
    assert_eq!(store.outbox_pending(100).await.unwrap().len(), 3);

    let publisher = Arc::new(Collect::default());
    let relay = OutboxRelay::new(store.clone(), publisher.clone());
    *publisher.fail.lock().unwrap() = true;
    assert!(relay.run_once().await.is_err());
    assert_eq!(store.outbox_pending(100).await.unwrap().len(), 3);
    *publisher.fail.lock().unwrap() = false;
    assert_eq!(relay.run_once().await.unwrap(), 3);
    assert!(store.outbox_pending(100).await.unwrap().is_empty());
    let got = publisher.got.lock().unwrap().clone();
    let ids: Vec<_> = got
        .iter()
        .map(|(_, m)| {
            m.headers
                .iter()
                .find(|(k, _)| k == eventstore::EVENT_ID_HEADER)
                .unwrap()
                .1
                .clone()
        })
        .collect();
    assert_eq!(ids, ["account-a5@1", "account-a5@2", "account-a5@3"]);
    let first: RecordedEvent = serde_json::from_slice(&got[0].1.payload).unwrap();
    assert_eq!(
        (first.event_type.as_str(), first.version, first.position > 0),
        ("Deposited", 1, true)
    );
    assert!(
        got.iter()
            .all(|(t, m)| t == "accounts" && m.key.as_deref() == Some("account-a5"))
    );
}

/// A batch commits with its checkpoint: a runner that lost the race to
/// another applies nothing, so each event takes effect once.
async fn projection_checkpoint_is_once_only(stores: TestStores) {
    let (store, read) = open(&stores).await;
    let handler = CommandHandler::<Account>::new(store.clone());
    for _ in 0..5 {
        handler
            .execute("a6", &Cmd::Deposit(1), &Metadata::default())
            .await
            .unwrap();
    }
    let runner = ProjectionRunner::new(store.clone(), read.clone(), Arc::new(Balances));
    runner.init().await.unwrap();
    assert_eq!(runner.catch_up().await.unwrap(), 5);
    assert_eq!(runner.catch_up().await.unwrap(), 0);
    // A stale runner (started from 0) is refused as a whole.
    let stale = read
        .commit_projection(
            "balances",
            0,
            5,
            Balances
                .handle(&store.read_all(0, 1).await.unwrap()[0])
                .unwrap(),
        )
        .await;
    assert!(
        matches!(stale, Err(ReadStoreError::CheckpointMoved { .. })),
        "{stale:?}"
    );
    assert_eq!(
        dump(&read).await,
        vec![vec!["account-a6".into(), 5i64.into(), 5i64.into()]]
    );
    let status = runner.status().await.unwrap();
    assert_eq!((status.checkpoint, status.lag), (status.head, 0));
    // Two runners racing on the same read store still apply each event once.
    for _ in 0..20 {
        handler
            .execute("a6", &Cmd::Deposit(1), &Metadata::default())
            .await
            .unwrap();
    }
    let other =
        ProjectionRunner::new(store.clone(), read.clone(), Arc::new(Balances)).batch_size(3);
    let runner = runner.batch_size(2);
    let (a, b) = tokio::join!(catch_up_racing(&runner), catch_up_racing(&other));
    assert_eq!(a + b, 20);
    assert_eq!(
        dump(&read).await,
        vec![vec!["account-a6".into(), 25i64.into(), 25i64.into()]]
    );
}

async fn catch_up_racing(runner: &ProjectionRunner) -> u64 {
    let mut applied = 0;
    loop {
        match runner.step().await {
            Ok(0) => return applied,
            Ok(n) => applied += n as u64,
            Err(mortar_cqrs::ProjectionError::ReadStore(ReadStoreError::CheckpointMoved {
                ..
            })) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

/// A message delivered twice changes the read model once.
async fn inbox_drops_duplicates(stores: TestStores) {
    let (store, read) = open(&stores).await;
    read.migrate(Balances.schema()).await.unwrap();
    let handler = CommandHandler::<Account>::new(store.clone());
    handler
        .execute("a7", &Cmd::Deposit(3), &Metadata::default())
        .await
        .unwrap();
    let event = store.read_stream("account-a7", 0).await.unwrap().remove(0);
    let inbox = Inbox::new(read.clone(), "balances-from-bus");
    assert!(inbox.project(&Balances, event.clone()).await.unwrap());
    assert!(!inbox.project(&Balances, event.clone()).await.unwrap());
    assert_eq!(
        dump(&read).await,
        vec![vec!["account-a7".into(), 3i64.into(), 1i64.into()]]
    );
    assert_eq!(
        read.checkpoint("balances-from-bus").await.unwrap(),
        event.position
    );
    // Any handler: statements keyed by a message id run once.
    assert!(
        inbox
            .handle(
                "m-1",
                vec![Sql::new("UPDATE balances SET balance = balance * 2")]
            )
            .await
            .unwrap()
    );
    assert!(
        !inbox
            .handle(
                "m-1",
                vec![Sql::new("UPDATE balances SET balance = balance * 2")]
            )
            .await
            .unwrap()
    );
    assert_eq!(dump(&read).await[0][1], SqlValue::Int(6));
}

/// A projection kept live while commands run, then rebuilt from scratch
/// (in place, and into a fresh read store): all three are identical.
async fn rebuild_equals_live(mut stores: TestStores) {
    let (store, read) = open(&stores).await;
    let runner = Arc::new(
        ProjectionRunner::new(store.clone(), read.clone(), Arc::new(Balances))
            .wake_on(store.watch_head())
            .batch_size(7),
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let live = runner.clone().spawn(shutdown.clone());
    let handler = CommandHandler::<Account>::new(store.clone()).max_attempts(100);
    let tasks: Vec<_> = (0..8)
        .map(|c| {
            let h = handler.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    let id = format!("r{}", (c + i) % 5);
                    let cmd = if i % 4 == 3 {
                        Cmd::Withdraw(2)
                    } else {
                        Cmd::Deposit(i)
                    };
                    let _ = h.execute(&id, &cmd, &Metadata::default()).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let head = store.head().await.unwrap();
    let mut applied = runner.applied();
    tokio::time::timeout(Duration::from_secs(10), applied.wait_for(|p| *p >= head))
        .await
        .unwrap()
        .unwrap();
    shutdown.cancel();
    live.await.unwrap();
    let live_model = dump(&read).await;
    assert_eq!(live_model.len(), 5);

    assert_eq!(runner.rebuild().await.unwrap(), head as u64);
    assert_eq!(dump(&read).await, live_model);

    let fresh = open_read_store(&stores.another("fresh")).await.unwrap();
    let from_scratch = ProjectionRunner::new(store.clone(), fresh.clone(), Arc::new(Balances));
    from_scratch.rebuild().await.unwrap();
    assert_eq!(dump(&fresh).await, live_model);

    // And the model matches the aggregates themselves.
    let mut expected = BTreeMap::new();
    for i in 0..5 {
        let (state, _) = handler.load(&format!("r{i}")).await.unwrap();
        expected.insert(format!("account-r{i}"), state.balance);
    }
    let got: BTreeMap<_, _> = live_model
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_owned(), r[1].as_i64().unwrap()))
        .collect();
    assert_eq!(got, expected);
}

/// `read_all` returns every event once, in commit order, across streams.
async fn read_all_is_commit_ordered(stores: TestStores) {
    let (store, _) = open(&stores).await;
    let handler = CommandHandler::<Account>::new(store.clone()).max_attempts(100);
    let tasks: Vec<_> = (0..10)
        .map(|c| {
            let h = handler.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    h.execute(
                        &format!("o{}", c % 3),
                        &Cmd::Deposit(1),
                        &Metadata::default(),
                    )
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_all(after, 13).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        all.extend(page);
    }
    assert_eq!(all.len(), 100);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(store.head().await.unwrap(), after);
    for s in ["account-o0", "account-o1", "account-o2"] {
        let versions: Vec<_> = all
            .iter()
            .filter(|e| e.stream_id == s)
            .map(|e| e.version)
            .collect();
        assert_eq!(versions, (1..=versions.len() as i64).collect::<Vec<_>>());
    }
}

mortar_test_support::backend_suite!(
    concurrent_commands_lose_no_update,
    conflicts_are_reported_when_not_retried,
    same_expected_version_only_one_wins,
    domain_errors_append_nothing,
    old_versions_are_upcast_on_read,
    snapshots_every_n_events,
    outbox_relays_committed_events,
    projection_checkpoint_is_once_only,
    inbox_drops_duplicates,
    rebuild_equals_live,
    read_all_is_commit_ordered,
);
