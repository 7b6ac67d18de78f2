//! Talking TLS to a running node's instances the way a test needs:
//! as some service (a certificate from the node's own CA), or with no
//! certificate at all.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mortar_tls::{Ca, InstanceTls};
use rustls_pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::node::instance_url;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A certificate for `service` of `app` from the CA in `data_dir`
/// (`<data dir>/tls/ca`), written under `into`: how a test becomes a given
/// caller without starting that service.
pub fn identity_for(data_dir: &Path, app: &str, service: &str, into: &Path) -> InstanceTls {
    let ca = Ca::load_or_create(&data_dir.join("tls").join("ca"), app).expect("the node's CA");
    ca.write_instance(service, into, Duration::from_secs(600))
        .expect("a certificate");
    InstanceTls::from_dir(into).expect("the certificate reads back")
}

/// The server name an instance (status entry) must prove.
fn server_name(tls: &InstanceTls, instance: &Value) -> ServerName<'static> {
    let service = instance["service"]
        .as_str()
        .expect("instance has a service");
    ServerName::try_from(mortar_tls::server_name(&tls.app, service)).expect("a valid name")
}

fn address(instance: &Value) -> String {
    instance_url(instance)
        .trim_start_matches("http://")
        .to_owned()
}

/// `GET path` on `instance` presenting `tls`'s certificate: status and
/// body, or why there was no answer (e.g. the handshake was refused).
pub fn get_as(
    tls: &InstanceTls,
    instance: &Value,
    path: &str,
) -> Result<(u16, String), mortar_tls::CallerError> {
    let caller = mortar_tls::Caller::new(tls).expect("a TLS client");
    let service = instance["service"]
        .as_str()
        .expect("instance has a service");
    let (code, body) = runtime().block_on(caller.request(
        service,
        &instance_url(instance),
        http::Method::GET,
        path,
        Default::default(),
        Duration::from_secs(10),
    ))?;
    Ok((code.as_u16(), String::from_utf8_lossy(&body).into_owned()))
}

/// Connects to `instance` trusting the node's CA (`ca_of`'s) but
/// presenting no certificate, sends a request and reads: `Err` when the
/// server refused the handshake (as it must), `Ok(bytes)` if anything
/// came back.
pub fn request_without_certificate(
    ca_of: &InstanceTls,
    instance: &Value,
) -> std::io::Result<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in &ca_of.ca {
        roots.add(cert.clone()).expect("a CA certificate");
    }
    let config = rustls::ClientConfig::builder_with_provider(mortar_tls::provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = server_name(ca_of, instance);
    let addr = address(instance);
    runtime().block_on(async move {
        let tcp = TcpStream::connect(&addr).await?;
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        tls.write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await?;
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out))
            .await
            .map_err(|_| std::io::Error::other("no answer and no close within 5s"))??;
        Ok(out)
    })
}

/// The leaf certificate (DER) `instance` presents now, to a caller with
/// `tls`'s certificate.
pub fn served_certificate(tls: &InstanceTls, instance: &Value) -> Vec<u8> {
    let config = tls.client_config().expect("a TLS client");
    let name = server_name(tls, instance);
    let addr = address(instance);
    runtime().block_on(async move {
        let tcp = TcpStream::connect(&addr).await.expect("connects");
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .expect("handshake");
        stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .expect("a server certificate")
            .to_vec()
    })
}
