//! Service-to-service mTLS for mortar.
//!
//! The node runs a small local certificate authority ([`Ca`]): at launch it
//! gives each instance a short-lived certificate naming its service (a URI
//! SAN `mortar://<app>/<service>` and a DNS SAN `<service>.<app>.mortar`),
//! the CA's certificate to trust, and renews both files before they expire.
//! Services read them through [`InstanceTls`]: servers require a client
//! certificate signed by the node's CA and learn the caller's service from
//! it ([`peer_service`]); clients present theirs and check the server's.
//! [`Identity`] re-reads renewed files on the next handshake, so renewal
//! needs no restart.
//!
//! Crypto is rustls with the `ring` provider (no aws-lc C build).

mod ca;
mod caller;
mod config;
mod credentials;
mod identity;

pub use ca::{Ca, InstanceFiles, Issued, renew_forever};
pub use caller::{Caller, CallerError};
pub use config::{
    InstanceTls, client_config, peer_service, provider, server_config, server_name, service_uri,
};
pub use credentials::{ADMIN_TOKEN_FILE, Credentials, NODE_TOKEN_ENV, Role};
pub use identity::Identity;

/// Environment variable: the instance's certificate (PEM), renewed in place.
pub const CERT_ENV: &str = "MORTAR_TLS_CERT";
/// Environment variable: the instance's private key (PEM, mode 0600).
pub const KEY_ENV: &str = "MORTAR_TLS_KEY";
/// Environment variable: the node CA's certificate (PEM), the only root an
/// instance trusts for service-to-service calls.
pub const CA_ENV: &str = "MORTAR_TLS_CA";
/// Environment variable: the services allowed to call this one
/// (comma-separated; unset = any service of the app; empty = none).
pub const CALLERS_ENV: &str = "MORTAR_TLS_CALLERS";
/// Environment variable: the application name the certificates are for.
pub const APP_ENV: &str = "MORTAR_APP";

/// The identity of the node itself (its health probes); always allowed to
/// call a service, whatever its `callers` list says.
pub const NODE_IDENTITY: &str = "mortar";
/// The gateway's identity: the app's public edge calls services as this.
pub const GATEWAY_IDENTITY: &str = "gateway";

/// What can go wrong making, loading or using TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Making or signing a certificate failed.
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file held no usable certificate or key.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: std::path::PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the configuration or key.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// A service or app name does not make a valid server name.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
}
