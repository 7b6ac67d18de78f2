//! Running a node: lock the data directory, serve the admin API, run the
//! supervisor until SIGTERM or SIGINT, then stop everything in order.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

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
    /// The log filter passed on to instances.
    pub log_level: Option<String>,
}

/// Why a node could not run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directory is unusable or taken.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The services cannot be launched (e.g. a program is missing).
    #[error(transparent)]
    Launch(#[from] LaunchError),
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
        let data_dir = DataDir::lock(&data_path)?;
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
        let admin_url = format!("http://{admin_addr}");
        let supervisor = Arc::new(Supervisor::new(
            manifest.clone(),
            hub.clone(),
            SupervisorOptions {
                node_url: admin_url.clone(),
                data_dir: data_dir.path().to_owned(),
                log_level: options.log_level.clone(),
            },
        )?);
        let info = NodeInfo {
            pid: std::process::id(),
            admin_url: admin_url.clone(),
            manifest: manifest.path.clone(),
            started_at: mortar_sdk::logging::now_rfc3339(),
        };
        data_dir.publish(&info)?;

        let stop_admin = CancellationToken::new();
        let app = admin::router(AdminState {
            supervisor: supervisor.clone(),
            hub,
            node: info,
        });
        let server = tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(stop_admin.clone().cancelled_owned())
                .into_future(),
        );
        tracing::info!(
            app = %manifest.app.name, admin_url = %admin_url,
            data_dir = %data_dir.path().display(),
            "node started; admin API on loopback"
        );

        let signal = tokio::select! {
            () = supervisor.start() => signals.recv().await,
            signal = signals.recv() => signal,
        };
        tracing::info!(signal, "stopping services in reverse dependency order");
        supervisor.stop().await;
        stop_admin.cancel();
        // Followers of `mortar logs -f` hold the admin server open; do not
        // wait on them forever.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), server).await;
        data_dir.unpublish();
        tracing::info!("node stopped");
        Ok(())
    }
}
