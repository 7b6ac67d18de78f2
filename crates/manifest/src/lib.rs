//! `mortar.toml`: the manifest that says which services an app is made of and
//! how to run them.
//!
//! The manifest is the user's only interface to mortar's configuration, so a
//! mistake in it must be cheap to fix: [`Manifest::parse`] walks the whole
//! document and reports *every* problem at once, each with its line, column
//! and dotted field path ([`ManifestErrors`]), before anything is started.
//! What comes out is a fully validated, typed [`Manifest`] with every default
//! applied, so the rest of mortar never re-checks it.

mod autoscale;
mod bus;
mod deploy;
mod error;
mod gateway;
mod location;
mod model;
mod order;
mod parse;
mod reader;
mod secrets;

pub use error::{LoadError, ManifestError, ManifestErrors};
pub use model::{
    AppSpec, BusSpec, DEFAULT_ACK_DEADLINE, DEFAULT_GRACE_PERIOD, DEFAULT_INITIAL_BACKOFF,
    DEFAULT_INSTANCES, DEFAULT_LIVE_PATH, DEFAULT_MAX_BACKOFF, DEFAULT_MAX_DELIVERIES,
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_RAPID_CRASHES, DEFAULT_RAPID_CRASH_WINDOW,
    DEFAULT_READY_PATH, DEFAULT_RETENTION, DEFAULT_SECRETS_FILE, DEFAULT_STARTUP_TIMEOUT,
    GatewaySpec, HealthSpec, MAX_INSTANCES, MAX_RAPID_CRASHES, MAX_SERVICE_TIMEOUT, Manifest,
    RESERVED_ENV_KEYS, RESERVED_ENV_PREFIX, RestartPolicy, RouteSpec, SecretsSpec, ServiceSpec,
};
pub use model::{AutoscaleSpec, DEFAULT_SCALE_DOWN_WINDOW, MAX_SCALE_DOWN_WINDOW};
pub use model::{BusApi, BusDelivery, DEFAULT_PROGRESS_DEADLINE, DeploySpec, Strategy};
pub use model::{DEFAULT_AUTH_LEEWAY, DEFAULT_JWKS_PATH, GatewayAuthSpec, MAX_AUTH_LEEWAY};
