//! How the pool opens a connection: plain TCP, or mutual TLS over TCP.
//!
//! Kept apart from the pool so the pool stays about reuse: it asks the
//! [`Connector`] for a [`Stream`] and speaks HTTP/1 over whatever it gets.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How connections to instances are made.
#[derive(Clone, Default)]
pub enum Connector {
    /// Plain TCP (outside a node, or a node without TLS).
    #[default]
    Plain,
    /// TLS with `config` (which presents this caller's certificate); the
    /// server must prove the name `<service>.<domain>`, so an address that
    /// now belongs to another service is refused.
    Tls {
        /// Client configuration: roots and the client certificate.
        config: Arc<rustls::ClientConfig>,
        /// Suffix of the server names, e.g. `shop.mortar`.
        domain: String,
    },
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Connector::Plain => f.write_str("Plain"),
            Connector::Tls { domain, .. } => f.debug_struct("Tls").field("domain", domain).finish(),
        }
    }
}

impl Connector {
    /// Connects to `address`, an instance of `service`.
    pub(crate) async fn connect(&self, address: SocketAddr, service: &str) -> io::Result<Stream> {
        let tcp = TcpStream::connect(address).await?;
        // Requests are written whole; Nagle would only delay them.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an upstream connection");
        }
        match self {
            Connector::Plain => Ok(Stream::Plain(tcp)),
            Connector::Tls { config, domain } => {
                let name = ServerName::try_from(format!("{service}.{domain}"))
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let tls = TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await?;
                Ok(Stream::Tls(Box::new(tls)))
            }
        }
    }
}

/// A connection to an instance, plain or TLS.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http::Request;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::pool::{Pool, SendError};

    /// A CA for `shop`, and a loopback listener with the TLS identity of
    /// `catalog` to accept on.
    async fn catalog_listener(
        dir: &std::path::Path,
    ) -> (TcpListener, tokio_rustls::TlsAcceptor, mortar_tls::Ca) {
        let ca = mortar_tls::Ca::load_or_create(&dir.join("ca"), "shop").unwrap();
        let files = ca
            .write_instance("catalog", &dir.join("catalog"), Duration::from_secs(60))
            .unwrap();
        let tls = mortar_tls::InstanceTls::from_files("shop", &files.cert, &files.key, &files.ca)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config().unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        (listener, acceptor, ca)
    }

    /// One TLS server for `catalog` of `shop` that answers every request
    /// with 200 and the caller's service name, and counts connections.
    async fn catalog(
        dir: &std::path::Path,
    ) -> (
        SocketAddr,
        mortar_tls::Ca,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let (listener, acceptor, ca) = catalog_listener(dir).await;
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let caller = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| mortar_tls::peer_service(c, "shop"))
                        .unwrap_or_default();
                    let mut buf = [0u8; 4096];
                    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{caller}",
                            caller.len()
                        );
                        let _ = stream.write_all(answer.as_bytes()).await;
                        let _ = stream.flush().await;
                    }
                });
            }
        });
        (addr, ca, accepted)
    }

    fn connector(ca: &mortar_tls::Ca, dir: &std::path::Path, as_service: &str) -> Connector {
        let files = ca
            .write_instance(as_service, &dir.join(as_service), Duration::from_secs(60))
            .unwrap();
        let tls = mortar_tls::InstanceTls::from_files("shop", &files.cert, &files.key, &files.ca)
            .unwrap();
        Connector::Tls {
            config: tls.client_config().unwrap(),
            domain: "shop.mortar".into(),
        }
    }

    fn get() -> Request<Bytes> {
        Request::get("/")
            .header(http::header::HOST, "catalog")
            .body(Bytes::new())
            .unwrap()
    }

    #[tokio::test]
    async fn the_pool_speaks_mtls_and_the_server_learns_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, ca, accepted) = catalog(dir.path()).await;
        let pool = Pool::with_connector(
            addr,
            connector(&ca, dir.path(), "gateway"),
            "catalog",
            Duration::from_secs(30),
            4,
        );
        for _ in 0..3 {
            let resp = pool.call(&get()).await.unwrap();
            assert_eq!(resp.status, 200);
            use http_body_util::BodyExt;
            let body = resp.body.collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"gateway");
        }
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one TLS connection carries every call"
        );
    }

    #[tokio::test]
    async fn a_server_proving_another_service_name_is_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, ca, _) = catalog(dir.path()).await;
        // The address now answers as catalog, but we wanted ordering.
        let pool = Pool::with_connector(
            addr,
            connector(&ca, dir.path(), "gateway"),
            "ordering",
            Duration::from_secs(30),
            4,
        );
        match pool.call(&get()).await {
            Err(SendError::Connect(_)) => {}
            other => panic!(
                "expected a connect error, got {:?}",
                other.map(|r| r.status)
            ),
        }
    }

    /// A TLS server for `catalog` that reads one request with a
    /// `Content-Length` body per exchange and answers the body's length.
    async fn counting_catalog(dir: &std::path::Path) -> (SocketAddr, mortar_tls::Ca) {
        let (listener, acceptor, ca) = catalog_listener(dir).await;
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut stream = acceptor.accept(tcp).await.unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            let end = loop {
                if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end + 4;
                }
                let n = stream.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            };
            let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
            let length: usize = head
                .split("content-length: ")
                .nth(1)
                .and_then(|r| r.split("\r\n").next())
                .and_then(|n| n.parse().ok())
                .unwrap();
            while got.len() < end + length {
                let n = stream.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            let answer = length.to_string();
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{answer}",
                answer.len()
            );
            stream.write_all(reply.as_bytes()).await.unwrap();
            stream.flush().await.unwrap();
        });
        (addr, ca)
    }

    #[tokio::test]
    async fn a_large_request_body_crosses_tls_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, ca) = counting_catalog(dir.path()).await;
        let pool = Pool::with_connector(
            addr,
            connector(&ca, dir.path(), "gateway"),
            "catalog",
            Duration::from_secs(30),
            4,
        );
        let req = Request::post("/upload")
            .header(http::header::HOST, "catalog")
            .body(Bytes::from(vec![b'x'; 4 * 1024 * 1024]))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(20), pool.call(&req))
            .await
            .expect("the whole body is sent and answered")
            .unwrap();
        use http_body_util::BodyExt;
        let body = resp.body.collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"4194304");
    }
}
