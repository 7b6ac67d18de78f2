//! The command line: every subcommand and flag, with its environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// mortar runs a multi-service application on one machine: processes,
/// readiness, restarts, merged logs, and an admin API.
#[derive(Debug, Parser)]
#[command(name = "mortar", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the application's services until Ctrl-C or SIGTERM.
    Up(UpArgs),
    /// Run each service's build command (the build stage; `up` never builds).
    Build(ManifestArgs),
    /// Validate the manifest and print every error; starts nothing.
    Check(ManifestArgs),
    /// Show the services and instances of the running node.
    Status(StatusArgs),
    /// Print the merged JSON log lines of the running node.
    Logs(LogsArgs),
    /// Open the node's web dashboard: prints a login link for a browser (one use, valid one minute).
    Dashboard(DashboardArgs),
    /// The dashboard's live view in the terminal (q or Ctrl-C quits); plain text once with --once or when not a terminal.
    Top(TopArgs),
    /// Stop one service of the running node (drained); the others keep running.
    Stop(ServiceArgs),
    /// Start a stopped service of the running node and wait until it is ready.
    Start(ServiceArgs),
    /// The message bus: run it alone, inspect it, replay dead letters.
    #[command(subcommand)]
    Bus(BusCommand),
    /// Record an immutable release: digests and copies of every service's program, the manifest and the configuration.
    Release(ReleaseArgs),
    /// List the recorded releases, oldest first.
    Releases(ReleasesArgs),
    /// Deploy a release of one service with a rolling, recreate or blue-green strategy, showing each step live; `promote` and `abort` decide a manual blue-green deploy.
    Deploy(DeployArgs),
    /// Deploy the version a service ran before its current one.
    Rollback(RollbackArgs),
    /// The finished deploys of one service, oldest first.
    History(HistoryArgs),
    /// Break the running application on purpose: kill or pause an instance, or run a scripted scenario that prints a scorecard.
    #[command(subcommand)]
    Chaos(ChaosCommand),
    /// Projections (read models) of the running node's services: where they are, rebuild one.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Run a benchmark that ships with mortar.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The app's secrets, encrypted as CMS (RFC 5652) for X.509 recipients: encrypt, decrypt, edit, set, unset, rotate.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Backups of the data directory: take one while the node runs, verify one by restoring it into scratch, restore one, list them.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Turn the manifest into another platform's configuration, for when the app outgrows one machine.
    #[command(subcommand)]
    Export(ExportCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum BackupCommand {
    /// Take an online, consistent backup of the data directory (the node may keep running).
    Create(BackupCreateArgs),
    /// Check every checksum, restore into scratch, run SQLite's integrity check and every bus record's checksum; non-zero exit naming the file and check on failure.
    Verify(BackupVerifyArgs),
    /// Restore a backup into the data directory: staged, verified, then swapped in; the old data is kept aside.
    Restore(BackupRestoreArgs),
    /// List the backups, oldest first.
    List(BackupListArgs),
}

/// The data directory and where its backups go.
#[derive(Debug, Args)]
pub(crate) struct BackupTarget {
    #[command(flatten)]
    pub(crate) manifest: ManifestArgs,
    /// The node's data directory [default: .mortar beside the manifest].
    #[arg(long, env = "MORTAR_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// The PostgreSQL database the node keeps the services' stores in (as given to `mortar up --store-url`): create dumps their schemas with pg_dump, restore loads them with pg_restore.
    #[arg(long, env = "MORTAR_STORE_URL", value_parser = parse_store_url)]
    pub(crate) store_url: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct BackupCreateArgs {
    #[command(flatten)]
    pub(crate) target: BackupTarget,
    /// The directory that holds backups [default: <data dir>-backups beside the data directory].
    #[arg(long, env = "MORTAR_BACKUP_DIR", value_name = "DIR")]
    pub(crate) to: Option<PathBuf>,
    /// After the backup, delete the oldest ones so that N remain (at least 1).
    #[arg(long, value_name = "N")]
    pub(crate) keep: Option<usize>,
    /// Encrypt every file of the backup (CMS, AES-256) for the recipient certificate(s) in this PEM file; verify and restore then need the private key (--key).
    #[arg(long, value_name = "CERT")]
    pub(crate) encrypt_to: Option<PathBuf>,
}

/// The private key that decrypts an encrypted backup.
#[derive(Debug, Args)]
pub(crate) struct BackupKeyArgs {
    /// The private key (PEM) of a recipient of an encrypted backup [default: the node's secrets key].
    #[arg(long, env = "MORTAR_SECRETS_KEY", value_name = "KEY")]
    pub(crate) key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct BackupVerifyArgs {
    /// The backup directory (one `mortar backup list` shows).
    pub(crate) backup: PathBuf,
    #[command(flatten)]
    pub(crate) key: BackupKeyArgs,
    /// A PostgreSQL server (postgres://USER@HOST:PORT/DB) where a backup's PostgreSQL dump is restored into a scratch database, created and dropped by verify.
    #[arg(long, env = "MORTAR_STORE_URL", value_parser = parse_store_url)]
    pub(crate) store_url: Option<String>,
    /// The application's manifest: its services with read stores are started in replay-check mode to compare their read models with their events (skipped with a note when the file does not exist).
    #[command(flatten)]
    pub(crate) manifest: ManifestArgs,
}

#[derive(Debug, Args)]
pub(crate) struct BackupRestoreArgs {
    /// The backup directory.
    pub(crate) backup: PathBuf,
    #[command(flatten)]
    pub(crate) target: BackupTarget,
    /// Restore even though a node holds the data directory (restart it afterwards).
    #[arg(long)]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) key: BackupKeyArgs,
}

#[derive(Debug, Args)]
pub(crate) struct BackupListArgs {
    #[command(flatten)]
    pub(crate) target: BackupTarget,
    /// The directory that holds backups [default: <data dir>-backups beside the data directory].
    #[arg(long, env = "MORTAR_BACKUP_DIR", value_name = "DIR")]
    pub(crate) from: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ExportCommand {
    /// Kubernetes manifests: a Deployment (or Argo Rollout) and Service per service, KEDA ScaledObjects, ConfigMaps, an Ingress (docs/scale-out.md).
    Kubernetes(ExportKubernetesArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ExportKubernetesArgs {
    #[command(flatten)]
    pub(crate) manifest: ManifestArgs,
    /// Write one YAML file per service (and ingress.yaml) into this directory [default: print one YAML stream on stdout].
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub(crate) output: Option<PathBuf>,
    /// The namespace of every object [default: none, so `kubectl -n` decides].
    #[arg(long)]
    pub(crate) namespace: Option<String>,
    /// The registry of the default images, <REGISTRY>/<app>-<service>:latest.
    #[arg(long, default_value = mortar_export::DEFAULT_REGISTRY)]
    pub(crate) registry: String,
    /// The image of one service, overriding the default; repeatable.
    #[arg(long = "image", value_name = "SERVICE=IMAGE")]
    pub(crate) images: Vec<String>,
    /// The image of the mortar binary, which runs the bus bridge (`mortar bus http`) beside services with bus_api = "http" [default: <REGISTRY>/mortar:latest].
    #[arg(long, value_name = "IMAGE")]
    pub(crate) mortar_image: Option<String>,
    /// The cluster's NATS JetStream, given to every service as MORTAR_BUS_URL.
    #[arg(long, default_value = mortar_export::DEFAULT_BUS_URL)]
    pub(crate) bus_url: String,
    /// Replicas of the JetStream streams the services create (MORTAR_BUS_NATS_REPLICAS): 3 keeps acknowledged messages through the loss of a server; 1 for a single NATS server.
    #[arg(long, default_value_t = mortar_export::DEFAULT_NATS_REPLICAS, value_parser = clap::value_parser!(u32).range(1..=5))]
    pub(crate) nats_replicas: u32,
    /// The cluster's PostgreSQL database, without ?schema= (each service gets its own schema) [default: postgres://mortar@postgres:5432/<app>].
    #[arg(long)]
    pub(crate) store_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SecretsCommand {
    /// Encrypt a plaintext table (TOML: NAME = "value" lines) from stdin or --from into the secrets file.
    Encrypt(SecretsEncryptArgs),
    /// Print the decrypted secrets table (TOML) on stdout.
    Decrypt(SecretsDecryptArgs),
    /// Edit the secrets in $VISUAL or $EDITOR, then re-encrypt them (plaintext only in a private, wiped, removed directory, in memory when possible).
    Edit(SecretsEditArgs),
    /// Set one secret to a value read from stdin (not echoed on a terminal; one trailing newline is dropped).
    Set(SecretsNameArgs),
    /// Remove one secret.
    Unset(SecretsNameArgs),
    /// Re-encrypt under a new content key, for new recipients (-r) or the recorded ones.
    Rotate(SecretsRotateArgs),
}

/// Which secrets file: given, or the manifest's `[secrets] file`.
#[derive(Debug, Args)]
pub(crate) struct SecretsTarget {
    /// The secrets file [default: the manifest's [secrets] file, secrets.cms beside it unless set].
    #[arg(value_name = "SECRETS_FILE")]
    pub(crate) secrets_file: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) manifest: ManifestArgs,
}

/// The private key that decrypts.
#[derive(Debug, Args)]
pub(crate) struct SecretsKeyArgs {
    /// PEM private key of one of the file's recipients.
    #[arg(long, env = "MORTAR_SECRETS_KEY", value_name = "PATH")]
    pub(crate) key: Option<PathBuf>,
    /// The key's certificate, for precise errors [default: a certificate in the key file, or the matching recorded recipient].
    #[arg(long, env = "MORTAR_SECRETS_CERT", value_name = "PATH")]
    pub(crate) cert: Option<PathBuf>,
}

/// Who to encrypt for.
#[derive(Debug, Args)]
pub(crate) struct RecipientArgs {
    /// A PEM file with recipient certificate(s), RSA or EC; repeatable [default: the recorded recipients, <file>.recipients.pem].
    #[arg(short = 'r', long = "recipient", value_name = "CERT")]
    pub(crate) recipients: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct SecretsEncryptArgs {
    #[command(flatten)]
    pub(crate) target: SecretsTarget,
    #[command(flatten)]
    pub(crate) recipients: RecipientArgs,
    /// Read the plaintext table from this file instead of stdin.
    #[arg(long, value_name = "PATH")]
    pub(crate) from: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct SecretsDecryptArgs {
    #[command(flatten)]
    pub(crate) target: SecretsTarget,
    #[command(flatten)]
    pub(crate) key: SecretsKeyArgs,
}

#[derive(Debug, Args)]
pub(crate) struct SecretsEditArgs {
    #[command(flatten)]
    pub(crate) target: SecretsTarget,
    #[command(flatten)]
    pub(crate) key: SecretsKeyArgs,
    #[command(flatten)]
    pub(crate) recipients: RecipientArgs,
}

#[derive(Debug, Args)]
pub(crate) struct SecretsNameArgs {
    /// The secret's name: the environment variable services get (^[A-Z_][A-Z0-9_]*$).
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) target: SecretsTarget,
    #[command(flatten)]
    pub(crate) key: SecretsKeyArgs,
    #[command(flatten)]
    pub(crate) recipients: RecipientArgs,
}

#[derive(Debug, Args)]
pub(crate) struct SecretsRotateArgs {
    #[command(flatten)]
    pub(crate) target: SecretsTarget,
    #[command(flatten)]
    pub(crate) key: SecretsKeyArgs,
    #[command(flatten)]
    pub(crate) recipients: RecipientArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ProjectionsCommand {
    /// Every projection of every ready service: position and lag behind its source.
    Status(ProjectionsStatusArgs),
    /// Rebuild one projection from its source: reset, replay, resume.
    Rebuild(ProjectionsRebuildArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ProjectionsStatusArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ProjectionsRebuildArgs {
    /// The projection's name, as `mortar projections status` lists it.
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) target: TargetArgs,
}

/// Where the manifest is.
#[derive(Debug, Args)]
pub(crate) struct ManifestArgs {
    /// The manifest file.
    #[arg(
        short = 'f',
        long = "file",
        env = "MORTAR_MANIFEST",
        default_value = "mortar.toml"
    )]
    pub(crate) file: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    pub(crate) manifest: ManifestArgs,
    /// The node's data directory [default: .mortar beside the manifest].
    #[arg(long, env = "MORTAR_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Where the admin API listens (loopback; port 0 picks a free port).
    #[arg(long, env = "MORTAR_ADMIN_ADDR", default_value = "127.0.0.1:0")]
    pub(crate) admin_addr: SocketAddr,
    /// Where the DNS server answers for `<service>.<app>.mortar.` (loopback; port 0 picks a free port).
    #[arg(long, env = "MORTAR_DNS_ADDR", default_value = "127.0.0.1:0")]
    pub(crate) dns_addr: SocketAddr,
    /// Where the embedded bus accepts clients (loopback; port 0 picks a free port).
    #[arg(long, env = "MORTAR_BUS_ADDR", default_value = "127.0.0.1:0")]
    pub(crate) bus_addr: SocketAddr,
    /// Where the gateway listens [default: the manifest's gateway.listen, else loopback with a free port].
    #[arg(long, env = "MORTAR_GATEWAY_ADDR")]
    pub(crate) gateway_addr: Option<SocketAddr>,
    /// Use an existing NATS JetStream as the bus (nats://[USER:PASSWORD@]HOST:PORT) instead of the embedded broker.
    #[arg(long, env = "MORTAR_BUS_URL")]
    pub(crate) bus_url: Option<String>,
    /// Keep every service's store in this PostgreSQL database (postgres://USER@HOST:PORT/DB, without ?schema=), each in its own schema named after the service, instead of SQLite files in the data directory.
    #[arg(long, env = "MORTAR_STORE_URL", value_parser = parse_store_url)]
    pub(crate) store_url: Option<String>,
    /// Log filter for the node and its instances (error, warn, info, debug, trace).
    #[arg(long, env = "MORTAR_LOG_LEVEL")]
    pub(crate) log_level: Option<String>,
    /// PEM private key that decrypts the app's secrets file (needed when services name secrets).
    #[arg(long, env = "MORTAR_SECRETS_KEY", value_name = "PATH")]
    pub(crate) secrets_key: Option<PathBuf>,
    /// That key's certificate (optional; makes decryption errors precise).
    #[arg(long, env = "MORTAR_SECRETS_CERT", value_name = "PATH")]
    pub(crate) secrets_cert: Option<PathBuf>,
    /// Lifetime of the certificates the node's CA gives instances, the
    /// gateway and itself (renewed at two thirds), e.g. `24h`, `10m`.
    #[arg(long, env = "MORTAR_CERT_LIFETIME", default_value = "24h", value_parser = parse_lifetime)]
    pub(crate) cert_lifetime: std::time::Duration,
}

/// A PostgreSQL database URL for `mortar up --store-url`: the services'
/// schemas are added to it, so it must not name one.
fn parse_store_url(text: &str) -> Result<String, String> {
    if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
        return Err(
            "expected a postgres:// URL such as postgres://postgres@127.0.0.1:5432/shop".into(),
        );
    }
    if text.contains("schema=") {
        return Err("leave out ?schema=: every service gets its own schema, named after it".into());
    }
    Ok(text.to_owned())
}

/// A redraw interval: 100ms to 1h.
fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d < std::time::Duration::from_millis(100) || d > std::time::Duration::from_secs(3600) {
        return Err("expected a duration from 100ms to 1h, such as 1s".into());
    }
    Ok(d)
}

/// A certificate lifetime: a duration of at least 3 seconds (renewal
/// happens at two thirds of it) and at most 30 days.
fn parse_lifetime(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d < std::time::Duration::from_secs(3) || d > std::time::Duration::from_secs(30 * 86400) {
        return Err("expected a duration from 3s to 30d, such as 24h".into());
    }
    Ok(d)
}

/// How a one-off command finds the running node: the data directory (from
/// the manifest's location unless given) holds `node.json`.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// The node's data directory [default: .mortar beside the manifest].
    #[arg(long, env = "MORTAR_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// The admin API's URL; overrides the data directory.
    #[arg(long, env = "MORTAR_ADMIN_URL")]
    pub(crate) admin_url: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ReleaseArgs {
    #[command(flatten)]
    pub(crate) manifest: ManifestArgs,
    /// The data directory holding the ledger [default: .mortar beside the manifest].
    #[arg(long, env = "MORTAR_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ReleasesArgs {
    #[command(flatten)]
    pub(crate) release: ReleaseArgs,
    /// Print the releases as JSON (one array).
    #[arg(long)]
    pub(crate) json: bool,
}

/// Which running node a one-off command talks to: the node of the manifest
/// (`-f`), unless a data directory or admin URL says otherwise.
#[derive(Debug, Args)]
pub(crate) struct TargetArgs {
    #[command(flatten)]
    pub(crate) manifest: ManifestArgs,
    #[command(flatten)]
    pub(crate) node: NodeArgs,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// Print the status document as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DashboardArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// Also open the link in the default browser (xdg-open, or open on macOS).
    #[arg(long)]
    pub(crate) open: bool,
}

#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// Print the view once, as plain text, and exit.
    #[arg(long)]
    pub(crate) once: bool,
    /// How often the view is redrawn.
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    pub(crate) interval: std::time::Duration,
}

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// Only this service's lines (`mortar` for the node's own).
    pub(crate) service: Option<String>,
    /// Keep printing new lines as they arrive.
    #[arg(short = 'f', long)]
    pub(crate) follow: bool,
    /// How many recent lines to print first.
    #[arg(long, default_value_t = 100)]
    pub(crate) tail: usize,
    /// Only lines of this trace (the 32-hex-digit `trace_id`).
    #[arg(long)]
    pub(crate) trace: Option<String>,
    /// Only lines at this level or more severe: trace, debug, info, warn, error.
    #[arg(long)]
    pub(crate) level: Option<String>,
    /// The manifest whose node to ask (`-f` means --follow here).
    #[arg(long = "file", env = "MORTAR_MANIFEST", default_value = "mortar.toml")]
    pub(crate) file: PathBuf,
    #[command(flatten)]
    pub(crate) node: NodeArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BusCommand {
    /// Run only the embedded broker (TCP protocol and HTTP API) until Ctrl-C.
    Serve(BusServeArgs),
    /// Serve the HTTP bus API (/v1/bus) over NATS JetStream where there is no node, for services not on the Rust SDK (a Kubernetes export runs it beside them).
    ///
    /// A twelve-factor process configured by the environment, like a service:
    /// MORTAR_BUS_URL (nats://HOST:PORT, required), PORT and MORTAR_BIND_ADDR
    /// (where to listen; 127.0.0.1 by default), MORTAR_BUS_HTTP_TOKEN (the
    /// bearer token clients must send; without it anyone who reaches the port
    /// may use the bus), MORTAR_BUS_MAX_DELIVERIES, MORTAR_BUS_ACK_DEADLINE_MS,
    /// MORTAR_BUS_MAX_MESSAGE_BYTES and MORTAR_BUS_NATS_REPLICAS as for a
    /// service. Serves /health/ready (ready once JetStream is connected),
    /// /health/live and /metrics; drains on SIGTERM.
    Http,
    /// Topics, groups, backlog and lag of the running node's bus.
    Stats(BusStatsArgs),
    /// Dead-letter topics.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Debug, Args)]
pub(crate) struct BusServeArgs {
    /// Where the broker keeps its log.
    #[arg(long, env = "MORTAR_DATA_DIR", default_value = ".mortar")]
    pub(crate) data_dir: PathBuf,
    /// Where clients of the bus protocol connect.
    #[arg(long, env = "MORTAR_BUS_ADDR", default_value = "127.0.0.1:0")]
    pub(crate) addr: SocketAddr,
    /// Where the HTTP API (`/v1/bus/...`) listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub(crate) http_addr: SocketAddr,
    /// Topics to create at start.
    #[arg(long = "topic")]
    pub(crate) topics: Vec<String>,
    /// Zero-fill each topic's next segment in the background (lower publish latency,
    /// up to 64 MiB more disk per topic); `false` lets segments grow as they fill.
    #[arg(long, env = "MORTAR_BUS_PREALLOCATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) preallocate: bool,
    /// When consumers see a message: `written` (once written to the log, while its
    /// fsync runs) or `synced` (once fsynced). Publishers are acknowledged once it is
    /// fsynced either way.
    #[arg(long, env = "MORTAR_BUS_DELIVERY", default_value_t = mortar_bus::Delivery::Written)]
    pub(crate) delivery: mortar_bus::Delivery,
}

#[derive(Debug, Args)]
pub(crate) struct BusStatsArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// Move dead letters of a topic back into it, to be delivered again.
    Replay(DlqReplayArgs),
}

#[derive(Debug, Args)]
pub(crate) struct DlqReplayArgs {
    /// The topic whose dead letters (`<topic>.dlq`) to replay.
    pub(crate) topic: String,
    /// At most this many messages.
    #[arg(long, default_value_t = 1000)]
    pub(crate) max: usize,
    #[command(flatten)]
    pub(crate) target: TargetArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ServiceArgs {
    /// The service's name.
    pub(crate) service: String,
    #[command(flatten)]
    pub(crate) target: TargetArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ChaosCommand {
    /// SIGKILL an instance (`catalog-2`, or a service name for its first instance); prints how long its service took to be fully ready again.
    Kill(ChaosTargetArgs),
    /// SIGSTOP an instance for --seconds, then SIGCONT it.
    Pause(ChaosPauseArgs),
    /// Drive the shop through its gateway (a client that never retries) while a scripted sequence of faults plays; print the scorecard; exit 1 if anything acknowledged was lost.
    Run(ChaosRunArgs),
    /// Stop the embedded bus for --seconds: connections dropped and refused, /v1/bus answers 503; publishers buffer in their outbox meanwhile.
    BusOutage(ChaosBusOutageArgs),
    /// Cut one service off from the bus for --seconds (only its instances' connections and requests are refused).
    CutBus(ChaosServiceArgs),
    /// Delay a service's responses at the gateway by --ms (for --percent of requests) for --seconds.
    Latency(ChaosLatencyArgs),
    /// Answer --rate percent of a service's requests at the gateway with an injected 503 for --seconds.
    Errors(ChaosErrorsArgs),
    /// List the faults the node injects now.
    Faults(ChaosListArgs),
    /// End every injected fault now.
    Clear(ChaosListArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ChaosBusOutageArgs {
    /// How long the outage lasts; the node ends it by itself.
    #[arg(long)]
    pub(crate) seconds: f64,
    #[command(flatten)]
    pub(crate) node: TargetArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ChaosServiceArgs {
    /// The service.
    pub(crate) service: String,
    /// How long the fault lasts; the node ends it by itself.
    #[arg(long)]
    pub(crate) seconds: f64,
    #[command(flatten)]
    pub(crate) node: TargetArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ChaosLatencyArgs {
    /// The service whose responses are delayed.
    pub(crate) service: String,
    /// The delay added to each affected request, in milliseconds.
    #[arg(long)]
    pub(crate) ms: u64,
    /// The share of requests delayed, in percent.
    #[arg(long, default_value_t = 100.0)]
    pub(crate) percent: f64,
    /// How long the fault lasts; the node ends it by itself.
    #[arg(long)]
    pub(crate) seconds: f64,
    #[command(flatten)]
    pub(crate) node: TargetArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ChaosErrorsArgs {
    /// The service whose requests fail.
    pub(crate) service: String,
    /// The share of requests answered 503, in percent (`20` or `20%`).
    #[arg(long)]
    pub(crate) rate: String,
    /// How long the fault lasts; the node ends it by itself.
    #[arg(long)]
    pub(crate) seconds: f64,
    #[command(flatten)]
    pub(crate) node: TargetArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ChaosListArgs {
    /// Print the faults as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) node: TargetArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ChaosTargetArgs {
    /// An instance id, or a service name (its first running instance).
    pub(crate) target: String,
    #[command(flatten)]
    pub(crate) node: TargetArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ChaosPauseArgs {
    /// An instance id, or a service name (its first running instance).
    pub(crate) target: String,
    /// How long the process stays stopped.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) seconds: f64,
    #[command(flatten)]
    pub(crate) node: TargetArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ChaosRunArgs {
    /// The scenario (`default`).
    #[arg(default_value = "default")]
    pub(crate) scenario: String,
    /// Print the scorecard as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) node: TargetArgs,
}

/// `mortar deploy <service> …`, or `mortar deploy promote|abort <service>`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct DeployArgs {
    #[command(subcommand)]
    pub(crate) decision: Option<DeployDecision>,
    /// The service to deploy.
    #[arg(required = true)]
    pub(crate) service: Option<String>,
    /// The release to deploy (an id or unique prefix from `mortar releases`, or `boot`) [default: record a release of what is on disk now and deploy it].
    #[arg(long)]
    pub(crate) release: Option<String>,
    /// rolling, recreate or blue-green [default: the manifest's deploy.strategy, else rolling].
    #[arg(long)]
    pub(crate) strategy: Option<String>,
    /// Blue-green: wait for `mortar deploy promote|abort` instead of deciding on the analysis.
    #[arg(long)]
    pub(crate) manual: bool,
    /// Return once the deploy has started instead of following it.
    #[arg(long)]
    pub(crate) detach: bool,
    #[command(flatten)]
    pub(crate) target: TargetArgs,
}

/// An operator's decision on a deploy.
#[derive(Debug, Subcommand)]
pub(crate) enum DeployDecision {
    /// Promote a manual blue-green deploy: all traffic to the new version, then drain the old.
    Promote(ServiceArgs),
    /// Abort a running deploy: it rolls back to the old version.
    Abort(ServiceArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RollbackArgs {
    /// The service to roll back.
    pub(crate) service: String,
    /// rolling, recreate or blue-green [default: the manifest's deploy.strategy].
    #[arg(long)]
    pub(crate) strategy: Option<String>,
    #[command(flatten)]
    pub(crate) target: TargetArgs,
}

#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    /// The service.
    pub(crate) service: String,
    /// Print the deploys as JSON (one array).
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) target: TargetArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Process start to ready of a service, e.g. `mortar bench start -- target/release/examples/minimal`.
    Start(BenchStartArgs),
    /// Bus throughput and latency of the embedded broker, and of NATS JetStream with `--url nats://…`.
    Bus(BenchBusArgs),
    /// Gateway throughput and added latency against a direct call and nginx, and the SDK client's overhead.
    Http(BenchHttpArgs),
    /// Commands/s, command latency and projection lag of the CQRS stack (SQLite, or PostgreSQL with --store-url).
    Cqrs(BenchCqrsArgs),
}

#[derive(Debug, Args)]
pub(crate) struct BenchCqrsArgs {
    /// The event store to bench: `postgres://user@host/db` (a scratch schema
    /// is created and dropped); default: SQLite in a scratch directory.
    #[arg(long)]
    pub(crate) store_url: Option<String>,
    /// Concurrent clients issuing commands.
    #[arg(long, default_value_t = 128)]
    pub(crate) clients: usize,
    /// Seconds per phase (full load, then half load with a live projection).
    #[arg(long, default_value_t = 5)]
    pub(crate) duration_secs: u64,
}

#[derive(Debug, Args)]
pub(crate) struct BenchHttpArgs {
    /// Upstream instances behind the gateway and nginx.
    #[arg(long, default_value_t = 3)]
    pub(crate) instances: usize,
    /// Concurrent requests in the closed-loop runs.
    #[arg(long, default_value_t = 32)]
    pub(crate) concurrency: usize,
    /// Seconds of each run.
    #[arg(long, default_value_t = 5)]
    pub(crate) duration_secs: u64,
    /// Request rate of the light-load runs (req/s).
    #[arg(long, default_value_t = 1000)]
    pub(crate) rate: u64,
    /// Threads serving the gateway (one single-threaded runtime each).
    #[arg(long, default_value_t = 2)]
    pub(crate) gateway_threads: usize,
    /// Skip the nginx comparison.
    #[arg(long)]
    pub(crate) no_nginx: bool,
}

#[derive(Debug, Args)]
pub(crate) struct BenchBusArgs {
    /// Also run the same workload against NATS JetStream at this URL (e.g. nats://127.0.0.1:4222).
    #[arg(long)]
    pub(crate) url: Option<String>,
    /// Benchmark a running mortar bus instead of starting `mortar bus serve` on a temporary directory.
    #[arg(long)]
    pub(crate) mortar_url: Option<String>,
    /// Concurrent publishers.
    #[arg(long, default_value_t = 4)]
    pub(crate) producers: usize,
    /// Competing consumers in one group.
    #[arg(long, default_value_t = 4)]
    pub(crate) consumers: usize,
    /// Payload bytes.
    #[arg(long, default_value_t = 256)]
    pub(crate) size: usize,
    /// Messages in the throughput phases.
    #[arg(long, default_value_t = 200_000)]
    pub(crate) count: usize,
    /// Publishes each producer keeps in flight.
    #[arg(long, default_value_t = 512)]
    pub(crate) window: usize,
    /// Publish rate of the latency phase (msg/s).
    #[arg(long, default_value_t = 50_000)]
    pub(crate) rate: u64,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 5)]
    pub(crate) latency_secs: u64,
    /// When the broker started for the run shows messages to consumers:
    /// `written` or `synced` (see `mortar bus serve --delivery`).
    #[arg(long, default_value_t = mortar_bus::Delivery::Written)]
    pub(crate) delivery: mortar_bus::Delivery,
}

#[derive(Debug, Args)]
pub(crate) struct BenchStartArgs {
    /// How many launches to measure.
    #[arg(long, default_value_t = 50)]
    pub(crate) runs: usize,
    /// The service to launch, after `--`.
    #[arg(last = true, required = true)]
    pub(crate) command: Vec<String>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
