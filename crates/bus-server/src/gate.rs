//! Refusing clients on purpose: the node's fault injection (`mortar chaos
//! bus-outage|cut-bus`) closes the bus to everyone or to one service's
//! instances for a while. A refused client's connections are dropped, new
//! ones are refused with `Unavailable`, and HTTP requests are answered 503
//! with `Retry-After`; the broker itself keeps everything it acknowledged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Who may not use the bus right now, and until when.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closed {
    /// The whole bus is down (an outage) until then.
    pub all: Option<Instant>,
    /// Clients cut off, as [`Gate`]'s `identify` names them, each until a
    /// time.
    pub clients: BTreeMap<String, Instant>,
}

/// Why a client is refused, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// A sentence for the client's log.
    pub reason: String,
    /// How long the refusal is planned to last (for `Retry-After`).
    pub retry_after: Duration,
}

/// Maps a client's token to who it is (e.g. its service), `None` when the
/// token names no one the gate knows.
pub type Identify = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The switch the node flips; connections and HTTP requests consult it.
/// Cheap to clone.
#[derive(Clone)]
pub struct Gate {
    closed: watch::Sender<Closed>,
    identify: Identify,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("closed", &*self.closed.borrow())
            .finish()
    }
}

impl Gate {
    /// An open gate that names clients with `identify`.
    pub fn new(identify: Identify) -> Gate {
        Gate {
            closed: watch::channel(Closed::default()).0,
            identify,
        }
    }

    /// Closes the bus to `closed` (an empty [`Closed`] opens it again);
    /// open connections of clients now refused are dropped.
    pub fn set(&self, closed: Closed) {
        self.closed.send_if_modified(|now| {
            let changed = *now != closed;
            *now = closed;
            changed
        });
    }

    /// What is closed now.
    pub fn closed(&self) -> Closed {
        self.closed.borrow().clone()
    }

    /// Why the client with `token` may not use the bus now, if it may not.
    pub fn refusal(&self, token: &str) -> Option<Refusal> {
        refusal(&self.closed.borrow(), Instant::now(), || {
            (self.identify)(token)
        })
    }

    /// Wakes when what is closed changes.
    pub(crate) fn watch(&self) -> watch::Receiver<Closed> {
        self.closed.subscribe()
    }
}

fn refusal(closed: &Closed, now: Instant, who: impl FnOnce() -> Option<String>) -> Option<Refusal> {
    if let Some(until) = closed.all.filter(|until| *until > now) {
        return Some(Refusal {
            reason:
                "the bus is down (an outage injected by `mortar chaos bus-outage`); retry later"
                    .to_owned(),
            retry_after: until.saturating_duration_since(now),
        });
    }
    if closed.clients.is_empty() {
        return None;
    }
    let who = who()?;
    let until = closed.clients.get(&who).filter(|until| **until > now)?;
    Some(Refusal {
        reason: format!(
            "{who} is cut off from the bus (injected by `mortar chaos cut-bus`); retry later"
        ),
        retry_after: until.saturating_duration_since(now),
    })
}

/// Middleware for the HTTP API: 503 problem+json with `Retry-After` for a
/// client the gate refuses, also for a request (a long pull) that was
/// waiting when the gate closed. The OpenAPI document stays open.
pub async fn http_middleware(
    axum::extract::State(gate): axum::extract::State<Gate>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if req.uri().path() == "/v1/bus/openapi.json" {
        return next.run(req).await;
    }
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned())
        .unwrap_or_default();
    let refused = match gate.refusal(&token) {
        Some(refused) => refused,
        None => {
            let mut changes = gate.watch();
            let answer = next.run(req);
            tokio::select! {
                resp = answer => return resp,
                refused = async {
                    loop {
                        if changes.changed().await.is_err() {
                            return std::future::pending().await;
                        }
                        if let Some(refused) = gate.refusal(&token) {
                            return refused;
                        }
                    }
                } => refused,
            }
        }
    };
    let mut resp =
        mortar_sdk::Problem::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, refused.reason)
            .with_type("urn:mortar:problem:bus-unavailable")
            .with_title("Bus unavailable")
            .with("injected", true)
            .into_response();
    let secs = refused.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    resp.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from(secs),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_refuses_everyone_and_a_cut_only_that_client() {
        let gate = Gate::new(Arc::new(|t: &str| {
            t.strip_prefix("tok-").map(str::to_owned)
        }));
        assert_eq!(gate.refusal("tok-catalog"), None);
        let later = Instant::now() + Duration::from_secs(5);
        gate.set(Closed {
            all: None,
            clients: BTreeMap::from([("catalog".to_owned(), later)]),
        });
        let cut = gate.refusal("tok-catalog").unwrap();
        assert!(cut.reason.contains("catalog is cut off"), "{cut:?}");
        assert!(cut.retry_after <= Duration::from_secs(5));
        assert_eq!(gate.refusal("tok-ordering"), None);
        assert_eq!(gate.refusal("unknown"), None);
        gate.set(Closed {
            all: Some(later),
            ..Closed::default()
        });
        let down = gate.refusal("tok-ordering").unwrap();
        assert!(down.reason.contains("the bus is down"), "{down:?}");
        gate.set(Closed::default());
        assert_eq!(gate.refusal("tok-catalog"), None);
        gate.set(Closed {
            all: Some(Instant::now() - Duration::from_millis(1)),
            ..Closed::default()
        });
        assert_eq!(
            gate.refusal("tok-catalog"),
            None,
            "an expired outage is over"
        );
    }
}
