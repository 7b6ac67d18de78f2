//! Local HTTP servers playing instances: one a test can kill outright,
//! open connections and all, to play an instance that dies mid-flight, and
//! one that writes answers byte for byte, to play any instance at all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// A raw HTTP/1 server on a free loopback port: answers each request head
/// on a connection with the bytes of `answer(n)` (`n` counts requests on
/// that connection; `None` closes it) and counts accepted connections.
/// Request bodies are not read: send requests without one.
pub async fn raw_server(
    answer: impl Fn(usize) -> Option<Vec<u8>> + Send + Sync + 'static,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut n = 0;
                loop {
                    let mut chunk = [0u8; 4096];
                    let Ok(read) = s.read(&mut chunk).await else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..read]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let Some(bytes) = answer(n) else { return };
                        if s.write_all(&bytes).await.is_err() {
                            return;
                        }
                        n += 1;
                    }
                }
            });
        }
    });
    (addr, accepted)
}
