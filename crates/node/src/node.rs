//! Running a node: lock the data directory, serve the admin API, run the
//! supervisor until SIGTERM or SIGINT, then stop everything in order.

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mortar_bus::BrokerConfig;
use mortar_bus_client::{ClientConfig, JetStream};
use mortar_bus_server::{BusBackend, Gate, JetStreamBackend, run_embedded_with};
use mortar_discovery::Registry;
use mortar_discovery::dns::DnsServer;
use mortar_gateway::{Gateway, GatewayConfig};
use mortar_manifest::Manifest;
use mortar_supervisor::{LaunchError, LogHub, Supervisor, SupervisorOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::datadir::{DataDir, DataDirError, NodeInfo};

/// How a node is run.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The data directory; `.mortar` beside the manifest when `None`.
    pub data_dir: Option<PathBuf>,
    /// Where the admin API listens; loopback with a free port by default.
    pub admin_addr: SocketAddr,
    /// Where the DNS server answers for service names; loopback, free port by default.
    pub dns_addr: SocketAddr,
    /// Where the embedded bus accepts clients; loopback, free port by default.
    pub bus_addr: SocketAddr,
    /// Where the gateway listens; overrides the manifest's `gateway.listen`.
    pub gateway_addr: Option<SocketAddr>,
    /// A `nats://` URL: use that NATS JetStream as the bus instead of
    /// starting the embedded broker (`bus_addr` is then unused).
    pub bus_url: Option<String>,
    /// A PostgreSQL database (`postgres://…`, without `schema`) for every
    /// service's store, each in its own schema; `None`: SQLite files in the
    /// data directory.
    pub store_url: Option<String>,
    /// The log filter passed on to instances.
    pub log_level: Option<String>,
    /// The private key that decrypts the app's secrets file; needed only
    /// when a service names secrets.
    pub secrets_key: Option<PathBuf>,
    /// The key's certificate, for precise errors (optional).
    pub secrets_cert: Option<PathBuf>,
    /// How long the certificates the node's CA gives instances (and the
    /// gateway and the node itself) live; each is renewed at two thirds.
    pub cert_lifetime: Duration,
}

/// The default lifetime of instance certificates.
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Why a node could not run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directory is unusable or taken.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The services cannot be launched (e.g. a program is missing).
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The embedded bus cannot start.
    #[error(transparent)]
    Bus(#[from] mortar_bus_server::ServerError),
    /// The external bus cannot be used.
    #[error("cannot use the bus {url}: {reason}")]
    ExternalBus {
        /// The URL (credentials removed).
        url: String,
        /// Why.
        reason: String,
    },
    /// A topic of the manifest cannot be created.
    #[error("cannot create bus topic {topic:?}: {source}")]
    Topic {
        /// The topic.
        topic: String,
        /// Why.
        source: mortar_bus::BusError,
    },
    /// Services name secrets but no key to decrypt them was given.
    #[error(
        "services {} get secrets from {}, but no key to decrypt it was given; set MORTAR_SECRETS_KEY (or --secrets-key) to the private key of one of its recipients",
        services.join(", "),
        file.display()
    )]
    SecretsKeyMissing {
        /// The secrets file.
        file: PathBuf,
        /// The services that name secrets.
        services: Vec<String>,
    },
    /// The secrets cannot be decrypted or lack what services need.
    #[error(transparent)]
    Secrets(#[from] mortar_secrets::SecretsError),
    /// The node's CA or a certificate cannot be made or loaded.
    #[error("TLS: {0}")]
    Tls(#[from] mortar_tls::TlsError),
    /// The DNS server cannot start.
    #[error(transparent)]
    Dns(#[from] mortar_discovery::dns::DnsError),
    /// The gateway cannot listen.
    #[error(
        "cannot listen on {addr} for the gateway: {source}; set gateway.listen in the manifest or MORTAR_GATEWAY_ADDR to a free address"
    )]
    GatewayBind {
        /// The address tried.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The admin API cannot listen.
    #[error(
        "cannot listen on {addr} for the admin API: {source}; set MORTAR_ADMIN_ADDR to a free address"
    )]
    Bind {
        /// The address tried.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// A running node.
#[derive(Debug)]
pub struct Node;

impl Node {
    /// Runs `manifest` until SIGTERM or SIGINT, then stops services in
    /// reverse dependency order and returns.
    pub async fn run(
        manifest: Manifest,
        hub: LogHub,
        options: NodeOptions,
    ) -> Result<(), NodeError> {
        let data_path = options
            .data_dir
            .clone()
            .unwrap_or_else(|| manifest.dir.join(crate::datadir::DEFAULT_DIR));
        // Installed first, so a signal during start-up stops services in
        // order instead of killing the node outright.
        let mut signals = mortar_sdk::shutdown::Signals::install();
        // Before anything starts: a secrets problem must start nothing.
        let secrets = crate::secrets::for_services(
            &manifest,
            options.secrets_key.as_deref(),
            options.secrets_cert.as_deref(),
        )?;
        let data_dir = DataDir::lock(&data_path)?;
        let tls = NodeTlsSetup::start(&manifest, data_dir.path(), options.cert_lifetime)?;
        // Every node API asks for a credential the node issued: the admin
        // token (a 0600 file for the CLI) or an instance's own token.
        let credentials = Arc::new(mortar_tls::Credentials::create(data_dir.path())?);
        let listener = TcpListener::bind(options.admin_addr)
            .await
            .map_err(|source| NodeError::Bind {
                addr: options.admin_addr,
                source,
            })?;
        let admin_addr = listener.local_addr().map_err(|source| NodeError::Bind {
            addr: options.admin_addr,
            source,
        })?;
        if !admin_addr.ip().is_loopback() {
            // Credentials are still required, but they travel in clear
            // HTTP: only loopback keeps them off the network.
            tracing::warn!(%admin_addr, "the admin API listens beyond loopback; its bearer tokens cross the network unencrypted");
        }
        let admin_url = format!("http://{admin_addr}");
        let stop_admin = CancellationToken::new();
        let registry = Registry::new();
        let reaper = registry.spawn_reaper(Duration::from_secs(1), stop_admin.clone());
        let dns = DnsServer::start(registry.clone(), &manifest.app.name, options.dns_addr).await?;
        let dns_addr = dns.local_addr();
        let dns_task = tokio::spawn(dns.run(stop_admin.clone()));
        let bus = NodeBus::start(
            &manifest,
            &options,
            data_dir.path(),
            credentials.clone(),
            stop_admin.clone(),
        )
        .await?;
        for topic in &manifest.bus.topics {
            bus.backend
                .create_topic(topic)
                .await
                .map_err(|source| NodeError::Topic {
                    topic: topic.clone(),
                    source,
                })?;
        }
        let gateway_addr = options
            .gateway_addr
            .or(manifest.gateway.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let gateway_listener =
            TcpListener::bind(gateway_addr)
                .await
                .map_err(|source| NodeError::GatewayBind {
                    addr: gateway_addr,
                    source,
                })?;
        let gateway_url = format!(
            "http://{}",
            gateway_listener
                .local_addr()
                .map_err(|source| NodeError::GatewayBind {
                    addr: gateway_addr,
                    source
                })?
        );
        let mut gateway_config = GatewayConfig {
            routes: crate::edge::routes(&manifest),
            auth: crate::edge::auth(&manifest),
            ..GatewayConfig::default()
        };
        // The gateway calls services as `gateway`, over mTLS.
        gateway_config.client.connector = tls.gateway_connector()?;
        let gateway = Gateway::new(Arc::new(registry.clone()), gateway_config);
        let stop_gateway = CancellationToken::new();
        let gateway_task = tokio::spawn(
            gateway
                .clone()
                .serve(gateway_listener, stop_gateway.clone()),
        );
        let supervisor = Arc::new(Supervisor::new(
            manifest.clone(),
            hub.clone(),
            SupervisorOptions {
                node_url: admin_url.clone(),
                data_dir: data_dir.path().to_owned(),
                log_level: options.log_level.clone(),
                registry: Some(registry.clone()),
                extra_env: {
                    let mut env = bus.env.clone();
                    env.insert("MORTAR_DNS_ADDR".to_owned(), dns_addr.to_string());
                    env
                },
                secrets,
                tls: Some(tls.supervisor.clone()),
                credentials: Some(credentials.clone()),
                store_url: options.store_url.clone(),
            },
        )?);
        let info = NodeInfo {
            pid: std::process::id(),
            admin_url: admin_url.clone(),
            manifest: manifest.path.clone(),
            started_at: mortar_sdk::logging::now_rfc3339(),
            dns_addr: Some(dns_addr),
            bus_url: Some(bus.url.clone()),
            gateway_url: Some(gateway_url.clone()),
        };
        data_dir.publish(&info)?;

        let sessions = Arc::new(crate::dashboard::Sessions::new(admin_addr.port()));
        let snapshots = crate::dashboard::sampler::start(
            crate::dashboard::sampler::Sources {
                supervisor: supervisor.clone(),
                gateway: gateway.client().clone(),
                bus: bus.backend.clone(),
                errors: crate::dashboard::errors::RecentErrors::follow(&hub, stop_admin.clone()),
            },
            stop_admin.clone(),
        );
        let dashboard = crate::dashboard::router(crate::dashboard::DashboardState {
            sessions: sessions.clone(),
            snapshots,
            admin_url: admin_url.clone(),
            stop: stop_admin.clone(),
        });

        let bus_http = match &bus.gate {
            Some(gate) => mortar_bus_server::http_router(bus.backend.clone()).layer(
                axum::middleware::from_fn_with_state(
                    gate.clone(),
                    mortar_bus_server::http_middleware,
                ),
            ),
            None => mortar_bus_server::http_router(bus.backend.clone()),
        };
        let app = admin::router(AdminState {
            supervisor: supervisor.clone(),
            hub,
            node: info,
            metrics: vec![
                Arc::new(crate::metrics::SupervisorSource(supervisor.clone())),
                Arc::new(crate::metrics::BusSource(bus.backend.clone())),
                Arc::new(crate::metrics::GatewaySource(gateway.clone())),
            ],
        })
        .merge(crate::deploys::router(crate::deploys::DeployApi {
            supervisor: supervisor.clone(),
            traffic: Arc::new(crate::deploys::GatewayTraffic(gateway.clone())),
            data_dir: data_dir.path().to_owned(),
        }))
        .merge(crate::faults::router(crate::faults::Faults::new(
            supervisor.clone(),
            bus.gate.clone(),
            gateway.clone(),
        )))
        .merge(mortar_discovery::http::router(registry))
        .merge(bus_http)
        .merge(dashboard)
        .layer(axum::middleware::from_fn_with_state(
            crate::guard::Guard {
                credentials: credentials.clone(),
                sessions,
            },
            crate::guard::require_credentials,
        ));
        let server = tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(stop_admin.clone().cancelled_owned())
                .into_future(),
        );
        tracing::info!(
            app = %manifest.app.name, admin_url = %admin_url,
            data_dir = %data_dir.path().display(),
            dns_addr = %dns_addr,
            bus_url = %bus.url,
            gateway_url = %gateway_url,
            "node started; admin API on loopback"
        );

        let stop_scaling = CancellationToken::new();
        let signal = tokio::select! {
            () = supervisor.start() => {
                // After the start, so scaling never launches a service
                // before its dependencies are ready.
                tokio::spawn(mortar_supervisor::autoscale::run(
                    supervisor.clone(),
                    backlog_source(bus.backend.clone()),
                    stop_scaling.clone(),
                ));
                signals.recv().await
            }
            signal = signals.recv() => signal,
        };
        stop_scaling.cancel();
        tracing::info!(
            signal,
            "stopping: gateway first (finishing its requests), then services in reverse dependency order"
        );
        stop_gateway.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), gateway_task).await;
        supervisor.stop().await;
        // After the services: they may publish while they drain.
        if let Some(embedded) = bus.embedded {
            embedded.shutdown().await;
        }
        stop_admin.cancel();
        // Followers of `mortar logs -f` hold the admin server open; do not
        // wait on them forever.
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), dns_task).await;
        let _ = reaper.await;
        drop(tls);
        data_dir.unpublish();
        tracing::info!("node stopped");
        Ok(())
    }
}

/// The node's CA and the certificates of the node itself (probes, admin
/// commands) and of the gateway, renewed while the node runs.
struct NodeTlsSetup {
    supervisor: mortar_supervisor::NodeTls,
    gateway: mortar_tls::InstanceTls,
    renewals: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for NodeTlsSetup {
    fn drop(&mut self) {
        for r in &self.renewals {
            r.abort();
        }
    }
}

impl NodeTlsSetup {
    /// Loads or creates the CA in `<data dir>/tls/ca` and issues the node's
    /// (`<data dir>/tls/node`, read by `mortar projections`) and the
    /// gateway's certificates.
    fn start(
        manifest: &Manifest,
        data_dir: &std::path::Path,
        lifetime: Duration,
    ) -> Result<NodeTlsSetup, NodeError> {
        let app = &manifest.app.name;
        let root = data_dir.join("tls");
        let ca = Arc::new(mortar_tls::Ca::load_or_create(&root.join("ca"), app)?);
        let mut renewals = Vec::new();
        let mut own = |name: &str, dir: PathBuf| -> Result<mortar_tls::InstanceTls, NodeError> {
            let files = ca.write_instance(name, &dir, lifetime)?;
            renewals.push(tokio::spawn(mortar_tls::renew_forever(
                ca.clone(),
                name.to_owned(),
                dir,
                lifetime,
            )));
            Ok(mortar_tls::InstanceTls::from_files(
                app,
                &files.cert,
                &files.key,
                &files.ca,
            )?)
        };
        let node = own(mortar_tls::NODE_IDENTITY, root.join("node"))?;
        let gateway = own(mortar_tls::GATEWAY_IDENTITY, root.join("gateway"))?;
        Ok(NodeTlsSetup {
            supervisor: mortar_supervisor::NodeTls {
                caller: mortar_tls::Caller::new(&node)?,
                ca,
                lifetime,
                dir: root.join("instances"),
            },
            gateway,
            renewals,
        })
    }

    fn gateway_connector(&self) -> Result<mortar_resilience::Connector, NodeError> {
        Ok(mortar_resilience::Connector::Tls {
            config: self.gateway.client_config()?,
            domain: format!("{}.mortar", self.gateway.app),
        })
    }
}

/// The autoscaler's view of the bus: a group's backlog (unacknowledged
/// plus undelivered) from the backend's latest statistics.
fn backlog_source(backend: Arc<dyn BusBackend>) -> mortar_supervisor::autoscale::BacklogSource {
    Arc::new(move |topic: &str, group: &str| {
        backend
            .last_stats()
            .into_iter()
            .find(|t| t.topic == topic)?
            .groups
            .into_iter()
            .find(|g| g.group == group)
            .map(|g| g.backlog)
    })
}

/// The node's bus: the embedded broker, or an external NATS JetStream.
struct NodeBus {
    /// What the admin API and metrics serve.
    backend: Arc<dyn BusBackend>,
    /// The URL instances get (credentials removed when shown).
    url: String,
    /// The bus variables every instance gets.
    env: BTreeMap<String, String>,
    /// The embedded broker, stopped after the services.
    embedded: Option<mortar_bus_server::EmbeddedBus>,
    /// Closes the embedded broker to everyone or to one service (fault
    /// injection); `None` with NATS.
    gate: Option<Gate>,
}

impl NodeBus {
    async fn start(
        manifest: &Manifest,
        options: &NodeOptions,
        data_dir: &std::path::Path,
        credentials: Arc<mortar_tls::Credentials>,
        stop: CancellationToken,
    ) -> Result<NodeBus, NodeError> {
        let spec = &manifest.bus;
        let Some(url) = options
            .bus_url
            .as_deref()
            .filter(|u| u.starts_with("nats://"))
        else {
            let bus_config = BrokerConfig {
                data_dir: data_dir.join("bus"),
                max_message_bytes: spec.max_message_bytes as usize,
                ack_deadline: spec.ack_deadline,
                max_deliveries: spec.max_deliveries,
                retention_age: Some(spec.retention),
                delivery: match spec.delivery {
                    mortar_manifest::BusDelivery::Written => mortar_bus::Delivery::Written,
                    mortar_manifest::BusDelivery::Synced => mortar_bus::Delivery::Synced,
                },
                ..BrokerConfig::default()
            };
            let identify_with = credentials.clone();
            let check = mortar_bus_server::TokenCheck(Arc::new(move |token: &str| {
                credentials.check(token).is_some()
            }));
            // The broker knows a client by its token; the token by its
            // instance; the instance id is `<service>-<n>`.
            let gate = Gate::new(Arc::new(move |token: &str| {
                match identify_with.check(token)? {
                    mortar_tls::Role::Instance(id) => service_of(&id).map(str::to_owned),
                    mortar_tls::Role::Admin => None,
                }
            }));
            let (_, bus) = run_embedded_with(
                bus_config,
                options.bus_addr,
                Some(check),
                Some(gate.clone()),
            )
            .await?;
            return Ok(NodeBus {
                backend: Arc::new(bus.broker().clone()),
                url: bus.url(),
                env: BTreeMap::from([("MORTAR_BUS_URL".to_owned(), bus.url())]),
                embedded: Some(bus),
                gate: Some(gate),
            });
        };
        if spec.delivery == mortar_manifest::BusDelivery::Synced {
            tracing::warn!(
                "bus.delivery = \"synced\" applies to the embedded broker only: JetStream delivers a message once stored, before its fsync"
            );
        }
        let mut config = ClientConfig::new(url, "mortar-node", "");
        config.max_deliveries = spec.max_deliveries;
        config.ack_deadline = spec.ack_deadline;
        config.max_message_bytes = spec.max_message_bytes as usize;
        let js = JetStream::connect(&config)
            .await
            .map_err(|e| NodeError::ExternalBus {
                url: mortar_bus_client::redact_url(url),
                reason: e.to_string(),
            })?;
        let backend = JetStreamBackend::new(js);
        tokio::spawn(backend.clone().refresh_stats(Duration::from_secs(2), stop));
        // The manifest's delivery settings, which JetStream leaves to each client.
        let env = BTreeMap::from([
            ("MORTAR_BUS_URL".to_owned(), url.to_owned()),
            (
                "MORTAR_BUS_MAX_DELIVERIES".to_owned(),
                spec.max_deliveries.to_string(),
            ),
            (
                "MORTAR_BUS_ACK_DEADLINE_MS".to_owned(),
                spec.ack_deadline.as_millis().to_string(),
            ),
            (
                "MORTAR_BUS_MAX_MESSAGE_BYTES".to_owned(),
                spec.max_message_bytes.to_string(),
            ),
        ]);
        Ok(NodeBus {
            backend: Arc::new(backend),
            url: mortar_bus_client::redact_url(url),
            env,
            embedded: None,
            gate: None,
        })
    }
}

/// The service of instance `id` (`order-history-2` → `order-history`).
fn service_of(id: &str) -> Option<&str> {
    let (service, n) = id.rsplit_once('-')?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_id_names_its_service() {
        assert_eq!(service_of("order-history-12"), Some("order-history"));
        assert_eq!(service_of("catalog-1"), Some("catalog"));
        assert_eq!(service_of("catalog"), None);
        assert_eq!(service_of("catalog-x"), None);
    }
}
