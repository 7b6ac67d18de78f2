//! [`SecretsFile`]: the secrets file on disk, its recipients file beside it,
//! and replacing either without ever leaving a half-written file.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::cms::{Identity, Recipients, decrypt_checked, encrypt};
use crate::error::SecretsError;
use crate::table::Secrets;

/// The secrets file of an application, e.g. `secrets.cms` beside the
/// manifest, and its recipients file, `secrets.recipients.pem`.
///
/// The secrets file is PEM-encoded CMS EnvelopedData: safe to commit, it
/// reveals only the recipients' certificate issuers and serial numbers and
/// the size of the content. The recipients file holds the recipients'
/// certificates (public), because a CMS file names its recipients only by
/// issuer and serial: without the certificates, `mortar secrets edit` could
/// not re-encrypt for the same people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretsFile {
    path: PathBuf,
}

impl SecretsFile {
    /// The secrets file at `path` (it need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SecretsFile { path: path.into() }
    }

    /// Where the encrypted secrets are.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the recipients' certificates are recorded: the secrets file's
    /// name with its extension replaced by `recipients.pem`.
    pub fn recipients_path(&self) -> PathBuf {
        self.path.with_extension("recipients.pem")
    }

    /// Whether the secrets file exists.
    pub fn exists(&self) -> bool {
        self.path.is_file()
    }

    /// The recorded recipients; `None` when there is no recipients file.
    pub fn recipients(&self) -> Result<Option<Recipients>, SecretsError> {
        let path = self.recipients_path();
        match std::fs::read(&path) {
            Ok(pem) => Recipients::from_pem(&pem, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SecretsError::Io {
                action: "read the recipients file",
                path,
                source,
            }),
        }
    }

    /// Reads, decrypts and parses the secrets with `identity`.
    pub fn open(&self, identity: &Identity) -> Result<Secrets, SecretsError> {
        let bytes = std::fs::read(&self.path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                SecretsError::NotFound {
                    path: self.path.clone(),
                }
            } else {
                SecretsError::Io {
                    action: "read the secrets file",
                    path: self.path.clone(),
                    source,
                }
            }
        })?;
        // A broken recipients file only costs a less precise diagnosis.
        let known = self.recipients().ok().flatten();
        let (plaintext, recipient_known) =
            decrypt_checked(&bytes, &self.path, identity, known.as_ref())?;
        if std::str::from_utf8(&plaintext).is_err() {
            // Random bytes: what a damaged ciphertext (or, when OpenSSL
            // could not tell, a wrong key) decrypts to.
            return Err(if recipient_known {
                SecretsError::Corrupt {
                    path: self.path.clone(),
                    detail: "the decrypted content is not text".to_owned(),
                }
            } else {
                SecretsError::Undecryptable {
                    path: self.path.clone(),
                    key: identity.key_path().to_owned(),
                }
            });
        }
        let origin = format!("the decrypted content of {}", self.path.display());
        Secrets::parse(&plaintext, &origin)
    }

    /// Encrypts `secrets` for `recipients` with a new content key and
    /// replaces the secrets file and its recipients file, each atomically.
    pub fn save(&self, secrets: &Secrets, recipients: &Recipients) -> Result<(), SecretsError> {
        if recipients.is_empty() {
            return Err(SecretsError::NoRecipients {
                recipients_file: self.recipients_path(),
            });
        }
        let pem = encrypt(secrets.to_toml().as_bytes(), recipients)?;
        write_atomic(&self.recipients_path(), &recipients.to_pem()?)?;
        write_atomic(&self.path, &pem)
    }
}

/// Replaces `path` with `bytes` so that a reader sees the old file or the
/// new one, never a mix, and a failure leaves the old one: write a
/// temporary file in the same directory, flush it to disk, rename it over.
///
/// The new file keeps the old one's permissions; a new file gets 0644
/// (its content is ciphertext or certificates, both meant to be shared).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SecretsError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| SecretsError::Io {
            action,
            path,
            source,
        }
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io("create a temporary file in", dir))?;
    tmp.write_all(bytes).map_err(io("write", tmp.path()))?;
    let mode = std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io("set the permissions of", tmp.path()))?;
    tmp.as_file().sync_all().map_err(io("flush", tmp.path()))?;
    tmp.persist(path).map_err(|e| SecretsError::Io {
        action: "replace",
        path: path.to_owned(),
        source: e.error,
    })?;
    // The rename itself is durable only once the directory is flushed.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("flush the directory", dir))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::cms::testpki::{Kind, party};
    use crate::value::SecretValue;

    fn secrets() -> Secrets {
        let mut s = Secrets::new();
        s.insert("DB_PASSWORD", SecretValue::new("hunter2"))
            .unwrap();
        s.insert("API_KEY", SecretValue::new("k-123")).unwrap();
        s
    }

    #[test]
    fn save_then_open_gives_the_same_secrets_and_records_the_recipients() {
        let dir = tempfile::tempdir().unwrap();
        let ops = party(dir.path(), "ops", Kind::Rsa, 1);
        let file = SecretsFile::new(dir.path().join("secrets.cms"));
        assert_eq!(
            file.recipients_path(),
            dir.path().join("secrets.recipients.pem")
        );
        assert!(file.recipients().unwrap().is_none());
        let recipients = Recipients::load(std::slice::from_ref(&ops.cert)).unwrap();
        file.save(&secrets(), &recipients).unwrap();
        assert!(file.exists());
        let on_disk = std::fs::read_to_string(file.path()).unwrap();
        assert!(on_disk.starts_with("-----BEGIN CMS-----"), "{on_disk}");
        assert!(!on_disk.contains("hunter2"));
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);

        // The certificate alone is enough: the recipients file supplies it.
        let id = Identity::load(&ops.key, None).unwrap();
        assert_eq!(file.open(&id).unwrap(), secrets());
        assert_eq!(
            file.recipients().unwrap().unwrap().describe(),
            ["CN=ops (serial 01)"]
        );
        // No stray temporary files.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn open_reports_a_missing_file_and_a_key_outside_the_recipients() {
        let dir = tempfile::tempdir().unwrap();
        let ops = party(dir.path(), "ops", Kind::Rsa, 1);
        let eve = party(dir.path(), "eve", Kind::Rsa, 2);
        let file = SecretsFile::new(dir.path().join("secrets.cms"));
        let e = file
            .open(&Identity::load(&ops.key, None).unwrap())
            .unwrap_err();
        assert!(matches!(e, SecretsError::NotFound { .. }), "{e:?}");
        assert!(e.to_string().contains("mortar secrets edit"), "{e}");

        let recipients = Recipients::load(std::slice::from_ref(&ops.cert)).unwrap();
        file.save(&secrets(), &recipients).unwrap();
        let e = file
            .open(&Identity::load(&eve.key, None).unwrap())
            .unwrap_err();
        assert!(matches!(e, SecretsError::NotARecipient { .. }), "{e:?}");
        assert!(e.to_string().contains("CN=ops"), "{e}");
    }

    #[test]
    fn a_changed_ciphertext_block_is_reported_as_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let ops = party(dir.path(), "ops", Kind::Rsa, 1);
        let file = SecretsFile::new(dir.path().join("secrets.cms"));
        let recipients = Recipients::load(std::slice::from_ref(&ops.cert)).unwrap();
        file.save(&secrets(), &recipients).unwrap();
        let pem = std::fs::read(file.path()).unwrap();
        let cms = openssl::cms::CmsContentInfo::from_pem(&pem).unwrap();
        let id = Identity::load(&ops.key, Some(&ops.cert)).unwrap();
        // Flip one byte in each of the last ciphertext blocks: whatever the
        // block, the result is an error, never different secrets.
        for back in [1, 17, 33, 49] {
            let mut der = cms.to_der().unwrap();
            let at = der.len() - back;
            der[at] ^= 0x01;
            std::fs::write(file.path(), &der).unwrap();
            let e = file.open(&id).unwrap_err();
            assert!(
                matches!(
                    e,
                    SecretsError::Corrupt { .. } | SecretsError::Content { .. }
                ),
                "byte -{back}: {e:?}"
            );
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn save_without_recipients_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ops = party(dir.path(), "ops", Kind::Rsa, 1);
        let file = SecretsFile::new(dir.path().join("secrets.cms"));
        let recipients = Recipients::load(std::slice::from_ref(&ops.cert)).unwrap();
        file.save(&secrets(), &recipients).unwrap();
        let before = std::fs::read(file.path()).unwrap();
        let empty = Recipients::load(&[]).unwrap();
        let e = file.save(&Secrets::new(), &empty).unwrap_err();
        assert!(e.to_string().contains("-r CERT"), "{e}");
        assert_eq!(std::fs::read(file.path()).unwrap(), before);
    }

    #[test]
    fn write_atomic_keeps_the_old_permissions_and_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let e = write_atomic(&dir.path().join("no/such/dir/f"), b"x").unwrap_err();
        assert!(e.to_string().contains("no/such/dir"), "{e}");
    }
}
