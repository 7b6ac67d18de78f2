//! The node's certificate authority and the per-instance files it writes.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use crate::{CA_ENV, CERT_ENV, KEY_ENV, TlsError, config};

/// How far back a certificate's `notBefore` is set, so a clock a little
/// behind the node's does not refuse a fresh certificate.
const BACKDATE: Duration = Duration::from_secs(60);

/// The node's local CA: a self-signed ECDSA P-256 root whose key never
/// leaves the data directory (mode 0600). Every certificate it issues
/// names one service of one app.
pub struct Ca {
    app: String,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

/// A freshly issued certificate and its key, both PEM.
#[derive(Clone)]
pub struct Issued {
    /// The leaf certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8). Never logged.
    pub key_pem: String,
    /// When it stops being valid.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Where an instance's TLS files are, as handed to it in its environment.
#[derive(Debug, Clone)]
pub struct InstanceFiles {
    /// Its certificate.
    pub cert: PathBuf,
    /// Its private key (0600).
    pub key: PathBuf,
    /// The CA certificate.
    pub ca: PathBuf,
    /// When the certificate written last expires.
    pub not_after: SystemTime,
}

impl InstanceFiles {
    /// The environment variables that point the SDK at these files.
    pub fn env(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (CERT_ENV.to_owned(), self.cert.display().to_string()),
            (KEY_ENV.to_owned(), self.key.display().to_string()),
            (CA_ENV.to_owned(), self.ca.display().to_string()),
        ])
    }
}

/// The CA's name. Issued certificates are chained by it, so it must not
/// change between runs of the node that reuse the same key.
fn ca_params(app: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "mortar");
    dn.push(DnType::CommonName, format!("mortar local CA for {app}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl Ca {
    /// Loads the CA from `dir` (`ca.key`, `ca.pem`), or creates it there when
    /// absent. The key is written with mode 0600 and the directory 0700; a
    /// key file readable by others is tightened, not trusted blindly.
    pub fn load_or_create(dir: &Path, app: &str) -> Result<Ca, TlsError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TlsError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        let key_path = dir.join("ca.key");
        let cert_path = dir.join("ca.pem");
        if key_path.is_file() && cert_path.is_file() {
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
                .map_err(io(&key_path))?;
            let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::Pem {
                path: key_path.clone(),
                reason: e.to_string(),
            })?;
            return Ok(Ca {
                app: app.to_owned(),
                cert_pem,
                issuer: Issuer::new(ca_params(app), key),
            });
        }
        let key = KeyPair::generate()?;
        let mut params = ca_params(app);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + time::Duration::days(3650);
        let cert = params.self_signed(&key)?;
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
        Ok(Ca {
            app: app.to_owned(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(ca_params(app), key),
        })
    }

    /// The app whose services this CA names.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The CA certificate (PEM): the trust root of every instance.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate for `service`, valid for `lifetime`, usable as a
    /// server and as a client. A fresh key each time: a renewed certificate
    /// does not extend the life of an old key.
    pub fn issue(&self, service: &str, lifetime: Duration) -> Result<Issued, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, service);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![
            SanType::URI(config::service_uri(&self.app, service).try_into()?),
            SanType::DnsName(config::server_name(&self.app, service).try_into()?),
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        let not_after = now + lifetime;
        params.not_before = OffsetDateTime::from(now - BACKDATE);
        params.not_after = OffsetDateTime::from(not_after);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after,
        })
    }

    /// Issues a certificate for `service` and writes it, its key and the CA
    /// certificate into `dir` (0700). Files are replaced atomically, key
    /// first, so a reader never sees a half-written file; [`crate::Identity`]
    /// notices the new certificate and checks it matches the key.
    pub fn write_instance(
        &self,
        service: &str,
        dir: &Path,
        lifetime: Duration,
    ) -> Result<InstanceFiles, TlsError> {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| TlsError::Io {
                path: dir.to_path_buf(),
                source,
            },
        )?;
        let issued = self.issue(service, lifetime)?;
        let files = InstanceFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca: dir.join("ca.pem"),
            not_after: issued.not_after,
        };
        write_atomic(&files.ca, self.cert_pem.as_bytes(), 0o644)?;
        write_atomic(&files.key, issued.key_pem.as_bytes(), 0o600)?;
        write_atomic(&files.cert, issued.cert_pem.as_bytes(), 0o644)?;
        Ok(files)
    }
}

/// Renews the certificate in `dir` at two thirds of its lifetime, forever
/// (until the future is dropped). A failed renewal is retried after a
/// short pause; the old certificate stays in place meanwhile.
pub async fn renew_forever(
    ca: std::sync::Arc<Ca>,
    service: String,
    dir: PathBuf,
    lifetime: Duration,
) {
    let period = (lifetime * 2 / 3).max(Duration::from_millis(100));
    let mut wait = period;
    loop {
        tokio::time::sleep(wait).await;
        match ca.write_instance(&service, &dir, lifetime) {
            Ok(_) => {
                tracing::debug!(%service, dir = %dir.display(), "certificate renewed");
                wait = period;
            }
            Err(e) => {
                tracing::warn!(%service, error = %e, "cannot renew the certificate; retrying");
                wait = Duration::from_secs(1).min(period);
            }
        }
    }
}

/// Writes a new file readable only by its owner, failing if it exists.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    write_atomic(path, bytes, 0o600)
}

/// Writes `bytes` to a temporary file with `mode` and renames it over `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let err = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_reloaded_with_the_same_key_and_its_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path(), "shop").unwrap();
        let mode = std::fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Ca::load_or_create(dir.path(), "shop").unwrap();
        assert_eq!(ca.cert_pem(), again.cert_pem());
    }

    #[test]
    fn instance_files_are_written_with_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(&dir.path().join("ca"), "shop").unwrap();
        let files = ca
            .write_instance("catalog", &dir.path().join("i"), Duration::from_secs(60))
            .unwrap();
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            std::fs::read_to_string(&files.cert)
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
        assert_eq!(files.env().len(), 3);
    }
}
