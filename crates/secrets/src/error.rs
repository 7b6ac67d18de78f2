//! What goes wrong with secrets, said so that the reader knows what to do.
//!
//! Every message is one line, names the file, key or certificate involved
//! and never contains a secret value.

use std::path::PathBuf;

/// Why a secrets operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// The secrets file does not exist.
    #[error(
        "secrets file {} does not exist; create it with `mortar secrets edit -r CERT` or `mortar secrets encrypt -r CERT`",
        path.display()
    )]
    NotFound {
        /// The file that was looked for.
        path: PathBuf,
    },
    /// A file could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// "read", "write", …
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not CMS at all.
    #[error(
        "{} is not a CMS file{found}: expected PEM (-----BEGIN CMS-----), DER or S/MIME as written by `mortar secrets` or `openssl cms -encrypt`",
        path.display()
    )]
    NotCms {
        /// The file.
        path: PathBuf,
        /// What it seems to hold instead, e.g. " (it holds a PEM CERTIFICATE)".
        found: String,
    },
    /// The file is CMS, but not encrypted for recipients (EnvelopedData).
    #[error(
        "{} is CMS but not EnvelopedData (encrypted for recipients); encrypt the secrets with `mortar secrets encrypt` or `openssl cms -encrypt`",
        path.display()
    )]
    NotEnveloped {
        /// The file.
        path: PathBuf,
    },
    /// The key is not the key of any recipient of the file.
    #[error(
        "{} is not encrypted for the key {}{}; use the key of one of its recipients, or ask someone who has one to run `mortar secrets rotate -r <your certificate>`",
        path.display(),
        key.display(),
        recipients_hint(recipients)
    )]
    NotARecipient {
        /// The secrets file.
        path: PathBuf,
        /// The private key that was tried.
        key: PathBuf,
        /// The recipients, if known (from the recipients file).
        recipients: Vec<String>,
    },
    /// Without the key's certificate, a failed decryption cannot tell a
    /// wrong key from a damaged file (OpenSSL hides which, on purpose).
    #[error(
        "cannot decrypt {} with the key {}: it is not the key of any recipient, or the file is corrupt; name the key's certificate (--cert or MORTAR_SECRETS_CERT, or append it to the key file) to tell which",
        path.display(),
        key.display()
    )]
    Undecryptable {
        /// The secrets file.
        path: PathBuf,
        /// The private key that was tried.
        key: PathBuf,
    },
    /// The key's certificate was found but the file cannot be decrypted.
    #[error(
        "{} is corrupt or was tampered with ({detail}); restore it from version control or a backup",
        path.display()
    )]
    Corrupt {
        /// The secrets file.
        path: PathBuf,
        /// What failed, without secret content.
        detail: String,
    },
    /// The plaintext is not a valid secrets table.
    #[error("{origin}: {}{message}", location.map(|(l, c)| format!("line {l}, column {c}: ")).unwrap_or_default())]
    Content {
        /// Where the plaintext came from ("stdin", "the edited secrets").
        origin: String,
        /// 1-based line and column, when known.
        location: Option<(usize, usize)>,
        /// What is wrong (never quoting a value).
        message: String,
    },
    /// A secret name (or value) that cannot be used.
    #[error("{problem}")]
    Name {
        /// The name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The private key cannot be used.
    #[error(
        "cannot use {} as the private key: {detail}; expected an unencrypted PEM private key (RSA or EC), e.g. from `openssl genpkey`",
        path.display()
    )]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The private key and the certificate given with it do not match.
    #[error(
        "the private key {} does not belong to the certificate {subject} ({}); pass the certificate issued for this key, or the key of that certificate",
        key.display(),
        cert.display()
    )]
    KeyCertMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
        /// The certificate's subject.
        subject: String,
    },
    /// A certificate file cannot be used.
    #[error(
        "cannot use the certificate file {}: {detail}",
        path.display()
    )]
    Certificate {
        /// The certificate file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// No recipients were given and none are recorded.
    #[error(
        "no recipients: pass the certificate(s) to encrypt for with -r CERT ({} does not exist yet)",
        recipients_file.display()
    )]
    NoRecipients {
        /// Where the recipients would have been recorded.
        recipients_file: PathBuf,
    },
    /// Services name secrets that the file does not hold.
    #[error(
        "{} lacks secrets that the manifest gives to services: {}; it holds: {}; add them with `mortar secrets set NAME` or edit the manifest",
        path.display(),
        missing.iter().map(|(service, name)| format!("service {service} needs {name}")).collect::<Vec<_>>().join(", "),
        if available.is_empty() { "none".to_owned() } else { available.join(", ") }
    )]
    Missing {
        /// The secrets file.
        path: PathBuf,
        /// (service, secret name) pairs that cannot be served.
        missing: Vec<(String, String)>,
        /// The names the file holds.
        available: Vec<String>,
    },
    /// OpenSSL could not encrypt.
    #[error("cannot encrypt the secrets: {detail}")]
    Encrypt {
        /// OpenSSL's reason.
        detail: String,
    },
}

/// "; its recipients: CN=ops (serial 01), …" when they are known.
fn recipients_hint(recipients: &[String]) -> String {
    if recipients.is_empty() {
        String::new()
    } else {
        format!(" (its recipients: {})", recipients.join("; "))
    }
}
