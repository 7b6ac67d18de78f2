//! A service's environment: plain values in a ConfigMap, secrets as
//! references to a Secret (the values never leave the operator's hands).

use std::collections::BTreeMap;

use mortar_manifest::{BusApi, BusSpec, ServiceSpec};
use serde_json::{Value, json};

use crate::object::{Owner, object};
use crate::options::{BUS_BRIDGE_PORT, ExportOptions, HTTP_PORT};
use crate::service::SERVICE_PORT;

/// The Secret holding the app's secrets, one key per secret name; the
/// operator creates it (`kubectl create secret generic <app>-secrets …`).
pub(crate) fn secret_name(app: &str) -> String {
    format!("{app}-secrets")
}

/// The Secret holding the bus bridge's bearer token (key `token`), which
/// both the bridge and the service beside it read; the operator creates it.
pub(crate) fn bus_bridge_secret_name(app: &str) -> String {
    format!("{app}-bus-http")
}

/// The environment variable carrying the bus bridge's bearer token.
pub(crate) const BUS_HTTP_TOKEN_ENV: &str = "MORTAR_BUS_HTTP_TOKEN";

/// The ConfigMap of a service.
pub(crate) fn config_map_name(service: &str) -> String {
    format!("{service}-config")
}

/// The plain environment of a service: its manifest `env`, then what the
/// node would set on one machine, with cluster URLs instead of local ones.
pub(crate) fn plain_env(
    app: &str,
    spec: &ServiceSpec,
    bus: &BusSpec,
    options: &ExportOptions,
) -> BTreeMap<String, String> {
    let mut env = spec.env.clone();
    let mortar = [
        ("MORTAR_APP", app.to_owned()),
        ("MORTAR_SERVICE", spec.name.clone()),
        ("PORT", HTTP_PORT.to_string()),
        // A pod's loopback is unreachable for probes and callers.
        ("MORTAR_BIND_ADDR", "0.0.0.0".to_owned()),
        // No node: other services are found by the cluster's DNS, on the
        // port their Services answer on.
        ("MORTAR_DISCOVERY", format!("dns:{SERVICE_PORT}")),
        ("MORTAR_BUS_URL", options.bus_url.clone()),
        ("MORTAR_BUS_MAX_DELIVERIES", bus.max_deliveries.to_string()),
        (
            "MORTAR_BUS_ACK_DEADLINE_MS",
            bus.ack_deadline.as_millis().to_string(),
        ),
        (
            "MORTAR_BUS_MAX_MESSAGE_BYTES",
            bus.max_message_bytes.to_string(),
        ),
        (
            "MORTAR_BUS_NATS_REPLICAS",
            options.nats_replicas.to_string(),
        ),
        ("MORTAR_STORE_URL", options.store_url(app, &spec.name)),
        (
            "MORTAR_SHUTDOWN_GRACE",
            format!("{}ms", spec.grace_period.as_millis()),
        ),
    ];
    env.extend(mortar.into_iter().map(|(k, v)| (k.to_owned(), v)));
    if !spec.secrets.is_empty() {
        env.insert("MORTAR_SECRET_NAMES".into(), spec.secrets.join(","));
    }
    // No node serves the HTTP bus API in a cluster: the bridge beside the
    // service does, on the pod's loopback.
    if spec.bus_api == BusApi::Http {
        env.insert(
            "MORTAR_BUS_HTTP_URL".into(),
            format!("http://127.0.0.1:{BUS_BRIDGE_PORT}"),
        );
    }
    env
}

/// The ConfigMap holding a service's plain environment.
pub(crate) fn config_map(owner: &Owner<'_>, env: &BTreeMap<String, String>) -> Value {
    object(
        "v1",
        "ConfigMap",
        owner.metadata(&config_map_name(owner.service)),
        ("data", json!(env)),
    )
}

/// The container's `env`: the instance id from the pod's name, each
/// secret as a reference to its key in the app's Secret, and the bus
/// bridge's token for a service that uses it.
pub(crate) fn container_env(app: &str, spec: &ServiceSpec) -> Value {
    let mut env = vec![instance_env()];
    env.extend(spec.secrets.iter().map(|name| {
        json!({
            "name": name,
            "valueFrom": {"secretKeyRef": {"name": secret_name(app), "key": name}},
        })
    }));
    if spec.bus_api == BusApi::Http {
        env.push(bus_bridge_token_env(app));
    }
    Value::Array(env)
}

/// `MORTAR_INSTANCE` from the pod's name.
pub(crate) fn instance_env() -> Value {
    json!({
        "name": "MORTAR_INSTANCE",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
    })
}

/// The bus bridge's bearer token, from its Secret.
pub(crate) fn bus_bridge_token_env(app: &str) -> Value {
    json!({
        "name": BUS_HTTP_TOKEN_ENV,
        "valueFrom": {"secretKeyRef": {"name": bus_bridge_secret_name(app), "key": "token"}},
    })
}
