//! Liveness and readiness.
//!
//! `/health/live` answers 200 while the process can serve at all; a
//! supervisor restarts an instance that stops answering it. `/health/ready`
//! answers 200 only while every dependency check passes and the instance is
//! not draining, so that traffic goes only where it can be served.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::{BoxFuture, join_all};
use serde_json::json;

use crate::problem::Problem;

/// How long one dependency check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The readiness of one instance: named dependency checks and a draining flag.
///
/// Cheap to clone; all clones share state.
#[derive(Clone, Default)]
pub struct Readiness {
    draining: Arc<AtomicBool>,
    checks: Arc<RwLock<BTreeMap<String, Check>>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("draining", &self.is_draining())
            .finish_non_exhaustive()
    }
}

impl Readiness {
    /// Adds a named dependency check, run on each readiness probe.
    ///
    /// The check returns `Err(reason)` while the dependency is not usable.
    pub fn add_check<F, Fut>(&self, name: &str, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let check: Check = Arc::new(move || Box::pin(check()));
        if let Ok(mut checks) = self.checks.write() {
            checks.insert(name.to_owned(), check);
        }
    }

    /// Marks the instance as draining: readiness turns false for good.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Runs every check concurrently; returns the failures by name.
    pub async fn failures(&self) -> BTreeMap<String, String> {
        let checks: Vec<(String, Check)> = match self.checks.read() {
            Ok(checks) => checks.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => return BTreeMap::from([("internal".into(), "lock poisoned".into())]),
        };
        let results = join_all(checks.into_iter().map(|(name, check)| async move {
            let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
            };
            (name, outcome)
        }))
        .await;
        results
            .into_iter()
            .filter_map(|(name, r)| r.err().map(|e| (name, e)))
            .collect()
    }

    /// The `/health/live` and `/health/ready` routes.
    pub fn routes(&self) -> Router {
        Router::new()
            .route("/health/live", get(live))
            .route("/health/ready", get(ready))
            .with_state(self.clone())
    }
}

async fn live() -> Response {
    (StatusCode::OK, axum::Json(json!({ "status": "live" }))).into_response()
}

async fn ready(State(readiness): State<Readiness>) -> Response {
    if readiness.is_draining() {
        return Problem::unavailable("the instance is shutting down")
            .with_title("Draining")
            .into_response();
    }
    let failures = readiness.failures().await;
    if failures.is_empty() {
        (StatusCode::OK, axum::Json(json!({ "status": "ready" }))).into_response()
    } else {
        let detail = failures
            .iter()
            .map(|(name, why)| format!("{name}: {why}"))
            .collect::<Vec<_>>()
            .join("; ");
        Problem::unavailable(detail)
            .with_title("Not ready")
            .with("checks", json!(failures))
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use std::sync::atomic::AtomicBool;
    use tower::ServiceExt;

    async fn status(router: Router, path: &str) -> StatusCode {
        let req = Request::get(path).body(Body::empty()).unwrap();
        router.oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn ready_follows_dependency_checks_and_draining() {
        let readiness = Readiness::default();
        let db_up = Arc::new(AtomicBool::new(false));
        let flag = db_up.clone();
        readiness.add_check("db", move || {
            let up = flag.load(Ordering::SeqCst);
            async move {
                if up {
                    Ok(())
                } else {
                    Err("connection refused".into())
                }
            }
        });
        let routes = readiness.routes();
        assert_eq!(
            status(routes.clone(), "/health/ready").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status(routes.clone(), "/health/live").await, StatusCode::OK);
        db_up.store(true, Ordering::SeqCst);
        assert_eq!(
            status(routes.clone(), "/health/ready").await,
            StatusCode::OK
        );
        readiness.start_draining();
        assert_eq!(
            status(routes.clone(), "/health/ready").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status(routes, "/health/live").await, StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_check_counts_as_failed() {
        let readiness = Readiness::default();
        readiness.add_check("slow", || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
        let failures = readiness.failures().await;
        assert!(failures["slow"].contains("no answer"));
    }
}
