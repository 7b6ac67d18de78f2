//! Encrypted backups: every file of the backup as CMS EnvelopedData for a
//! recipient certificate (the secrets code, `mortar-secrets`), so a backup
//! — which holds the node's CA key and all application data — can be kept
//! off the machine. The manifest stays readable (sizes and SHA-256 of the
//! plaintext, the recipients), so `mortar backup list` works without the
//! key; verify and restore need the recipient's private key.

use std::path::Path;

use mortar_secrets::{Identity, Recipients};
use serde::{Deserialize, Serialize};

use crate::layout::join;
use crate::manifest::sync_file;
use crate::{BackupError, BackupManifest};

/// The suffix of an encrypted file: `data/services/x/store.db.cms`.
pub const ENCRYPTED_SUFFIX: &str = ".cms";

/// How a backup's files are encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// `cms`: each file is CMS EnvelopedData (DER, AES-256-CBC).
    pub scheme: String,
    /// The recipients' subjects, for people.
    pub recipients: Vec<String>,
    /// The recipients' certificates (PEM): a key that is none of them is
    /// told so, rather than "corrupt".
    pub recipients_pem: String,
}

impl Encryption {
    fn recipients(&self) -> Result<Recipients, BackupError> {
        Ok(Recipients::from_pem(
            self.recipients_pem.as_bytes(),
            Path::new(crate::MANIFEST_FILE),
        )?)
    }
}

/// The path of `file` (a manifest path) as stored in the backup.
pub(crate) fn stored_path(manifest: &BackupManifest, file: &str) -> String {
    if manifest.encryption.is_some() {
        format!("{file}{ENCRYPTED_SUFFIX}")
    } else {
        file.to_owned()
    }
}

/// Replaces every file the manifest lists under `backup` by its encryption
/// for `recipients`, and records the encryption in the manifest.
pub(crate) fn encrypt_files(
    backup: &Path,
    manifest: &mut BackupManifest,
    recipients: &Recipients,
) -> Result<(), BackupError> {
    for file in &manifest.files {
        let plain = join(backup, &file.path);
        let bytes = zeroize::Zeroizing::new(
            std::fs::read(&plain).map_err(BackupError::io("read", &plain))?,
        );
        let sealed = mortar_secrets::encrypt_der(&bytes, recipients)?;
        let target = join(backup, &format!("{}{ENCRYPTED_SUFFIX}", file.path));
        std::fs::write(&target, sealed).map_err(BackupError::io("write", &target))?;
        sync_file(&target)?;
        std::fs::remove_file(&plain).map_err(BackupError::io("remove", &plain))?;
    }
    manifest.encryption = Some(Encryption {
        scheme: "cms".into(),
        recipients: recipients.describe(),
        recipients_pem: String::from_utf8_lossy(&recipients.to_pem()?).into_owned(),
    });
    manifest.format = crate::FORMAT;
    Ok(())
}

/// Decrypts the backup file `from` into `to` with `key`. `Ok(Err(detail))`
/// when this file cannot be decrypted (damaged); `Err` when the key is not
/// a recipient of the backup at all.
pub(crate) fn decrypt_file(
    encryption: &Encryption,
    key: &Identity,
    from: &Path,
    to: &Path,
) -> Result<Result<(), String>, BackupError> {
    let bytes = match std::fs::read(from) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ok(())),
        Err(e) => return Err(BackupError::io("read", from)(e)),
    };
    let recipients = encryption.recipients()?;
    match mortar_secrets::decrypt(&bytes, from, key, Some(&recipients)) {
        Ok(plain) => {
            std::fs::write(to, &*plain).map_err(BackupError::io("write", to))?;
            Ok(Ok(()))
        }
        Err(mortar_secrets::SecretsError::NotARecipient {
            key, recipients, ..
        }) => Err(BackupError::NotARecipient { key, recipients }),
        Err(e) => Ok(Err(e.to_string())),
    }
}
