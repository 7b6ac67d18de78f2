//! The gateway's routes as an Ingress: each prefix to its service's
//! Service, which the cluster's ingress controller then serves.

use mortar_manifest::GatewaySpec;
use serde_json::{Value, json};

use crate::object::{metadata, object};

/// The Ingress of the app, or `None` when the gateway has no routes.
pub(crate) fn ingress(app: &str, namespace: Option<&str>, gateway: &GatewaySpec) -> Option<Value> {
    if gateway.routes.is_empty() {
        return None;
    }
    let paths: Vec<Value> = gateway
        .routes
        .iter()
        .map(|route| {
            json!({
                "path": route.prefix,
                "pathType": "Prefix",
                "backend": {"service": {"name": route.service, "port": {"name": "http"}}},
            })
        })
        .collect();
    let labels = json!({
        "app.kubernetes.io/part-of": app,
        "app.kubernetes.io/managed-by": "mortar",
    });
    Some(object(
        "networking.k8s.io/v1",
        "Ingress",
        metadata(app, namespace, labels),
        ("spec", json!({"rules": [{"http": {"paths": paths}}]})),
    ))
}
