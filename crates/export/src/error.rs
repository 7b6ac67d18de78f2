//! What can go wrong in an export: bad options (named, with the fix) and
//! writing the files.

use std::path::PathBuf;

/// An export that could not be produced or written; nothing is written
/// for option errors.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// `--image` named a service the manifest does not have.
    #[error("--image {service}=…: the manifest has no service {service:?}; services are: {known}")]
    UnknownImageService {
        /// The service named.
        service: String,
        /// The manifest's services, comma-separated.
        known: String,
    },
    /// An `--image` value that is not `SERVICE=REF`.
    #[error(
        "--image {0:?}: expected SERVICE=IMAGE, for example catalog=registry.example/shop-catalog:1.4"
    )]
    BadImage(String),
    /// A namespace that is not a DNS label.
    #[error(
        "--namespace {0:?}: expected a DNS label (1-63 characters of a-z, 0-9 and '-', not starting or ending with '-')"
    )]
    BadNamespace(String),
    /// A bus URL the services could not use in a cluster.
    #[error(
        "--bus-url {0:?}: expected a nats:// URL such as nats://nats:4222 (the cluster's NATS JetStream)"
    )]
    BadBusUrl(String),
    /// A store URL the services could not use in a cluster.
    #[error("--store-url {url:?}: {problem}")]
    BadStoreUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it and how to fix it.
        problem: String,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An object could not be serialized (a bug, not bad input).
    #[error("cannot serialize {object} as YAML: {source}")]
    Yaml {
        /// Kind and name of the object.
        object: String,
        /// The serializer's error.
        source: serde_norway::Error,
    },
}
