//! The web dashboard, served by the node on its admin (loopback) listener:
//! services and instances, request rate and p99 latency per service,
//! backlog per consumer group, deploys and autoscaling in progress, and
//! recent errors with their trace ids, updated live over server-sent
//! events. `mortar top` reads the same [`Snapshot`].
//!
//! Routes (the admin credentials guard them, see `guard.rs`):
//! - `POST /v1/dashboard/login`: admin bearer only; a one-time login link;
//! - `GET /dashboard/login?token=…`: spends the link, sets the session
//!   cookie and redirects to `/dashboard`;
//! - `GET /dashboard`: the page (one embedded HTML file, no build step);
//! - `GET /v1/dashboard/snapshot`: the latest snapshot as JSON;
//! - `GET /v1/dashboard/events`: a `snapshot` event about once a second.

pub mod errors;
pub mod history;
pub mod login;
pub mod sampler;
pub mod snapshot;

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use mortar_sdk::Problem;
use mortar_sdk::http::Json;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;

pub use login::Sessions;
pub use snapshot::Snapshot;

/// The page: HTML with its script and styles inline.
const PAGE: &str = include_str!("page.html");

/// Paths a dashboard session cookie may read (GET only).
pub(crate) const COOKIE_PATHS: [&str; 3] = [
    "/dashboard",
    "/v1/dashboard/snapshot",
    "/v1/dashboard/events",
];

/// The path that spends a login link; open, since the link is the credential.
pub(crate) const LOGIN_PATH: &str = "/dashboard/login";

/// What the dashboard routes need.
#[derive(Clone)]
pub struct DashboardState {
    /// Login links and sessions.
    pub sessions: Arc<Sessions>,
    /// The latest snapshot.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// The admin API's base URL, for login links.
    pub admin_url: String,
    /// Cancelled when the node stops: ends the event streams.
    pub stop: CancellationToken,
}

/// Answer of `POST /v1/dashboard/login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginLink {
    /// Open this in a browser: it logs the browser in once.
    pub url: String,
    /// Seconds until the link stops working.
    pub expires_in_s: u64,
}

/// The dashboard's routes.
pub fn router(state: DashboardState) -> Router {
    Router::new()
        .route("/dashboard", get(page))
        .route(LOGIN_PATH, get(redeem))
        .route("/v1/dashboard/login", post(issue))
        .route("/v1/dashboard/snapshot", get(snapshot))
        .route("/v1/dashboard/events", get(events))
        .with_state(state)
}

/// The Content-Security-Policy of the page: its own inline script (by
/// digest) and styles, and requests to this node only.
fn content_security_policy() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        use base64::Engine;
        use sha2::Digest;
        let script = PAGE
            .split_once("<script>")
            .and_then(|(_, rest)| rest.split_once("</script>"))
            .map_or("", |(script, _)| script);
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script));
        format!(
            "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
    })
}

/// Headers every dashboard HTML answer carries.
fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(csp) = HeaderValue::from_str(content_security_policy()) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    resp
}

/// The small page a browser gets without a session: how to get one.
pub(crate) fn login_required(detail: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>mortar dashboard: log in</title></head>\
<body style=\"font-family:system-ui,sans-serif;max-width:40em;margin:4em auto\">\
<h1 id=\"login-required\">Log in to the mortar dashboard</h1>\
<p>{detail}</p>\
<p>Run <code>mortar dashboard</code> on the machine of the node: it prints a link that logs this browser in (once, within a minute).</p>\
</body></html>"
    );
    let mut resp = html(StatusCode::UNAUTHORIZED, body);
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"mortar node\""),
    );
    resp
}

async fn page() -> Response {
    html(StatusCode::OK, PAGE.to_owned())
}

/// Query of the login link.
#[derive(Debug, Deserialize)]
struct RedeemQuery {
    token: Option<String>,
}

async fn redeem(State(state): State<DashboardState>, Query(query): Query<RedeemQuery>) -> Response {
    let Some(token) = query.token else {
        return login_required("This login link has no token.");
    };
    match state.sessions.redeem(&token, Instant::now()) {
        Ok(session) => {
            let mut resp = (StatusCode::SEE_OTHER, "").into_response();
            let headers = resp.headers_mut();
            headers.insert(header::LOCATION, HeaderValue::from_static("/dashboard"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            if let Ok(cookie) = HeaderValue::from_str(&state.sessions.set_cookie(&session)) {
                headers.insert(header::SET_COOKIE, cookie);
            }
            resp
        }
        Err(login::LoginError::Invalid) => login_required(
            "This login link is unknown, already used or expired: each link works once, for a minute.",
        ),
        Err(e @ login::LoginError::Random) => Problem::internal(e.to_string()).into_response(),
    }
}

/// Issues a one-time login link for a browser.
async fn issue(State(state): State<DashboardState>) -> Result<Json<LoginLink>, Problem> {
    let token = state
        .sessions
        .issue_link(Instant::now())
        .map_err(|e| Problem::internal(e.to_string()))?;
    Ok(Json(LoginLink {
        url: format!("{}{LOGIN_PATH}?token={token}", state.admin_url),
        expires_in_s: login::LOGIN_TTL.as_secs(),
    }))
}

async fn snapshot(State(state): State<DashboardState>) -> Response {
    let latest = state.snapshots.borrow().clone();
    let mut resp = axum::Json(&*latest).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn events(
    State(state): State<DashboardState>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let stop = state.stop.clone();
    let stream = WatchStream::new(state.snapshots.clone())
        .filter_map(|snap| async move {
            // A snapshot always serializes; skip one that would not.
            Event::default().event("snapshot").json_data(&*snap).ok()
        })
        .map(Ok)
        .take_until(stop.cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::default())
}
