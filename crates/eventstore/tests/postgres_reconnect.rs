//! The PostgreSQL store after its sessions drop: the real server's
//! `pg_terminate_backend` (found by `application_name`), and a proxy that
//! cuts a session exactly before or after a `COMMIT`. An append caught by a
//! drop gets a clear error or — only when its transaction really committed —
//! success; later appends succeed; nothing acknowledged is lost.
//!
//! PostgreSQL only (the SQLite store has no connection to lose); skipped
//! when the server is unreachable, except under `CI=true`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mortar_eventstore::{
    AppendRequest, EventStore, ExpectedVersion, NewEvent, StoreError, is_store_connection_error,
};
use mortar_test_support::eventually;
use mortar_test_support::pgproxy::{Cut, PgProxy};
use mortar_test_support::stores::{
    Backend, TestStores, admin_session, schema_of, terminate_sessions,
};
use serde_json::json;

/// Generous: the machine is shared; this only turns a hang into a failure.
const PATIENCE: Duration = Duration::from_secs(60);

fn one(stream: &str, expected: i64) -> AppendRequest {
    AppendRequest::new(
        stream,
        ExpectedVersion::Exact(expected),
        vec![NewEvent::new("Ticked", json!({ "n": expected + 1 }))],
    )
}

async fn postgres() -> Option<(TestStores, String)> {
    // The store's log lines (lost, reconnecting, reconnected) in the output
    // of a failing test, or with `--no-capture`.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("mortar_eventstore=info")
        .try_init();
    let stores = TestStores::new(Backend::Postgres).await?;
    let schema = schema_of(&stores.events_url).expect("a schema in the URL");
    Some((stores, schema))
}

/// An append waiting for the store's write lock when its session is
/// terminated fails with `NotCommitted`; the same append then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_in_flight_when_the_writer_is_terminated_fails_clearly() {
    let Some((stores, schema)) = postgres().await else {
        return;
    };
    let store = mortar_eventstore::open(&stores.events_url).await.unwrap();
    store.append(one("s", 0)).await.unwrap();

    // Hold the store's write lock from outside, so the next batch stays in
    // flight (BEGIN sent, waiting for the lock) until we act.
    let admin = admin_session().await;
    admin
        .execute(
            "SELECT pg_advisory_lock(1836020340, hashtext($1))",
            &[&schema],
        )
        .await
        .unwrap();
    let pending = tokio::spawn({
        let store = store.clone();
        async move { store.append(one("s", 1)).await }
    });
    let writer = format!("mortar/{schema}/writer");
    eventually("the writer to wait for the lock", PATIENCE, || async {
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
                &[&writer],
            )
            .await
            .unwrap();
        (row.get::<_, i64>(0) == 1).then_some(())
    })
    .await;
    assert_eq!(terminate_sessions(&writer).await, 1);
    let error = pending.await.unwrap().unwrap_err();
    assert!(matches!(error, StoreError::NotCommitted(_)), "{error}");
    assert!(error.is_unavailable());
    admin
        .execute(
            "SELECT pg_advisory_unlock(1836020340, hashtext($1))",
            &[&schema],
        )
        .await
        .unwrap();

    // Nothing of it was written: the same append goes in now.
    let appended = store.append(one("s", 1)).await.unwrap();
    assert_eq!(appended.version, 2);
    let events = store.read_stream("s", 0).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].position, appended.position);
}

/// The server committed but the answer to `COMMIT` never arrived: the
/// writer asks the server and reports success (no false failure), once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_is_reported_committed() {
    let Some((_stores, schema)) = postgres().await else {
        return;
    };
    let proxy = PgProxy::start().await;
    let store = mortar_eventstore::open(&proxy.url(&schema)).await.unwrap();
    store.append(one("s", 0)).await.unwrap();

    proxy.arm(Cut::AfterCommit);
    let appended = store.append(one("s", 1)).await.unwrap();
    assert_eq!(proxy.cuts(), 1, "the COMMIT's answer was cut");
    assert_eq!(appended.version, 2);
    let events = store.read_stream("s", 0).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].position, appended.position);
    // The writer carries on on its new session.
    assert_eq!(store.append(one("s", 2)).await.unwrap().version, 3);
}

/// The session dropped with `COMMIT` sent but before the server ran it:
/// the writer finds the transaction aborted and says `NotCommitted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_lost_on_the_way_is_reported_not_committed() {
    let Some((_stores, schema)) = postgres().await else {
        return;
    };
    let proxy = PgProxy::start().await;
    let store = mortar_eventstore::open(&proxy.url(&schema)).await.unwrap();
    store.append(one("s", 0)).await.unwrap();

    proxy.arm(Cut::BeforeCommit);
    let error = store.append(one("s", 1)).await.unwrap_err();
    assert_eq!(proxy.cuts(), 1, "the COMMIT was cut");
    assert!(matches!(error, StoreError::NotCommitted(_)), "{error}");
    assert_eq!(store.read_stream("s", 0).await.unwrap().len(), 1);
    assert_eq!(store.append(one("s", 1)).await.unwrap().version, 2);
}

/// Eight writers append while every session of the store is terminated,
/// three times over: each failure is a clear connection error, appends
/// succeed after each kill, every acknowledged event is there at the
/// position it was acknowledged with, and positions stay dense.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_repeated_backend_kills() {
    let Some((stores, schema)) = postgres().await else {
        return;
    };
    let store = mortar_eventstore::open(&stores.events_url).await.unwrap();
    let acked: Arc<Mutex<BTreeMap<(String, i64), i64>>> = Arc::default();
    let failures = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (store, acked, failures, stop) =
                (store.clone(), acked.clone(), failures.clone(), stop.clone());
            tokio::spawn(async move {
                let stream = format!("w{w}");
                let mut version = 0;
                while !stop.load(Ordering::SeqCst) {
                    match store.append(one(&stream, version)).await {
                        Ok(appended) => {
                            version = appended.version;
                            acked
                                .lock()
                                .unwrap()
                                .insert((stream.clone(), version), appended.position);
                        }
                        Err(e) => {
                            assert!(
                                is_store_connection_error(&e)
                                    || matches!(e, StoreError::OutcomeUnknown(_)),
                                "not a clear connection error: {e}"
                            );
                            failures.fetch_add(1, Ordering::SeqCst);
                            // Whatever happened, the stream says where it is.
                            version = reload(&*store, &stream).await;
                        }
                    }
                }
            })
        })
        .collect();

    let acks = || acked.lock().unwrap().len();
    let mut killed = 0;
    for round in 0..3 {
        let before = acks();
        eventually(
            &format!("50 more acks before kill {round}"),
            PATIENCE,
            || async { (acks() >= before + 50).then_some(()) },
        )
        .await;
        killed += terminate_sessions(&format!("mortar/{schema}/%")).await;
    }
    let before = acks();
    eventually("50 more acks after the last kill", PATIENCE, || async {
        (acks() >= before + 50).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(killed >= 3, "terminated {killed} sessions");

    let acked = acked.lock().unwrap().clone();
    let all = store.read_all(0, 1_000_000).await.unwrap();
    let stored: BTreeMap<(String, i64), i64> = all
        .iter()
        .map(|e| ((e.stream_id.clone(), e.version), e.position))
        .collect();
    for (key, position) in &acked {
        assert_eq!(stored.get(key), Some(position), "acknowledged {key:?} lost");
    }
    let positions: Vec<i64> = all.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=all.len() as i64).collect::<Vec<_>>());
    eprintln!(
        "{} sessions terminated, {} appends acknowledged, {} failed clearly",
        killed,
        acked.len(),
        failures.load(Ordering::SeqCst)
    );
}

/// The stream's version, retrying while the store reconnects.
async fn reload(store: &dyn EventStore, stream: &str) -> i64 {
    for _ in 0..600 {
        match store.read_stream(stream, 0).await {
            Ok(events) => return events.last().map_or(0, |e| e.version),
            Err(e) => {
                assert!(is_store_connection_error(&e), "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    panic!("the store did not come back within {PATIENCE:?}");
}
