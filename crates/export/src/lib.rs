//! `mortar export kubernetes`: the same `mortar.toml` that runs an app on
//! one machine, turned into Kubernetes objects for when it outgrows it.
//!
//! The export maps what Kubernetes and its common add-ons can express —
//! rolling and recreate deploys (Deployment), blue-green (Argo Rollouts),
//! backlog autoscaling (KEDA on the JetStream consumer), plain config
//! (ConfigMap), secret *references* (never values), probes on the SDK's
//! health endpoints, the gateway's routes (Ingress), and the bus bridge
//! (`mortar bus http`, a sidecar) beside services that use the HTTP bus API
//! — and reports what it cannot express as [`Export::notes`] instead of
//! dropping it silently.
//! docs/scale-out.md lists both.

mod autoscale;
mod config;
mod error;
mod export;
mod ingress;
mod object;
mod options;
mod service;
mod workload;

pub use error::ExportError;
pub use export::{Export, ExportFile, kubernetes};
pub use options::{
    BUS_BRIDGE_PORT, DEFAULT_BUS_URL, DEFAULT_NATS_REPLICAS, DEFAULT_REGISTRY, ExportOptions,
    HTTP_PORT, parse_image,
};
