//! rustls configurations for instances, names in certificates, and
//! reading the caller's service from its certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::CertificateDer;

use crate::identity::{Identity, read_certs};
use crate::{APP_ENV, CA_ENV, CALLERS_ENV, CERT_ENV, KEY_ENV, NODE_IDENTITY, TlsError};

/// The crypto provider everywhere in mortar: ring (no C build of aws-lc).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The URI SAN naming `service` of `app`: what a server reads to learn
/// who calls it.
pub fn service_uri(app: &str, service: &str) -> String {
    format!("mortar://{app}/{service}")
}

/// The DNS SAN of `service` of `app`, and the server name a client
/// expects when it calls that service (addresses are ephemeral; names
/// are not).
pub fn server_name(app: &str, service: &str) -> String {
    format!("{service}.{app}.mortar")
}

/// The service of `app` that the first certificate of `certs` names, if
/// any. Only call with certificates the handshake verified against the
/// node's CA.
pub fn peer_service(certs: &[CertificateDer<'_>], app: &str) -> Option<String> {
    let leaf = certs.first()?;
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    let prefix = format!("mortar://{app}/");
    cert.valid_uri_names()
        .find_map(|uri| uri.strip_prefix(&prefix).map(str::to_owned))
}

fn roots(ca: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots.add(cert.clone())?;
    }
    Ok(Arc::new(roots))
}

/// A server that requires a client certificate signed by `ca` and
/// presents `identity`'s (renewed) certificate. HTTP/1.1 only.
pub fn server_config(
    identity: Arc<Identity>,
    ca: &[CertificateDer<'static>],
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider.clone()).build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(identity);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client that trusts only `ca` and presents `identity`'s certificate.
pub fn client_config(
    identity: Arc<Identity>,
    ca: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca)?)
        .with_client_cert_resolver(identity);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An instance's TLS material, as the node handed it over in the
/// environment, and who may call it.
#[derive(Debug, Clone)]
pub struct InstanceTls {
    /// The app (the first part of every certificate's names).
    pub app: String,
    /// This instance's certificate, renewed in place.
    pub identity: Arc<Identity>,
    /// The node CA's certificate(s).
    pub ca: Vec<CertificateDer<'static>>,
    /// Services allowed to call this one; `None` = any service of the app.
    /// The node ([`NODE_IDENTITY`]) is always allowed.
    pub callers: Option<Vec<String>>,
}

impl InstanceTls {
    /// Reads the files named by `MORTAR_TLS_CERT`, `MORTAR_TLS_KEY` and
    /// `MORTAR_TLS_CA` (and `MORTAR_TLS_CALLERS`, `MORTAR_APP`).
    /// `Ok(None)` when `MORTAR_TLS_CERT` is unset: the instance runs
    /// without TLS (outside a node, or a node with TLS off).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<InstanceTls>, TlsError> {
        let Some(cert) = lookup(CERT_ENV).filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        let missing = |name: &str| TlsError::Pem {
            path: name.into(),
            reason: format!("{name} must be set when {CERT_ENV} is (mortar up sets both)"),
        };
        let key = lookup(KEY_ENV).ok_or_else(|| missing(KEY_ENV))?;
        let ca = lookup(CA_ENV).ok_or_else(|| missing(CA_ENV))?;
        let app = lookup(APP_ENV).ok_or_else(|| missing(APP_ENV))?;
        let callers = lookup(CALLERS_ENV).map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        });
        let mut tls = Self::from_files(&app, Path::new(&cert), Path::new(&key), Path::new(&ca))?;
        tls.callers = callers;
        Ok(Some(tls))
    }

    /// Reads a certificate, its key and the CA certificate from files.
    pub fn from_files(app: &str, cert: &Path, key: &Path, ca: &Path) -> Result<Self, TlsError> {
        Ok(InstanceTls {
            app: app.to_owned(),
            identity: Identity::load(cert, key)?,
            ca: read_certs(ca)?,
            callers: None,
        })
    }

    /// Reads the files [`crate::Ca::write_instance`] wrote into `dir`
    /// (`cert.pem`, `key.pem`, `ca.pem`), learning the app from the
    /// certificate's URI SAN: what an admin command uses to act as the node.
    pub fn from_dir(dir: &Path) -> Result<Self, TlsError> {
        let cert = dir.join("cert.pem");
        let leaf = read_certs(&cert)?;
        let app = leaf
            .first()
            .and_then(|c| {
                webpki::EndEntityCert::try_from(c).ok().and_then(|c| {
                    c.valid_uri_names().find_map(|u| {
                        u.strip_prefix("mortar://")?
                            .split_once('/')
                            .map(|(a, _)| a.to_owned())
                    })
                })
            })
            .ok_or_else(|| TlsError::Pem {
                path: cert.clone(),
                reason: "the certificate names no mortar app".into(),
            })?;
        Self::from_files(&app, &cert, &dir.join("key.pem"), &dir.join("ca.pem"))
    }

    /// The server side: client certificates required.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        server_config(self.identity.clone(), &self.ca)
    }

    /// The client side: presents this instance's certificate.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        client_config(self.identity.clone(), &self.ca)
    }

    /// Whether `caller` (a service name from a verified certificate) may
    /// call this instance.
    pub fn allows(&self, caller: &str) -> bool {
        caller == NODE_IDENTITY
            || self
                .callers
                .as_ref()
                .is_none_or(|list| list.iter().any(|c| c == caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Ca;
    use std::time::Duration;

    #[test]
    fn the_caller_is_read_from_the_uri_san_of_its_own_app_only() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path(), "shop").unwrap();
        let issued = ca.issue("ordering", Duration::from_secs(60)).unwrap();
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        assert_eq!(
            peer_service(std::slice::from_ref(&der), "shop").as_deref(),
            Some("ordering")
        );
        assert_eq!(peer_service(&[der], "other"), None);
        assert_eq!(peer_service(&[], "shop"), None);
    }

    #[test]
    fn callers_list_and_node_exception() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(&dir.path().join("ca"), "shop").unwrap();
        let f = ca
            .write_instance("catalog", &dir.path().join("i"), Duration::from_secs(60))
            .unwrap();
        let env = |k: &str| match k {
            CERT_ENV => Some(f.cert.display().to_string()),
            KEY_ENV => Some(f.key.display().to_string()),
            CA_ENV => Some(f.ca.display().to_string()),
            APP_ENV => Some("shop".into()),
            CALLERS_ENV => Some("gateway, ordering".into()),
            _ => None,
        };
        let tls = InstanceTls::from_lookup(env).unwrap().unwrap();
        assert!(tls.allows("gateway") && tls.allows("ordering") && tls.allows(NODE_IDENTITY));
        assert!(!tls.allows("identity"));
        assert!(tls.server_config().is_ok() && tls.client_config().is_ok());
        assert!(InstanceTls::from_lookup(|_| None).unwrap().is_none());
        assert_eq!(
            InstanceTls::from_dir(&dir.path().join("i")).unwrap().app,
            "shop"
        );
    }

    use rustls_pki_types::pem::PemObject;
}
