//! CMS EnvelopedData (RFC 5652) through OpenSSL: who a file is encrypted
//! for ([`Recipients`]), who decrypts it ([`Identity`]), and the two
//! operations.
//!
//! OpenSSL's CMS is used (not a pure-Rust one) because the file must
//! interoperate with `openssl cms` both ways and OpenSSL decrypts every
//! variant it writes (RSA PKCS#1 v1.5 and OAEP, ECDH, AES-CBC and AES-GCM).

use std::fmt;
use std::path::{Path, PathBuf};

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::error::ErrorStack;
use openssl::pkey::{Id, PKey, PKeyRef, Private};
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::X509;
use zeroize::Zeroizing;

use crate::error::SecretsError;

/// OpenSSL's library code for CMS errors (`ERR_LIB_CMS`).
const LIB_CMS: i32 = 46;
/// `CMS_R_CONTENT_TYPE_NOT_ENVELOPED_DATA`.
const CMS_R_CONTENT_TYPE_NOT_ENVELOPED_DATA: i32 = 107;
/// `CMS_R_TYPE_NOT_ENVELOPED_DATA`.
const CMS_R_TYPE_NOT_ENVELOPED_DATA: i32 = 146;
/// `CMS_R_NO_MATCHING_RECIPIENT`.
const CMS_R_NO_MATCHING_RECIPIENT: i32 = 132;

/// The certificates a secrets file is encrypted for: anyone holding the
/// private key of one of them can decrypt it.
///
/// Each must have an RSA key (key transport, PKCS#1 v1.5 as `openssl cms`
/// uses by default) or an EC key (ECDH key agreement). Validity dates are
/// not checked, as `openssl cms -encrypt` does not check them: an expired
/// certificate still names the right key.
#[derive(Clone)]
pub struct Recipients {
    certs: Vec<X509>,
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.describe()).finish()
    }
}

impl Recipients {
    /// Reads every certificate in the PEM files `paths` (a file may hold
    /// several); a certificate given twice counts once.
    pub fn load(paths: &[PathBuf]) -> Result<Recipients, SecretsError> {
        let mut all = Recipients { certs: Vec::new() };
        for path in paths {
            let pem = std::fs::read(path).map_err(|source| SecretsError::Io {
                action: "read the certificate file",
                path: path.clone(),
                source,
            })?;
            all.extend(Recipients::from_pem(&pem, path)?);
        }
        Ok(all)
    }

    /// The certificates in `pem`, read from `path` (for messages).
    pub fn from_pem(pem: &[u8], path: &Path) -> Result<Recipients, SecretsError> {
        let bad = |detail: String| SecretsError::Certificate {
            path: path.to_owned(),
            detail,
        };
        let certs = X509::stack_from_pem(pem).map_err(|e| bad(openssl_reasons(&e)))?;
        if certs.is_empty() {
            let detail = if contains(pem, b"PRIVATE KEY-----") {
                "it holds a private key and no certificate; recipients are named by their certificate (-----BEGIN CERTIFICATE-----), which is public".to_owned()
            } else {
                "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".to_owned()
            };
            return Err(bad(detail));
        }
        for cert in &certs {
            let key = cert.public_key().map_err(|e| bad(openssl_reasons(&e)))?;
            if !matches!(key.id(), Id::RSA | Id::EC) {
                return Err(bad(format!(
                    "the certificate {} has {} key; CMS recipients need RSA or EC keys",
                    describe(cert),
                    key_kind(&key)
                )));
            }
        }
        let mut recipients = Recipients { certs: Vec::new() };
        recipients.extend(Recipients { certs });
        Ok(recipients)
    }

    fn extend(&mut self, other: Recipients) {
        for cert in other.certs {
            let der = cert.to_der().ok();
            if !self.certs.iter().any(|c| c.to_der().ok() == der) {
                self.certs.push(cert);
            }
        }
    }

    /// The certificates as PEM, one after the other; what `from_pem` reads.
    pub fn to_pem(&self) -> Result<Vec<u8>, SecretsError> {
        let mut pem = Vec::new();
        for cert in &self.certs {
            pem.extend(cert.to_pem().map_err(|e| SecretsError::Encrypt {
                detail: openssl_reasons(&e),
            })?);
        }
        Ok(pem)
    }

    /// One line per certificate: its subject and serial number.
    pub fn describe(&self) -> Vec<String> {
        self.certs.iter().map(describe).collect()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Whether there are none (nothing can be encrypted then).
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The certificate whose public key belongs to `key`, if any.
    fn find_for(&self, key: &PKeyRef<Private>) -> Option<&X509> {
        self.certs
            .iter()
            .find(|cert| cert.public_key().is_ok_and(|public| public.public_eq(key)))
    }
}

/// A private key that decrypts secrets files, and, when known, its
/// certificate.
///
/// With the certificate OpenSSL decrypts only the recipient entry made for
/// it, so a failure can be told apart: "not a recipient" versus "corrupt".
/// Without it, every recipient entry is tried and OpenSSL deliberately hides
/// which failed (a defence against padding-oracle attacks), so only
/// "wrong key or corrupt" can be said. The certificate comes from `--cert`,
/// from a `CERTIFICATE` block in the key file, or from the secrets file's
/// recipients file.
pub struct Identity {
    key: PKey<Private>,
    key_path: PathBuf,
    cert: Option<X509>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("key_path", &self.key_path)
            .field("cert", &self.cert.as_ref().map(describe))
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Reads the unencrypted PEM private key at `key_path` and its
    /// certificate from `cert_path`, or from the key file when that also
    /// holds a certificate; checks that the two belong together.
    ///
    /// A passphrase-protected key is refused with a clear error rather than
    /// letting OpenSSL prompt on a terminal that a node may not have.
    pub fn load(key_path: &Path, cert_path: Option<&Path>) -> Result<Identity, SecretsError> {
        let bad_key = |detail: String| SecretsError::Key {
            path: key_path.to_owned(),
            detail,
        };
        let pem = Zeroizing::new(std::fs::read(key_path).map_err(|source| SecretsError::Io {
            action: "read the private key",
            path: key_path.to_owned(),
            source,
        })?);
        if contains(&pem, b"ENCRYPTED PRIVATE KEY-----")
            || contains(&pem, b"Proc-Type: 4,ENCRYPTED")
        {
            return Err(bad_key(
                "it is protected by a passphrase, which mortar does not ask for; keep an unencrypted copy readable only by its owner (openssl pkey -in KEY -out PLAIN; chmod 600 PLAIN)".to_owned(),
            ));
        }
        if !contains(&pem, b"PRIVATE KEY-----") {
            let detail = if contains(&pem, b"-----BEGIN CERTIFICATE-----") {
                "it holds a certificate but no private key".to_owned()
            } else {
                "no PEM private key (-----BEGIN PRIVATE KEY-----) in it".to_owned()
            };
            return Err(bad_key(detail));
        }
        // The callback answers an empty passphrase: OpenSSL must never prompt.
        let key = PKey::private_key_from_pem_callback(&pem, |_| Ok(0))
            .map_err(|e| bad_key(openssl_reasons(&e)))?;
        if !matches!(key.id(), Id::RSA | Id::EC) {
            return Err(bad_key(format!(
                "it is {} key; CMS recipients have RSA or EC keys",
                key_kind(&key)
            )));
        }
        let cert = match cert_path {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| SecretsError::Io {
                    action: "read the certificate file",
                    path: path.to_owned(),
                    source,
                })?;
                let cert = X509::from_pem(&pem).map_err(|_| SecretsError::Certificate {
                    path: path.to_owned(),
                    detail: "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".to_owned(),
                })?;
                Some((cert, path.to_owned()))
            }
            None if contains(&pem, b"-----BEGIN CERTIFICATE-----") => {
                let cert = X509::from_pem(&pem).map_err(|e| SecretsError::Certificate {
                    path: key_path.to_owned(),
                    detail: openssl_reasons(&e),
                })?;
                Some((cert, key_path.to_owned()))
            }
            None => None,
        };
        if let Some((cert, path)) = &cert {
            let matches = cert.public_key().is_ok_and(|public| public.public_eq(&key));
            if !matches {
                return Err(SecretsError::KeyCertMismatch {
                    key: key_path.to_owned(),
                    cert: path.clone(),
                    subject: describe(cert),
                });
            }
        }
        Ok(Identity {
            key,
            key_path: key_path.to_owned(),
            cert: cert.map(|(cert, _)| cert),
        })
    }

    /// The key file, for messages.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }
}

/// Encrypts `plaintext` for `recipients` as CMS EnvelopedData with a fresh
/// random AES-256-CBC content key; returns the PEM (`-----BEGIN CMS-----`).
///
/// `CMS_BINARY` keeps the bytes as they are: without it OpenSSL would turn
/// line ends into CRLF (S/MIME canonical text).
pub fn encrypt(plaintext: &[u8], recipients: &Recipients) -> Result<Vec<u8>, SecretsError> {
    envelope(plaintext, recipients)?
        .to_pem()
        .map_err(encrypt_failed)
}

fn encrypt_failed(e: ErrorStack) -> SecretsError {
    SecretsError::Encrypt {
        detail: openssl_reasons(&e),
    }
}

fn envelope(plaintext: &[u8], recipients: &Recipients) -> Result<CmsContentInfo, SecretsError> {
    let mut stack = Stack::new().map_err(encrypt_failed)?;
    for cert in &recipients.certs {
        stack.push(cert.clone()).map_err(encrypt_failed)?;
    }
    CmsContentInfo::encrypt(&stack, plaintext, Cipher::aes_256_cbc(), CMSOptions::BINARY)
        .map_err(encrypt_failed)
}

/// [`encrypt`], returning DER: a third smaller than PEM, for large
/// contents such as backup files.
pub fn encrypt_der(plaintext: &[u8], recipients: &Recipients) -> Result<Vec<u8>, SecretsError> {
    envelope(plaintext, recipients)?
        .to_der()
        .map_err(encrypt_failed)
}

/// Decrypts the CMS in `bytes` (PEM, DER or S/MIME), read from `path`, with
/// `identity`. `known` are the file's recipients when they are recorded:
/// they supply the key's certificate when the identity lacks one, and are
/// listed when the key is not among them.
pub fn decrypt(
    bytes: &[u8],
    path: &Path,
    identity: &Identity,
    known: Option<&Recipients>,
) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
    decrypt_checked(bytes, path, identity, known).map(|(plaintext, _)| plaintext)
}

/// [`decrypt`], also saying whether the key's certificate was known, i.e.
/// whether a garbled result means "corrupt" rather than "wrong key".
pub(crate) fn decrypt_checked(
    bytes: &[u8],
    path: &Path,
    identity: &Identity,
    known: Option<&Recipients>,
) -> Result<(Zeroizing<Vec<u8>>, bool), SecretsError> {
    let cms = parse(bytes, path)?;
    let cert = identity
        .cert
        .as_ref()
        .or_else(|| known.and_then(|k| k.find_for(&identity.key)));
    let result = match cert {
        Some(cert) => cms.decrypt(&identity.key, cert),
        None => cms.decrypt_without_cert_check(&identity.key),
    };
    let not_a_recipient = || SecretsError::NotARecipient {
        path: path.to_owned(),
        key: identity.key_path.clone(),
        recipients: known.map(Recipients::describe).unwrap_or_default(),
    };
    let stack = match result {
        // A key that is no recorded recipient's can still "decrypt": with
        // RSA, OpenSSL answers a wrong key with a random content key (its
        // defence against padding oracles), and about one time in 256 that
        // unpads cleanly into garbage. Garbage from such a key means it is
        // not a recipient, not that the file is damaged.
        Ok(plaintext)
            if cert.is_none() && known.is_some() && std::str::from_utf8(&plaintext).is_err() =>
        {
            return Err(not_a_recipient());
        }
        Ok(plaintext) => return Ok((Zeroizing::new(plaintext), cert.is_some())),
        Err(stack) => stack,
    };
    if has_reason(&stack, CMS_R_TYPE_NOT_ENVELOPED_DATA)
        || has_reason(&stack, CMS_R_CONTENT_TYPE_NOT_ENVELOPED_DATA)
    {
        Err(SecretsError::NotEnveloped {
            path: path.to_owned(),
        })
    } else if has_reason(&stack, CMS_R_NO_MATCHING_RECIPIENT)
        || (cert.is_some() && stack.errors().is_empty())
    {
        // OpenSSL 3.0 fails without a reason when no recipient entry is
        // for the given certificate while some entry has the key's type;
        // every failure after that point (the content) leaves reasons.
        Err(not_a_recipient())
    } else if cert.is_some() {
        Err(SecretsError::Corrupt {
            path: path.to_owned(),
            detail: format!("decryption failed: {}", openssl_reasons(&stack)),
        })
    } else if known.is_some() {
        // The recorded recipients do not include this key.
        Err(not_a_recipient())
    } else {
        Err(SecretsError::Undecryptable {
            path: path.to_owned(),
            key: identity.key_path.clone(),
        })
    }
}

/// Parses CMS from PEM, DER or S/MIME (what `openssl cms -encrypt` writes
/// with `-outform PEM`, `DER`, or by default).
fn parse(bytes: &[u8], path: &Path) -> Result<CmsContentInfo, SecretsError> {
    let not_cms = |found: &str| SecretsError::NotCms {
        path: path.to_owned(),
        found: found.to_owned(),
    };
    let corrupt = |detail: &str| SecretsError::Corrupt {
        path: path.to_owned(),
        detail: detail.to_owned(),
    };
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let text = bytes.get(start..).unwrap_or_default();
    if text.is_empty() {
        return Err(not_cms(" (it is empty)"));
    }
    if let Some(rest) = text.strip_prefix(b"-----BEGIN ") {
        let label_end = rest
            .windows(5)
            .position(|w| w == b"-----")
            .unwrap_or(rest.len());
        let label = String::from_utf8_lossy(rest.get(..label_end).unwrap_or_default());
        return if label == "CMS" || label == "PKCS7" {
            CmsContentInfo::from_pem(text)
                .map_err(|_| corrupt("its PEM does not decode to a CMS structure"))
        } else {
            Err(not_cms(&format!(" (it holds a PEM {label})")))
        };
    }
    if text.first() == Some(&0x30) {
        return CmsContentInfo::from_der(text)
            .map_err(|_| corrupt("its DER does not parse as a CMS structure"));
    }
    let head = String::from_utf8_lossy(text.get(..text.len().min(2048)).unwrap_or_default())
        .to_ascii_lowercase();
    if head.contains("mime-version:") || head.contains("content-type:") {
        return CmsContentInfo::smime_read_cms(text)
            .map_err(|_| corrupt("its S/MIME does not parse as CMS"));
    }
    if std::str::from_utf8(text).is_ok() && head.contains('=') {
        return Err(not_cms(
            " (it looks like plaintext; encrypt it with `mortar secrets encrypt`)",
        ));
    }
    Err(not_cms(""))
}

/// Whether `stack` holds the CMS error `reason`.
fn has_reason(stack: &ErrorStack, reason: i32) -> bool {
    stack
        .errors()
        .iter()
        .any(|e| e.library_code() == LIB_CMS && e.reason_code() == reason)
}

/// OpenSSL's reasons, without its file names and codes: "bad decrypt".
fn openssl_reasons(stack: &ErrorStack) -> String {
    let mut reasons: Vec<&str> = stack.errors().iter().filter_map(|e| e.reason()).collect();
    reasons.dedup();
    if reasons.is_empty() {
        "OpenSSL gave no reason".to_owned()
    } else {
        reasons.join("; ")
    }
}

/// "CN=ops, O=shop (serial 1A)".
fn describe(cert: &X509) -> String {
    let subject: Vec<String> = cert
        .subject_name()
        .entries()
        .map(|entry| {
            let key = entry.object().nid().short_name().unwrap_or("?");
            let value = entry.data().to_string().unwrap_or_else(|_| "?".to_owned());
            format!("{key}={value}")
        })
        .collect();
    let serial = cert
        .serial_number()
        .to_bn()
        .and_then(|bn| bn.to_hex_str().map(|s| s.to_string()))
        .unwrap_or_else(|_| "?".to_owned());
    format!("{} (serial {serial})", subject.join(", "))
}

/// "an RSA", "an Ed25519": the key's algorithm with its article.
fn key_kind<T>(key: &PKeyRef<T>) -> &'static str {
    match key.id() {
        Id::RSA => "an RSA",
        Id::EC => "an EC",
        Id::ED25519 => "an Ed25519",
        Id::ED448 => "an Ed448",
        Id::X25519 => "an X25519",
        Id::DSA => "a DSA",
        Id::DH => "a DH",
        _ => "an unsupported",
    }
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
pub(crate) mod testpki;

#[cfg(test)]
mod tests;
