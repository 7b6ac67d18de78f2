//! A local HTTP server that a test can kill outright, open connections and
//! all, to play an instance that dies mid-flight.

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// Serves `app` on a free loopback port. Aborting the returned task drops
/// its `JoinSet`, which aborts every open connection too: an instance that
/// vanishes like a killed process, not one that drains politely.
pub async fn serve_killable(app: Router) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            let app = app.clone();
            connections.spawn(async move {
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, server)
}
