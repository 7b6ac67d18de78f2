//! The typed, validated manifest: what the rest of mortar consumes.
//!
//! Every value here has passed validation and every default is applied, so
//! consumers read fields directly instead of re-checking them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Serialize, Serializer};

/// Instances started per service when `instances` is absent: one process is
/// the least surprising default for a service that never asked for more.
pub const DEFAULT_INSTANCES: u32 = 1;

/// Upper bound for `instances`, so a typo (`instances = 200`) cannot fork a
/// machine to its knees.
pub const MAX_INSTANCES: u32 = 64;

/// Time between SIGTERM and SIGKILL when `grace_period` is absent; long
/// enough for a service to drain in-flight requests.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);

/// Time an instance gets to report ready when `startup_timeout` is absent.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound for `grace_period` and `startup_timeout`: beyond an hour the
/// value is almost certainly a unit mistake (`"10h"` for `"10s"`).
pub const MAX_SERVICE_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Readiness path probed when `health.ready` is absent; the SDK serves it.
pub const DEFAULT_READY_PATH: &str = "/health/ready";

/// Liveness path probed when `health.live` is absent; the SDK serves it.
pub const DEFAULT_LIVE_PATH: &str = "/health/live";

/// First restart delay after a crash when `restart.initial_backoff` is absent.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// Cap of the restart delay when `restart.max_backoff` is absent.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Consecutive rapid crashes after which a service is marked failed, when
/// `restart.max_rapid_crashes` is absent.
pub const DEFAULT_MAX_RAPID_CRASHES: u32 = 5;

/// Upper bound for `restart.max_rapid_crashes`.
pub const MAX_RAPID_CRASHES: u32 = 1000;

/// A crash this soon after an instance started counts as rapid, when
/// `restart.rapid_crash_window` is absent.
pub const DEFAULT_RAPID_CRASH_WINDOW: Duration = Duration::from_secs(10);

/// Prefix of environment variables mortar sets itself (`MORTAR_APP`, …); a
/// manifest may not set them, or it would break the service's contract with
/// the node.
pub const RESERVED_ENV_PREFIX: &str = "MORTAR_";

/// Environment variables mortar sets itself besides the `MORTAR_` ones.
pub const RESERVED_ENV_KEYS: &[&str] = &["PORT"];

/// A validated `mortar.toml`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    /// The manifest file, for messages and for finding the data directory.
    pub path: PathBuf,
    /// The manifest's directory: relative commands are resolved and `build`
    /// commands run here, so a manifest works from any working directory.
    pub dir: PathBuf,
    /// The `[app]` table.
    pub app: AppSpec,
    /// The services, in declaration order (the order users expect in output).
    pub services: Vec<ServiceSpec>,
    /// The `[gateway]` table: the app's public entry point.
    pub gateway: GatewaySpec,
    /// The `[bus]` table: topics and delivery settings of the embedded broker.
    pub bus: BusSpec,
    /// The `[secrets]` table: where the app's encrypted secrets are.
    pub secrets: SecretsSpec,
}

/// Where `[secrets] file` points when absent, relative to the manifest.
pub const DEFAULT_SECRETS_FILE: &str = "secrets.cms";

/// The `[secrets]` table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecretsSpec {
    /// The CMS secrets file (see `mortar secrets`), as written: relative
    /// paths are relative to the manifest's directory
    /// ([`Manifest::secrets_file`]).
    pub file: PathBuf,
}

impl Default for SecretsSpec {
    fn default() -> Self {
        SecretsSpec {
            file: PathBuf::from(DEFAULT_SECRETS_FILE),
        }
    }
}

/// The `[bus]` table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BusSpec {
    /// Topics created at start (each gets a `<topic>.dlq` dead-letter topic).
    pub topics: Vec<String>,
    /// How long a delivered message may stay unacknowledged before it is
    /// delivered again.
    #[serde(serialize_with = "human_duration")]
    pub ack_deadline: Duration,
    /// Deliveries after which a message moves to the dead-letter topic.
    pub max_deliveries: u32,
    /// The largest message accepted, in bytes (payload, key and headers).
    pub max_message_bytes: u32,
    /// Messages older than this may be removed once every group acked them.
    #[serde(serialize_with = "human_duration")]
    pub retention: Duration,
    /// When consumers see a published message (publishers are acknowledged
    /// once it is fsynced either way).
    pub delivery: BusDelivery,
}

/// `bus.delivery`: when the embedded broker shows a published message to
/// consumers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BusDelivery {
    /// Once written to the log, while its fsync runs: delivery does not wait
    /// for the disk. Only a power loss can take back a delivered message, and
    /// then its publisher was never acknowledged and sends it again.
    #[default]
    Written,
    /// Once fsynced: no consumer ever sees a message a power loss could take
    /// back; every delivery waits for the disk.
    Synced,
}

impl BusDelivery {
    /// Parses the manifest's spelling.
    pub fn parse(text: &str) -> Option<BusDelivery> {
        match text {
            "written" => Some(BusDelivery::Written),
            "synced" => Some(BusDelivery::Synced),
            _ => None,
        }
    }
}

/// Default of `bus.ack_deadline`.
pub const DEFAULT_ACK_DEADLINE: Duration = Duration::from_secs(30);
/// Default of `bus.max_deliveries`.
pub const DEFAULT_MAX_DELIVERIES: u32 = 5;
/// Default of `bus.max_message_bytes`: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: u32 = 1 << 20;
/// Default of `bus.retention`: 7 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

impl Default for BusSpec {
    fn default() -> Self {
        BusSpec {
            topics: Vec::new(),
            ack_deadline: DEFAULT_ACK_DEADLINE,
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            retention: DEFAULT_RETENTION,
            delivery: BusDelivery::default(),
        }
    }
}

/// The `[gateway]` table: where outside clients arrive and which service
/// answers which path.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct GatewaySpec {
    /// Where the gateway listens; `None` means loopback with a free port
    /// (`MORTAR_GATEWAY_ADDR` overrides either).
    pub listen: Option<std::net::SocketAddr>,
    /// The routes, in declaration order; the longest matching prefix wins.
    pub routes: Vec<RouteSpec>,
    /// `[gateway.auth]`: whose access tokens authenticated routes accept.
    /// Required as soon as one route is `authenticated`.
    pub auth: Option<GatewayAuthSpec>,
}

/// Default of `gateway.auth.jwks_path`: where the issuer publishes its keys.
pub const DEFAULT_JWKS_PATH: &str = "/.well-known/jwks.json";
/// Default of `gateway.auth.leeway`: clock skew tolerated on `exp`/`nbf`.
pub const DEFAULT_AUTH_LEEWAY: Duration = Duration::from_secs(30);
/// The largest `gateway.auth.leeway`: more would keep expired tokens alive.
pub const MAX_AUTH_LEEWAY: Duration = Duration::from_secs(300);

/// The `[gateway.auth]` table: the issuer whose tokens the gateway checks
/// on authenticated routes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayAuthSpec {
    /// The service that issues tokens; its public keys (JWKS) are fetched
    /// from it by name.
    pub issuer_service: String,
    /// The `iss` tokens must carry; defaults to `issuer_service`.
    pub issuer: String,
    /// The `aud` tokens must carry; `None` means the app's name.
    pub audience: Option<String>,
    /// The path of the issuer's JWKS.
    pub jwks_path: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
}

/// One `[[gateway.routes]]` entry: requests under `prefix` go to `service`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteSpec {
    /// A path prefix starting with '/', e.g. `/v1/products`.
    pub prefix: String,
    /// The service that answers it.
    pub service: String,
    /// Public routes need no sign-in and their GET responses may be cached
    /// at the gateway.
    pub public: bool,
    /// Authenticated routes are forwarded only with a valid access token
    /// (checked against `[gateway.auth]`); never together with `public`.
    pub authenticated: bool,
    /// Scopes the token must grant, all of them (403 otherwise); only on
    /// authenticated routes.
    pub scopes: Vec<String>,
}

/// The `[app]` table: what the whole application is called.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppSpec {
    /// The app's name, a DNS label; given to services as `MORTAR_APP`.
    pub name: String,
}

/// One `[services.<name>]` table: how to run one service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceSpec {
    /// The service's name, a DNS label, unique in the manifest.
    pub name: String,
    /// Program and arguments; see [`Manifest::resolve_program`] for how the
    /// program is found.
    pub command: Vec<String>,
    /// What `mortar build` runs in the manifest's directory, if anything.
    pub build: Option<Vec<String>>,
    /// How many processes to run, `1..=`[`MAX_INSTANCES`].
    pub instances: u32,
    /// Services that must be ready before this one starts (and that stop
    /// after it).
    pub depends_on: Vec<String>,
    /// Extra environment for every instance; never overrides what mortar sets.
    pub env: BTreeMap<String, String>,
    /// Names of the app's secrets this service gets, each as the environment
    /// variable of that name; it gets no others. Values stay in the secrets
    /// file until the node decrypts it at launch.
    pub secrets: Vec<String>,
    /// The services (and `gateway`) allowed to call this one; any other
    /// caller gets 403. `None` (no `callers` key): any service of the app
    /// with a certificate from the node. The node's own probes are always
    /// allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callers: Option<Vec<String>>,
    /// Time between SIGTERM and SIGKILL when stopping an instance.
    #[serde(serialize_with = "human_duration")]
    pub grace_period: Duration,
    /// Time an instance gets to become ready before it is killed.
    #[serde(serialize_with = "human_duration")]
    pub startup_timeout: Duration,
    /// Where the service answers health probes.
    pub health: HealthSpec,
    /// How crashed instances are restarted.
    pub restart: RestartPolicy,
    /// `[services.<name>.autoscale]`: when present, the node adds and
    /// removes instances between `min` and `max` by the backlog of a bus
    /// subscription, and `instances` is only the starting count.
    pub autoscale: Option<AutoscaleSpec>,
    /// `[services.<name>.deploy]`: how `mortar deploy` replaces its
    /// instances; a rolling deploy that never lowers capacity when absent.
    pub deploy: DeploySpec,
    /// `bus_api`: how the service reaches the bus. Left out of the
    /// serialized form when native, so existing releases keep their digests.
    #[serde(skip_serializing_if = "BusApi::is_native")]
    pub bus_api: BusApi,
}

/// How a service reaches the bus. On one machine the node serves both; an
/// export to a cluster, where there is no node, must know which services
/// need the HTTP API served beside them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BusApi {
    /// The SDK's bus client (the native protocol, or JetStream directly on
    /// a `nats://` URL).
    #[default]
    Native,
    /// The HTTP bus API under `/v1/bus`, for services not on the Rust SDK.
    Http,
}

impl BusApi {
    /// Parses the manifest's spelling.
    pub fn parse(text: &str) -> Option<BusApi> {
        match text {
            "native" => Some(BusApi::Native),
            "http" => Some(BusApi::Http),
            _ => None,
        }
    }

    /// True for the default, [`BusApi::Native`].
    pub fn is_native(&self) -> bool {
        *self == BusApi::Native
    }
}

/// How `mortar deploy` replaces a service's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Replace instances a few at a time (`max_surge`, `max_unavailable`).
    Rolling,
    /// Stop every old instance, then start the new ones; the gateway holds
    /// the service's requests meanwhile (`hold_timeout`, `hold_queue`).
    Recreate,
    /// Start the new version at full size beside the old, send it a share of
    /// the gateway's traffic for an analysis window, then promote it or roll
    /// back on its own.
    BlueGreen,
}

impl Strategy {
    /// Parses the manifest's and the CLI's spelling.
    pub fn parse(text: &str) -> Option<Strategy> {
        match text {
            "rolling" => Some(Strategy::Rolling),
            "recreate" => Some(Strategy::Recreate),
            "blue-green" => Some(Strategy::BlueGreen),
            _ => None,
        }
    }

    /// The manifest's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Rolling => "rolling",
            Strategy::Recreate => "recreate",
            Strategy::BlueGreen => "blue-green",
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[services.<name>.deploy]` table. Every field has a default that is
/// safe: capacity never drops, an instance that does not become ready stops
/// and rolls back the deploy, and blue-green promotes only on evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploySpec {
    /// The strategy `mortar deploy` uses when `--strategy` is not given.
    pub strategy: Strategy,
    /// Rolling: instances started beyond the desired count at a time.
    pub max_surge: u32,
    /// Rolling: instances below the desired count allowed at a time.
    pub max_unavailable: u32,
    /// A new instance must stay ready this long before it counts as
    /// available and the next old one is stopped.
    #[serde(serialize_with = "human_duration")]
    pub min_ready: Duration,
    /// A deploy that makes no progress (no new instance available) for this
    /// long stops and rolls back.
    #[serde(serialize_with = "human_duration")]
    pub progress_deadline: Duration,
    /// Between taking an instance out of discovery and sending it SIGTERM,
    /// so callers' balancers have dropped it before it stops accepting.
    #[serde(serialize_with = "human_duration")]
    pub drain_delay: Duration,
    /// Recreate: the longest a request is held at the gateway while no
    /// instance is up (then 503).
    #[serde(serialize_with = "human_duration")]
    pub hold_timeout: Duration,
    /// Recreate: the most requests held at once (more get 503 at once).
    pub hold_queue: u32,
    /// Blue-green: the percentage of the gateway's traffic sent to the new
    /// version during analysis.
    pub traffic_share: u32,
    /// Blue-green: how long the new version is observed before the verdict.
    #[serde(serialize_with = "human_duration")]
    pub analysis: Duration,
    /// Blue-green: requests the new version must have served for a verdict;
    /// the analysis waits for them up to `progress_deadline`.
    pub min_requests: u32,
    /// Blue-green: the new version's error rate may exceed the old one's by
    /// at most this many percentage points.
    pub max_error_rate: f64,
    /// Blue-green: the new version's p99 latency may exceed the old one's by
    /// at most this percentage.
    pub max_p99_increase: f64,
    /// Blue-green: how long the old version keeps running (without
    /// traffic) after promotion before it is drained and stopped.
    #[serde(serialize_with = "human_duration")]
    pub promote_delay: Duration,
    /// Blue-green: wait for `mortar deploy promote|abort` instead of
    /// deciding on its own.
    pub manual: bool,
}

/// Default of `deploy.progress_deadline`.
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(120);

impl Default for DeploySpec {
    fn default() -> Self {
        DeploySpec {
            strategy: Strategy::Rolling,
            max_surge: 1,
            max_unavailable: 0,
            min_ready: Duration::from_secs(1),
            progress_deadline: DEFAULT_PROGRESS_DEADLINE,
            drain_delay: Duration::from_millis(500),
            hold_timeout: Duration::from_secs(10),
            hold_queue: 1024,
            traffic_share: 10,
            analysis: Duration::from_secs(30),
            min_requests: 50,
            max_error_rate: 1.0,
            max_p99_increase: 50.0,
            promote_delay: Duration::from_secs(5),
            manual: false,
        }
    }
}

/// Default of `autoscale.scale_down_window`: long enough that a consumer
/// pausing between bursts is not stopped and started again every few seconds.
pub const DEFAULT_SCALE_DOWN_WINDOW: Duration = Duration::from_secs(30);

/// Upper bound of `autoscale.scale_down_window`; beyond it the value is
/// almost certainly a unit mistake.
pub const MAX_SCALE_DOWN_WINDOW: Duration = Duration::from_secs(3600);

/// The `[services.<name>.autoscale]` table: scale a consumer by the backlog
/// of one subscription (`desired = ceil(backlog / target_backlog)`, clamped
/// to `min..=max`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AutoscaleSpec {
    /// Fewest instances, at least 1 (a consumer is never scaled to zero).
    pub min: u32,
    /// Most instances, at least `min`.
    pub max: u32,
    /// The topic whose backlog drives scaling; listed in `[bus] topics`.
    pub topic: String,
    /// The consumer group the service's instances share on `topic`.
    pub group: String,
    /// The backlog one instance is expected to keep up with.
    pub target_backlog: u32,
    /// A lower desired count must hold for this long before instances are
    /// removed (scaling up is immediate).
    #[serde(serialize_with = "human_duration")]
    pub scale_down_window: Duration,
}

/// The `[services.<name>.health]` table: the HTTP paths mortar probes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthSpec {
    /// Answers 200 when the instance can take traffic.
    pub ready: String,
    /// Answers 200 while the instance is not wedged; failure means restart.
    pub live: String,
}

impl Default for HealthSpec {
    fn default() -> Self {
        Self {
            ready: DEFAULT_READY_PATH.to_owned(),
            live: DEFAULT_LIVE_PATH.to_owned(),
        }
    }
}

/// The `[services.<name>.restart]` table: exponential backoff, and when to
/// give up on a service that keeps crashing right after it starts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestartPolicy {
    /// Delay before the first restart.
    #[serde(serialize_with = "human_duration")]
    pub initial_backoff: Duration,
    /// The delay never grows beyond this; at least `initial_backoff`.
    #[serde(serialize_with = "human_duration")]
    pub max_backoff: Duration,
    /// The service is marked failed after this many consecutive crashes that
    /// each happened within `rapid_crash_window` of the instance starting.
    pub max_rapid_crashes: u32,
    /// A crash this soon after start counts as rapid.
    #[serde(serialize_with = "human_duration")]
    pub rapid_crash_window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            max_rapid_crashes: DEFAULT_MAX_RAPID_CRASHES,
            rapid_crash_window: DEFAULT_RAPID_CRASH_WINDOW,
        }
    }
}

impl RestartPolicy {
    /// The delay before restarting after the `consecutive_crashes`-th crash
    /// in a row: `initial_backoff * 2^(n-1)`, capped at `max_backoff`, so a
    /// crash loop backs off instead of burning CPU. `0` is treated as `1`.
    pub fn backoff(&self, consecutive_crashes: u32) -> Duration {
        let doublings = consecutive_crashes.saturating_sub(1);
        let delay = 1u32
            .checked_shl(doublings)
            .and_then(|factor| self.initial_backoff.checked_mul(factor))
            .unwrap_or(self.max_backoff);
        delay.min(self.max_backoff)
    }
}

impl Manifest {
    /// The service called `name`, for commands that address one service.
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The secrets file, resolved against the manifest's directory.
    pub fn secrets_file(&self) -> PathBuf {
        self.dir.join(&self.secrets.file)
    }

    /// Whether any service asks for secrets (only then is the file needed).
    pub fn uses_secrets(&self) -> bool {
        self.services.iter().any(|s| !s.secrets.is_empty())
    }

    /// The program to execute for `service` (its `command[0]`).
    ///
    /// A program containing a `/` is a path: a relative one is resolved
    /// against the manifest's directory so the manifest works from any
    /// working directory; an absolute one is kept. A bare name (`python3`)
    /// is returned as-is for the OS to look up on `PATH`.
    pub fn resolve_program(&self, service: &ServiceSpec) -> PathBuf {
        let program = service
            .command
            .first()
            .map(String::as_str)
            .unwrap_or_default();
        if program.contains('/') {
            // `join` keeps an absolute `program` as it is.
            self.dir.join(program)
        } else {
            PathBuf::from(program)
        }
    }
}

/// Serializes a duration the way the manifest spells it (`"10s"`), so the
/// admin API shows what the user wrote rather than `{secs, nanos}`.
fn human_duration<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*duration))
}

/// The directory holding the manifest at `path`; `.` for a bare file name, so
/// joining relative paths onto it always works.
pub(crate) fn manifest_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(initial_ms: u64, max_ms: u64) -> RestartPolicy {
        RestartPolicy {
            initial_backoff: Duration::from_millis(initial_ms),
            max_backoff: Duration::from_millis(max_ms),
            ..RestartPolicy::default()
        }
    }

    #[test]
    fn backoff_doubles_from_the_initial_delay() {
        let p = policy(100, 30_000);
        let delays: Vec<u128> = (1..=6).map(|n| p.backoff(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200]);
        assert_eq!(p.backoff(0), Duration::from_millis(100));
    }

    #[test]
    fn backoff_is_capped_at_max_backoff_even_for_huge_counts() {
        let p = policy(100, 30_000);
        assert_eq!(p.backoff(9), Duration::from_millis(25_600));
        assert_eq!(p.backoff(10), Duration::from_secs(30));
        assert_eq!(p.backoff(33), Duration::from_secs(30));
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(30));
        let huge = RestartPolicy {
            initial_backoff: Duration::MAX,
            max_backoff: Duration::MAX,
            ..RestartPolicy::default()
        };
        assert_eq!(huge.backoff(2), Duration::MAX);
    }

    fn manifest_with_command(dir: &str, program: &str) -> (Manifest, ServiceSpec) {
        let service = ServiceSpec {
            name: "svc".into(),
            command: vec![program.into(), "--flag".into()],
            build: None,
            instances: DEFAULT_INSTANCES,
            depends_on: vec![],
            env: BTreeMap::new(),
            secrets: vec![],
            callers: None,
            grace_period: DEFAULT_GRACE_PERIOD,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            health: HealthSpec::default(),
            restart: RestartPolicy::default(),
            autoscale: None,
            deploy: DeploySpec::default(),
            bus_api: BusApi::Native,
        };
        let manifest = Manifest {
            path: Path::new(dir).join("mortar.toml"),
            dir: PathBuf::from(dir),
            app: AppSpec { name: "app".into() },
            services: vec![service.clone()],
            gateway: GatewaySpec::default(),
            bus: BusSpec::default(),
            secrets: SecretsSpec::default(),
        };
        (manifest, service)
    }

    #[test]
    fn resolve_program_joins_relative_paths_onto_the_manifest_dir() {
        let (m, s) = manifest_with_command("/srv/shop", "../../target/release/catalog");
        assert_eq!(
            m.resolve_program(&s),
            PathBuf::from("/srv/shop/../../target/release/catalog")
        );
        let (m, s) = manifest_with_command("/srv/shop", "./bin/run");
        assert_eq!(m.resolve_program(&s), PathBuf::from("/srv/shop/./bin/run"));
    }

    #[test]
    fn resolve_program_keeps_absolute_paths_and_bare_names() {
        let (m, s) = manifest_with_command("/srv/shop", "/usr/bin/env");
        assert_eq!(m.resolve_program(&s), PathBuf::from("/usr/bin/env"));
        let (m, s) = manifest_with_command("/srv/shop", "python3");
        assert_eq!(m.resolve_program(&s), PathBuf::from("python3"));
    }

    #[test]
    fn service_finds_by_name() {
        let (m, _) = manifest_with_command("/srv", "x");
        assert_eq!(m.service("svc").map(|s| s.name.as_str()), Some("svc"));
        assert!(m.service("nope").is_none());
    }

    #[test]
    fn manifest_dir_of_a_bare_file_name_is_dot() {
        assert_eq!(manifest_dir(Path::new("mortar.toml")), PathBuf::from("."));
        assert_eq!(
            manifest_dir(Path::new("a/b/mortar.toml")),
            PathBuf::from("a/b")
        );
        assert_eq!(manifest_dir(Path::new("/mortar.toml")), PathBuf::from("/"));
    }
}
