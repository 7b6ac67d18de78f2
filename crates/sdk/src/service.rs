//! The service harness: the one call a service makes in `main`.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use mortar_tls::InstanceTls;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Env, FromEnv, ServiceConfig};

/// Where the SDK resolves other services when there is no node:
/// `dns:PORT` resolves `<service>:PORT` by the platform's DNS (set by
/// `mortar export kubernetes`).
pub const DISCOVERY_ENV: &str = "MORTAR_DISCOVERY";
use crate::health::Readiness;
use crate::{http, logging, report, shutdown};

/// The exit code for a configuration error (`EX_CONFIG` from sysexits.h), so
/// a supervisor can tell "fix the config" from "crashed".
pub const EXIT_CONFIG: u8 = 78;

/// Any error a service's setup may return. A [`ConfigError`] inside it makes
/// the process exit with [`EXIT_CONFIG`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a service's setup gets: its environment, common settings, readiness
/// and the shutdown signal.
#[derive(Debug, Clone)]
pub struct Context {
    env: Env,
    service: ServiceConfig,
    local_addr: SocketAddr,
    readiness: Readiness,
    shutdown: CancellationToken,
    /// The node's TLS material when it gave this instance some: the server
    /// then requires client certificates and clients present this one.
    tls: Option<Arc<InstanceTls>>,
    /// Work the drain waits for after the HTTP server (bus consumers
    /// finishing and acking what they hold).
    drains: Drains,
    /// What `/metrics` shows: requests answered, and the clients made here.
    metrics: crate::metrics::ServiceMetrics,
}

/// Tasks the draining shutdown waits for, within the grace period.
#[derive(Debug, Clone, Default)]
struct Drains(std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>);

impl Drains {
    fn push(&self, task: tokio::task::JoinHandle<()>) {
        let mut tasks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    async fn wait(&self) {
        let tasks: Vec<_> = {
            let mut tasks = self.0.lock().unwrap_or_else(|p| p.into_inner());
            tasks.drain(..).collect()
        };
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Context {
    /// The environment snapshot taken at start.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// Reads the service's own typed configuration.
    pub fn config<T: FromEnv>(&self) -> Result<T, ConfigError> {
        T::from_env(&self.env)
    }

    /// The settings every service has (name, instance, port, grace period…).
    pub fn service(&self) -> &ServiceConfig {
        &self.service
    }

    /// The address the listener is bound to (with the OS-chosen port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Readiness: add a check per dependency the service cannot work without.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Connects to the node's bus (`MORTAR_BUS_URL`) with this instance's
    /// outbox (`MORTAR_BUS_OUTBOX`): while the bus is unreachable, publishes
    /// are kept durably on local disk and relayed in order later.
    ///
    /// A missing or malformed `MORTAR_BUS_URL` is a [`ConfigError`] (exit 78).
    pub async fn bus(&self) -> Result<crate::bus::Client, BoxError> {
        Ok(crate::bus::Client::connect_with(self.bus_config()?).await?)
    }

    /// This instance's bus settings from the environment, without
    /// connecting (see [`crate::bus::connect_when_reachable`]).
    pub fn bus_config(&self) -> Result<crate::bus::ClientConfig, BoxError> {
        if self.env.raw(mortar_bus_client::BUS_URL_ENV).is_none() {
            return Err(Box::new(ConfigError::Missing {
                name: mortar_bus_client::BUS_URL_ENV.into(),
                expected: "a bus URL such as mortar://127.0.0.1:4222 (mortar up sets it)".into(),
            }));
        }
        Ok(crate::bus::ClientConfig::from_lookup(
            &self.service.instance,
            |key| self.env.raw(key).map(str::to_owned),
        )?)
    }

    /// A resilient HTTP client that calls other services by name, resolving
    /// them through the node's registry (`MORTAR_NODE_URL`) and following
    /// instances as they come and go; with `MORTAR_DISCOVERY=dns:PORT`
    /// (where there is no node, e.g. Kubernetes) through the platform's DNS
    /// as `<service>:PORT` instead.
    pub fn client(
        &self,
        config: crate::call::ClientConfig,
    ) -> Result<crate::call::Client, ConfigError> {
        let dns_port = self.env.parse_with(
            DISCOVERY_ENV,
            "dns:PORT, e.g. dns:80 (resolve services by the platform's DNS)",
            |s| {
                s.strip_prefix("dns:")
                    .and_then(|p| p.parse::<u16>().ok())
                    .filter(|p| *p != 0)
                    .ok_or_else(|| "use dns: followed by a port number 1-65535".to_owned())
            },
        )?;
        if let Some(port) = dns_port {
            let resolver = std::sync::Arc::new(mortar_resilience::DnsResolver::new(port));
            return Ok(crate::call::Client::new(resolver, config));
        }
        let node = self
            .service
            .node_url
            .clone()
            .ok_or_else(|| ConfigError::Missing {
                name: "MORTAR_NODE_URL".into(),
                expected: "the node's URL such as http://127.0.0.1:4300 (mortar up sets it)".into(),
            })?;
        let resolver = std::sync::Arc::new(crate::registry::RemoteRegistry::with_token(
            &node,
            self.env.raw(mortar_tls::NODE_TOKEN_ENV),
        ));
        let mut config = config;
        if let Some(tls) = &self.tls {
            let client = tls.client_config().map_err(|e| ConfigError::Missing {
                name: mortar_tls::CERT_ENV.into(),
                expected: format!("a usable certificate and key from the node ({e})"),
            })?;
            config.connector = mortar_resilience::Connector::Tls {
                config: client,
                domain: format!("{}.mortar", tls.app),
            };
        }
        let client = crate::call::Client::new(resolver, config);
        self.metrics.watch_client(&client);
        Ok(client)
    }

    /// The service's metrics, served at `/metrics`: requests per route
    /// (recorded by the SDK) and every client made with
    /// [`Context::client`].
    pub fn metrics(&self) -> &crate::metrics::ServiceMetrics {
        &self.metrics
    }

    /// Checks the access tokens of callers against the keys that the
    /// issuer *service* `issuer_service` publishes (fetched by name,
    /// cached, refreshed in the background, kept while the issuer is down).
    ///
    /// Tokens must name `issuer_service` as `iss` (`MORTAR_AUTH_ISSUER`
    /// overrides) and this application as `aud` (`MORTAR_APP`;
    /// `MORTAR_AUTH_AUDIENCE` overrides); `MORTAR_AUTH_LEEWAY` (default
    /// 30 s) is the clock skew tolerated on `exp` and `nbf`. Use the result's
    /// [`require`](crate::auth::Auth::require) on routes. Call inside setup.
    pub fn auth(&self, issuer_service: &str) -> Result<crate::auth::Auth, ConfigError> {
        let audience = match self.env.raw("MORTAR_AUTH_AUDIENCE") {
            Some(a) if !a.is_empty() => a.to_owned(),
            _ => self
                .env
                .raw("MORTAR_APP")
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| ConfigError::Missing {
                    name: "MORTAR_APP".into(),
                    expected: "the application's name, the audience of its access tokens (mortar up sets it; or set MORTAR_AUTH_AUDIENCE)".into(),
                })?,
        };
        let issuer = match self.env.raw("MORTAR_AUTH_ISSUER") {
            Some(i) if !i.is_empty() => i.to_owned(),
            _ => issuer_service.to_owned(),
        };
        let mut config = crate::auth::VerifierConfig::new(issuer, audience);
        config.leeway = self.env.duration("MORTAR_AUTH_LEEWAY", config.leeway)?;
        let client = self.client(crate::call::ClientConfig::default())?;
        let verifier = crate::auth::Verifier::for_service(config, client, issuer_service);
        verifier.spawn_refresh();
        Ok(crate::auth::Auth::new(verifier))
    }

    /// The instance's TLS material (certificate, CA, allowed callers), when
    /// the node handed it over (`MORTAR_TLS_CERT` …).
    pub fn tls(&self) -> Option<&Arc<InstanceTls>> {
        self.tls.as_ref()
    }

    /// Consumes `topic` as a member of `group` for the life of the
    /// service, running `handler` on up to `concurrency` messages at once
    /// (`Ok` acks, `Err` nacks for a later redelivery).
    ///
    /// It connects whenever the bus is reachable and retries the
    /// subscription (the topic may not exist yet), so it never holds up the
    /// start. At shutdown — SIGTERM from `mortar stop`, a scale-in or the
    /// node stopping — it drains: the broker sends nothing more, every
    /// message already delivered is handled and acked, and only then does
    /// the process exit (within `MORTAR_SHUTDOWN_GRACE`). So removing a
    /// consumer never makes another one handle its messages again.
    ///
    /// A missing or malformed `MORTAR_BUS_URL` is a [`ConfigError`].
    pub fn consume<F, Fut, E>(
        &self,
        topic: &str,
        group: &str,
        concurrency: usize,
        handler: F,
    ) -> Result<(), BoxError>
    where
        F: Fn(crate::bus::Message) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let config = self.bus_config()?;
        let shutdown = self.shutdown.clone();
        let (topic, group) = (topic.to_owned(), group.to_owned());
        self.spawn_drained(async move {
            let Some(bus) = crate::bus::connect_when_reachable(config, shutdown.clone()).await
            else {
                return;
            };
            let subscription = loop {
                match bus
                    .subscribe(&topic, &group, concurrency, handler.clone())
                    .await
                {
                    Ok(subscription) => break subscription,
                    Err(e) => {
                        tracing::warn!(error = %e, topic, group, "cannot subscribe yet; retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                        }
                    }
                }
            };
            tracing::info!(topic, group, "consuming");
            shutdown.cancelled().await;
            tracing::info!(
                topic,
                group,
                "draining the subscription: finishing and acking what was delivered"
            );
            subscription.stop().await;
            tracing::info!(topic, group, "subscription drained");
        });
        Ok(())
    }

    /// Spawns background work that the draining shutdown waits for (within
    /// `MORTAR_SHUTDOWN_GRACE`, alongside in-flight requests): a task that
    /// stops on [`Context::shutdown_token`] and then finishes what it holds
    /// — a consumer's `Subscription::stop`, say — completes before the
    /// process exits instead of being cut off.
    pub fn spawn_drained<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.drains.push(tokio::spawn(work));
    }

    /// Cancelled when shutdown begins; background tasks stop taking new work
    /// when it fires.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Runs a service: configuration, logging, port binding, health, graceful
/// shutdown. Returns the process exit code.
///
/// `default_name` is the service's name when `MORTAR_SERVICE` is unset.
/// `setup` builds the service's routes; an error from it stops the process
/// before it ever reports ready.
pub fn run<F, Fut>(default_name: &str, setup: F) -> ExitCode
where
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = Result<Router, BoxError>>,
{
    run_with_projections(default_name, Vec::new(), setup)
}

/// [`run`] for a service that keeps read models: it declares their
/// projections so that, started with
/// [`REPLAY_CHECK_ENV`](crate::replay_check::REPLAY_CHECK_ENV) set (by
/// `mortar backup verify`), it does not serve but rebuilds each one from
/// its events into a scratch read store, compares it row for row with the
/// existing read model, prints the report and exits non-zero on a
/// difference.
pub fn run_with_projections<F, Fut>(
    default_name: &str,
    projections: Vec<crate::replay_check::DeclaredProjection>,
    setup: F,
) -> ExitCode
where
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = Result<Router, BoxError>>,
{
    let started = Instant::now();
    let env = Env::from_process();
    let service = match ServiceConfig::from_env(&env, default_name) {
        Ok(service) => service,
        Err(e) => return config_failure(&e),
    };
    if let Some(spec) = env.raw(crate::replay_check::REPLAY_CHECK_ENV) {
        return crate::replay_check::run(&service.service, &projections, spec);
    }
    logging::init(&service.service, &service.instance, &service.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(serve(env, service, setup, started));
    // A blocking read of stdin (the node lifeline) never returns while the
    // node lives; do not let it hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    code
}

/// Prints a configuration error as one line on stderr and picks the exit code.
fn config_failure(error: &ConfigError) -> ExitCode {
    eprintln!("{error}");
    ExitCode::from(EXIT_CONFIG)
}

async fn serve<F, Fut>(env: Env, service: ServiceConfig, setup: F, started: Instant) -> ExitCode
where
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = Result<Router, BoxError>>,
{
    let mut signals = shutdown::Signals::install();
    let bind = SocketAddr::new(service.bind_addr, service.port);
    let listener = match TcpListener::bind(bind).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(address = %bind, error = %e, "cannot bind the service port; set PORT to a free port or 0");
            return ExitCode::FAILURE;
        }
    };
    let local_addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the bound address");
            return ExitCode::FAILURE;
        }
    };
    let tls = match InstanceTls::from_lookup(|k| env.raw(k).map(str::to_owned)) {
        Ok(tls) => tls.map(Arc::new),
        Err(e) => {
            eprintln!("config error: TLS material from the node is unusable: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let node_token = env.raw(mortar_tls::NODE_TOKEN_ENV).map(str::to_owned);
    let ctx = Context {
        env,
        service: service.clone(),
        local_addr,
        readiness: Readiness::default(),
        shutdown: CancellationToken::new(),
        tls: tls.clone(),
        drains: Drains::default(),
        metrics: crate::metrics::ServiceMetrics::default(),
    };
    let metrics = ctx.metrics.clone();
    let readiness = ctx.readiness.clone();
    let token = ctx.shutdown.clone();
    let drains = ctx.drains.clone();
    let routes = match setup(ctx).await {
        Ok(routes) => routes,
        Err(e) => {
            if let Some(config) = e.downcast_ref::<ConfigError>() {
                return config_failure(config);
            }
            tracing::error!(error = %e, "service setup failed");
            return ExitCode::FAILURE;
        }
    };
    let scrape = metrics.clone();
    let app = routes
        .merge(readiness.routes())
        .route(
            "/metrics",
            axum::routing::get(move || {
                let scrape = scrape.clone();
                async move { scrape.response() }
            }),
        )
        .fallback(http::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::request::observe,
        ));

    let mut server = match &tls {
        None => tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(token.clone().cancelled_owned())
                .into_future(),
        ),
        Some(tls) => {
            let listener = match tls
                .server_config()
                .map_err(|e| e.to_string())
                .and_then(|config| {
                    crate::tls::TlsListener::new(listener, config, tls.app.clone())
                        .map_err(|e| e.to_string())
                }) {
                Ok(listener) => listener,
                Err(e) => {
                    eprintln!("config error: cannot serve TLS with the node's certificate: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let app = app.layer(axum::middleware::from_fn_with_state(
                tls.clone(),
                crate::tls::require_caller,
            ));
            tokio::spawn(
                axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<crate::tls::Peer>(),
                )
                .with_graceful_shutdown(token.clone().cancelled_owned())
                .into_future(),
            )
        }
    };

    tracing::info!(
        address = %local_addr.ip(),
        port = local_addr.port(),
        startup_ms = started.elapsed().as_secs_f64() * 1000.0,
        tls = tls.is_some(),
        "listening"
    );
    if let Some(node_url) = &service.node_url {
        let (node_url, name, instance) = (
            node_url.clone(),
            service.service.clone(),
            service.instance.clone(),
        );
        tokio::spawn(async move {
            let token = node_token.as_deref();
            if let Err(e) =
                report::report_endpoint(&node_url, &name, &instance, local_addr, token).await
            {
                tracing::warn!(error = %e, "could not report the bound port to the node");
            }
        });
    }

    let node_gone = async {
        if service.exit_with_node {
            shutdown::node_gone().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let signal = tokio::select! {
        result = &mut server => {
            tracing::error!(result = ?result, "the HTTP server stopped on its own");
            return ExitCode::FAILURE;
        }
        signal = signals.recv() => signal,
        () = node_gone => "node gone (stdin closed)",
    };
    readiness.start_draining();
    token.cancel();
    let grace = service.shutdown_grace;
    tracing::info!(
        signal,
        grace_ms = grace.as_millis() as u64,
        "draining: no new connections, finishing in-flight requests"
    );

    // In-flight requests and held messages drain side by side.
    let drained = async {
        let (result, ()) = tokio::join!(server, drains.wait());
        result
    };
    tokio::select! {
        result = tokio::time::timeout(grace, drained) => match result {
            Ok(Ok(Ok(()))) => {
                tracing::info!("drained, exiting");
                ExitCode::SUCCESS
            }
            Ok(Ok(Err(e))) => {
                tracing::error!(error = %e, "the HTTP server failed while draining");
                ExitCode::FAILURE
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the HTTP server task failed while draining");
                ExitCode::FAILURE
            }
            Err(_) => {
                tracing::warn!(grace_ms = grace.as_millis() as u64, "grace period over with requests still in flight; exiting anyway");
                ExitCode::FAILURE
            }
        },
        second = signals.recv() => {
            tracing::warn!(signal = second, "second signal: exiting without waiting for in-flight requests");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod discovery_tests {
    use super::*;

    fn context(pairs: &[(&str, &str)]) -> Context {
        let env = Env::from_pairs(pairs.iter().copied());
        Context {
            service: ServiceConfig::from_env(&env, "caller").unwrap(),
            env,
            local_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            readiness: Readiness::default(),
            shutdown: CancellationToken::new(),
            tls: None,
            drains: Drains::default(),
            metrics: crate::metrics::ServiceMetrics::default(),
        }
    }

    #[tokio::test]
    async fn with_dns_discovery_services_are_called_by_their_dns_name_without_a_node() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = Router::new().route("/hello", axum::routing::get(|| async { "hi" }));
        tokio::spawn(axum::serve(listener, app).into_future());
        let discovery = format!("dns:{port}");
        let ctx = context(&[(DISCOVERY_ENV, discovery.as_str())]);
        let client = ctx.client(crate::call::ClientConfig::default()).unwrap();
        // The first lookup runs in the background, as the registry's first
        // answer does: a call right at start may find no instance yet.
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        let response = loop {
            let request = ::http::Request::get("/hello")
                .body(Default::default())
                .unwrap();
            match client.call("localhost", request).await {
                Ok(response) => break response,
                Err(e) if Instant::now() < deadline => {
                    assert!(
                        matches!(e, crate::call::CallError::NoInstances { .. }),
                        "{e}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("localhost:{port} was never called: {e}"),
            }
        };
        assert_eq!(response.status(), ::http::StatusCode::OK);
    }

    #[test]
    fn a_malformed_discovery_setting_is_a_config_error_naming_it() {
        for bad in ["dns", "dns:0", "dns:http", "consul:80"] {
            let ctx = context(&[(DISCOVERY_ENV, bad)]);
            let e = ctx
                .client(crate::call::ClientConfig::default())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.contains("MORTAR_DISCOVERY") && e.contains("dns:PORT"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn without_discovery_or_a_node_the_client_names_the_node_url() {
        let e = context(&[])
            .client(crate::call::ClientConfig::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("MORTAR_NODE_URL"), "{e}");
    }
}
