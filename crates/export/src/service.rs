//! The Services that give a service its cluster DNS name (the same name as
//! on one machine), and blue-green's preview Service.

use serde_json::{Value, json};

use crate::object::{Owner, object};

/// The port a Service answers on, so callers use `http://<service>/`.
pub(crate) const SERVICE_PORT: u16 = 80;

/// The Service through which a blue-green service's new version is
/// reachable before promotion.
pub(crate) fn preview_service_name(service: &str) -> String {
    format!("{service}-preview")
}

/// A ClusterIP Service called `name` in front of the service's pods (Argo
/// Rollouts narrows the selector to the active or preview version).
pub(crate) fn service(owner: &Owner<'_>, name: &str) -> Value {
    object(
        "v1",
        "Service",
        owner.metadata(name),
        (
            "spec",
            json!({
                "type": "ClusterIP",
                "selector": owner.selector(),
                "ports": [{
                    "name": "http",
                    "port": SERVICE_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                }],
            }),
        ),
    )
}
