//! The client against real local servers: balancing, retries, breaker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use mortar_resilience::{
    BreakerConfig, BreakerState, CallError, Client, ClientConfig, Endpoint, OutlierConfig,
    RetryConfig, StaticResolver,
};
use tokio::task::JoinSet;

/// A local instance whose behaviour tests can change, and which can be
/// killed outright (listener and every open connection).
struct Instance {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    failing: Arc<AtomicBool>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Behaviour {
    hits: Arc<AtomicU64>,
    failing: Arc<AtomicBool>,
    delay: Duration,
}

async fn handler(State(b): State<Behaviour>, headers: HeaderMap) -> (StatusCode, String) {
    b.hits.fetch_add(1, Ordering::Relaxed);
    if !b.delay.is_zero() {
        tokio::time::sleep(b.delay).await;
    }
    if b.failing.load(Ordering::Relaxed) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "broken".into());
    }
    let deadline = headers
        .get("x-mortar-deadline-ms")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    (StatusCode::OK, deadline)
}

async fn start(delay: Duration) -> Instance {
    let hits = Arc::new(AtomicU64::new(0));
    let failing = Arc::new(AtomicBool::new(false));
    let app = Router::new()
        .route("/x", get(handler))
        .with_state(Behaviour {
            hits: hits.clone(),
            failing: failing.clone(),
            delay,
        });
    let (addr, server) = mortar_test_support::http::serve_killable(app).await;
    Instance {
        addr,
        hits,
        failing,
        server,
    }
}

impl Instance {
    fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
    /// Aborting the accept task drops its JoinSet, which aborts every open
    /// connection: like a kill -9 of the process.
    fn kill(&self) {
        self.server.abort();
    }
}

fn get_x() -> Request<Bytes> {
    Request::get("/x").body(Bytes::new()).unwrap()
}

fn client(resolver: &Arc<StaticResolver>, config: ClientConfig) -> Client {
    Client::new(resolver.clone(), config)
}

async fn wait_until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_instance_gets_clearly_less_traffic() {
    let fast1 = start(Duration::ZERO).await;
    let fast2 = start(Duration::ZERO).await;
    let slow = start(Duration::from_millis(40)).await;
    let resolver = Arc::new(StaticResolver::new());
    resolver.set(
        "svc",
        vec![
            Endpoint::new("fast1", fast1.addr),
            Endpoint::new("fast2", fast2.addr),
            Endpoint::new("slow", slow.addr),
        ],
    );
    let client = client(&resolver, ClientConfig::default());
    let mut workers = JoinSet::new();
    for _ in 0..8 {
        let client = client.clone();
        workers.spawn(async move {
            for _ in 0..100 {
                let resp = client.call("svc", get_x()).await.unwrap();
                assert_eq!(resp.status(), 200);
                resp.into_body().collect().await.unwrap();
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r.unwrap();
    }
    let fast = (fast1.hits() + fast2.hits()) / 2;
    assert!(
        slow.hits() * 3 < fast,
        "slow got {} requests, fast ones {} and {}",
        slow.hits(),
        fast1.hits(),
        fast2.hits()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_instances_under_retried_gets_fails_no_call() {
    let instances = [
        start(Duration::ZERO).await,
        start(Duration::ZERO).await,
        start(Duration::ZERO).await,
    ];
    let resolver = Arc::new(StaticResolver::new());
    resolver.set(
        "svc",
        instances
            .iter()
            .enumerate()
            .map(|(i, inst)| Endpoint::new(format!("svc-{i}"), inst.addr))
            .collect(),
    );
    let client = client(&resolver, ClientConfig::default());
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..8 {
        let client = client.clone();
        let done = done.clone();
        workers.spawn(async move {
            for _ in 0..150 {
                let resp = client.call("svc", get_x()).await.unwrap();
                assert_eq!(resp.status(), 200);
                resp.into_body().collect().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    wait_until("some load before the kill", async || {
        done.load(Ordering::Relaxed) >= 200
    })
    .await;
    let before = instances[0].hits();
    instances[0].kill();
    while let Some(r) = workers.join_next().await {
        r.unwrap();
    }
    assert_eq!(done.load(Ordering::Relaxed), 1200);
    assert!(before > 0);
    let m = client.metrics().snapshot();
    assert_eq!(m.failures, 0);
    // Whatever the killed instance did not answer, the others did.
    assert!(instances[1].hits() + instances[2].hits() >= 1200 - instances[0].hits());
    assert!(m.retries >= 1, "the kill was noticed and retried: {m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_sheds_half_opens_and_closes() {
    let inst = start(Duration::ZERO).await;
    inst.failing.store(true, Ordering::Relaxed);
    let resolver = Arc::new(StaticResolver::new());
    resolver.set("svc", vec![Endpoint::new("svc-0", inst.addr)]);
    let config = ClientConfig {
        breaker: BreakerConfig {
            consecutive_failures: 3,
            cool_down: Duration::from_millis(300),
            ..BreakerConfig::default()
        },
        ..ClientConfig::default()
    };
    let client = client(&resolver, config);
    for _ in 0..3 {
        let resp = client.call("svc", get_x()).await.unwrap();
        assert_eq!(resp.status(), 500);
    }
    assert!(matches!(
        client.breaker_state("svc"),
        BreakerState::Open { .. }
    ));
    let hits = inst.hits();
    let err = client.call("svc", get_x()).await.unwrap_err();
    assert!(matches!(err, CallError::BreakerOpen { .. }), "{err}");
    assert!(err.to_string().contains("svc"));
    assert_eq!(inst.hits(), hits, "an open breaker sends nothing");

    // Still failing after the cool-down: the probe fails and it reopens.
    wait_until(
        "a failed probe",
        async || matches!(client.call("svc", get_x()).await, Ok(r) if r.status() == 500),
    )
    .await;
    assert!(matches!(
        client.breaker_state("svc"),
        BreakerState::Open { .. }
    ));

    inst.failing.store(false, Ordering::Relaxed);
    wait_until(
        "a successful probe",
        async || matches!(client.call("svc", get_x()).await, Ok(r) if r.status() == 200),
    )
    .await;
    assert_eq!(client.breaker_state("svc"), BreakerState::Closed);
    let m = client.metrics().snapshot();
    assert!(
        m.breaker_opened >= 2 && m.breaker_half_opened >= 2 && m.breaker_closed >= 1,
        "{m:?}"
    );
    assert!(m.breaker_rejected >= 1);
}

#[tokio::test]
async fn no_instances_is_reported_by_name() {
    let resolver = Arc::new(StaticResolver::new());
    let client = client(&resolver, ClientConfig::default());
    let err = client.call("ghost", get_x()).await.unwrap_err();
    assert!(matches!(err, CallError::NoInstances { .. }));
    assert!(err.to_string().contains("ghost"));
}

#[tokio::test]
async fn the_callee_sees_the_remaining_deadline() {
    let inst = start(Duration::ZERO).await;
    let resolver = Arc::new(StaticResolver::new());
    resolver.set("svc", vec![Endpoint::new("svc-0", inst.addr)]);
    let config = ClientConfig {
        per_try_timeout: Duration::from_secs(3),
        deadline: Duration::from_secs(2),
        ..ClientConfig::default()
    };
    let resp = client(&resolver, config)
        .call("svc", get_x())
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let ms: u64 = std::str::from_utf8(&body).unwrap().parse().unwrap();
    assert!(ms > 0 && ms <= 2000, "{ms}");
}

#[tokio::test]
async fn a_hung_instance_hits_the_deadline_with_a_named_error() {
    let inst = start(Duration::from_secs(30)).await;
    let resolver = Arc::new(StaticResolver::new());
    resolver.set("svc", vec![Endpoint::new("svc-0", inst.addr)]);
    let config = ClientConfig {
        per_try_timeout: Duration::from_millis(100),
        deadline: Duration::from_millis(250),
        retry: RetryConfig {
            max_retries: 10,
            ..RetryConfig::default()
        },
        ..ClientConfig::default()
    };
    let client = client(&resolver, config);
    let err = client.call("svc", get_x()).await.unwrap_err();
    assert!(
        matches!(err, CallError::Deadline { .. } | CallError::Timeout { .. }),
        "{err}"
    );
    assert!(inst.hits() >= 2, "the timed-out try was retried");
    assert!(client.metrics().snapshot().timeouts >= 1);
}

#[tokio::test]
async fn a_failing_instance_is_ejected_while_others_serve() {
    let bad = start(Duration::ZERO).await;
    bad.failing.store(true, Ordering::Relaxed);
    let good = start(Duration::ZERO).await;
    let resolver = Arc::new(StaticResolver::new());
    resolver.set(
        "svc",
        vec![
            Endpoint::new("bad", bad.addr),
            Endpoint::new("good", good.addr),
        ],
    );
    let config = ClientConfig {
        outlier: OutlierConfig {
            consecutive_failures: 3,
            ..OutlierConfig::default()
        },
        breaker: BreakerConfig {
            consecutive_failures: 1000,
            failure_rate: 1.1,
            ..BreakerConfig::default()
        },
        ..ClientConfig::default()
    };
    let client = client(&resolver, config);
    wait_until("the bad instance ejected", async || {
        let _ = client.call("svc", get_x()).await;
        client.metrics().snapshot().ejections == 1
    })
    .await;
    let bad_hits = bad.hits();
    for _ in 0..50 {
        let resp = client.call("svc", get_x()).await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(bad.hits(), bad_hits, "ejected instance got traffic");
}

#[tokio::test]
async fn the_fallback_answers_for_a_failed_call() {
    let resolver = Arc::new(StaticResolver::new());
    let fallback: mortar_resilience::Fallback = Arc::new(|service: &str, _: &CallError| {
        let body = http_body_util::Full::new(Bytes::from(format!("fallback for {service}")))
            .map_err(|never| match never {})
            .boxed();
        Some(http::Response::new(body))
    });
    let client = Client::with_fallback(resolver, ClientConfig::default(), fallback);
    let resp = client.call("svc", get_x()).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"fallback for svc");
    assert_eq!(client.metrics().snapshot().fallbacks, 1);
}

#[tokio::test]
async fn a_fork_shares_the_breaker_but_not_the_connections() {
    let inst = start(Duration::ZERO).await;
    inst.failing.store(true, Ordering::Relaxed);
    let resolver = Arc::new(StaticResolver::new());
    resolver.set("svc", vec![Endpoint::new("svc-0", inst.addr)]);
    let config = ClientConfig {
        breaker: BreakerConfig {
            consecutive_failures: 2,
            cool_down: Duration::from_secs(60),
            ..BreakerConfig::default()
        },
        ..ClientConfig::default()
    };
    let client = client(&resolver, config);
    let fork = client.fork();
    // One failure through each: together they trip the one breaker.
    for c in [&client, &fork] {
        let resp = c.call("svc", get_x()).await.unwrap();
        assert_eq!(resp.status(), 500);
    }
    assert!(matches!(
        fork.breaker_state("svc"),
        BreakerState::Open { .. }
    ));
    let err = client.call("svc", get_x()).await.unwrap_err();
    assert!(matches!(err, CallError::BreakerOpen { .. }), "{err}");
    assert_eq!(client.metrics().snapshot().breaker_opened, 1);
    assert!(Arc::ptr_eq(client.metrics(), fork.metrics()));
}
