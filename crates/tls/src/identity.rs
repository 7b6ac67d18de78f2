//! An instance's certificate and key, re-read from disk when renewed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

/// How often a handshake may look at the certificate file for a renewal:
/// one `stat` per interval at most, so handshakes stay cheap.
const RECHECK: Duration = Duration::from_millis(500);

/// The certificate an instance presents, as server and as client. The node
/// rewrites the files before the certificate expires; the next handshake
/// after that notices the new modification time and loads the new pair (a
/// pair whose key does not match — read between the two renames — is
/// skipped until the next look). No restart, no background task.
pub struct Identity {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<State>,
}

struct State {
    current: Arc<CertifiedKey>,
    modified: Option<SystemTime>,
    checked: Instant,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads the pair now: a missing or bad file is an error at start, not
    /// a failed handshake later.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Identity>, TlsError> {
        let modified = modified(cert);
        let current = Arc::new(read_pair(cert, key)?);
        Ok(Arc::new(Identity {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            state: Mutex::new(State {
                current,
                modified,
                checked: Instant::now(),
            }),
        }))
    }

    /// The newest valid certificate and key.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= RECHECK {
            state.checked = Instant::now();
            let now = modified(&self.cert);
            if now != state.modified {
                match read_pair(&self.cert, &self.key) {
                    Ok(pair) => {
                        state.current = Arc::new(pair);
                        state.modified = now;
                        tracing::debug!(cert = %self.cert.display(), "renewed certificate loaded");
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "renewed certificate not usable yet");
                    }
                }
            }
        }
        state.current.clone()
    }

    /// The leaf certificate in use (DER), e.g. to read its expiry.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.current().cert.first().cloned()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reads a certificate chain and its key and checks they belong together.
fn read_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
        path: key.to_path_buf(),
        reason: format!("no usable private key: {e}"),
    })?;
    let pair = CertifiedKey::from_der(chain, key_der, &crate::provider())?;
    pair.keys_match()?;
    Ok(pair)
}

/// Every certificate in a PEM file; none is an error.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: format!("cannot read certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            reason: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

impl ResolvesServerCert for Identity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for Identity {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Ca;

    #[test]
    fn a_renewed_certificate_is_picked_up_without_reloading_by_hand() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(&dir.path().join("ca"), "shop").unwrap();
        let inst = dir.path().join("i");
        let files = ca
            .write_instance("catalog", &inst, Duration::from_secs(60))
            .unwrap();
        let id = Identity::load(&files.cert, &files.key).unwrap();
        let first = id.leaf().unwrap();
        // Modification times can be coarse: make sure the new file differs.
        std::thread::sleep(Duration::from_millis(20));
        ca.write_instance("catalog", &inst, Duration::from_secs(60))
            .unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        let second = id.leaf().unwrap();
        assert_ne!(first, second);
    }

    #[test]
    fn a_missing_file_is_an_error_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let e = Identity::load(&dir.path().join("c"), &dir.path().join("k")).unwrap_err();
        assert!(e.to_string().contains("cannot read certificates"), "{e}");
    }
}
