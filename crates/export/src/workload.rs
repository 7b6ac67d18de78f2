//! The workload of a service: a Deployment (rolling or recreate) or, for
//! blue-green, an Argo Rollouts `Rollout`; both run the same pod template.

use mortar_manifest::{BusApi, ServiceSpec, Strategy};
use serde_json::{Value, json};

use crate::config::{bus_bridge_token_env, config_map_name, container_env, instance_env};
use crate::object::{Owner, object, seconds};
use crate::options::BUS_BRIDGE_PORT;
use crate::service::preview_service_name;

/// How often the readiness probe runs; also the unit of the startup
/// probe's budget.
const READY_PERIOD_SECONDS: u64 = 2;
/// How often the liveness probe runs.
const LIVE_PERIOD_SECONDS: u64 = 10;
/// Failed liveness probes in a row before the container is restarted.
const LIVE_FAILURES: u64 = 3;

/// The API group and version of Argo Rollouts' `Rollout`.
pub(crate) const ROLLOUT_API: &str = "argoproj.io/v1alpha1";

/// The Deployment or Rollout of `spec`.
pub(crate) fn workload(
    owner: &Owner<'_>,
    spec: &ServiceSpec,
    image: &str,
    mortar_image: &str,
) -> Value {
    let deploy = &spec.deploy;
    let min_ready = seconds(deploy.min_ready);
    let mut body = json!({
        "selector": {"matchLabels": owner.selector()},
        "minReadySeconds": min_ready,
        // Kubernetes requires the deadline to exceed minReadySeconds.
        "progressDeadlineSeconds": seconds(deploy.progress_deadline).max(min_ready + 1),
        "revisionHistoryLimit": 5,
        "template": pod_template(owner, spec, image, mortar_image),
    });
    // An autoscaled service's count belongs to KEDA: a replica count here
    // would reset it on every `kubectl apply`.
    if spec.autoscale.is_none() {
        body["replicas"] = spec.instances.into();
    }
    match deploy.strategy {
        Strategy::Rolling => {
            body["strategy"] = json!({
                "type": "RollingUpdate",
                "rollingUpdate": {
                    "maxSurge": deploy.max_surge,
                    "maxUnavailable": deploy.max_unavailable,
                },
            });
        }
        Strategy::Recreate => body["strategy"] = json!({"type": "Recreate"}),
        Strategy::BlueGreen => {
            let mut blue_green = json!({
                "activeService": owner.service,
                "previewService": preview_service_name(owner.service),
                "autoPromotionEnabled": !deploy.manual,
                // The old version keeps running this long after promotion.
                "scaleDownDelaySeconds": seconds(deploy.promote_delay),
            });
            if !deploy.manual {
                // The analysis window: the new version is observed on the
                // preview Service this long before promotion.
                blue_green["autoPromotionSeconds"] = seconds(deploy.analysis).into();
            }
            body["strategy"] = json!({"blueGreen": blue_green});
            let meta = owner.metadata(owner.service);
            return object(ROLLOUT_API, "Rollout", meta, ("spec", body));
        }
    }
    object(
        "apps/v1",
        "Deployment",
        owner.metadata(owner.service),
        ("spec", body),
    )
}

/// A probe of `path` on the container port named `port`.
fn probe(path: &str, port: &str, period: u64, failures: u64) -> Value {
    json!({
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
    })
}

/// The pod template: one container, probes on the health paths, a preStop
/// pause of `drain_delay` so endpoints drop the pod before SIGTERM, and a
/// termination grace that covers the pause plus the service's own drain.
/// A `bus_api = "http"` service gets the bus bridge as a sidecar.
fn pod_template(owner: &Owner<'_>, spec: &ServiceSpec, image: &str, mortar_image: &str) -> Value {
    let drain = seconds(spec.deploy.drain_delay);
    let probe = |path: &str, period: u64, failures: u64| probe(path, "http", period, failures);
    // The startup probe gives the instance `startup_timeout` to become
    // ready, as the node does, before liveness takes over.
    let startup_failures = seconds(spec.startup_timeout)
        .div_ceil(READY_PERIOD_SECONDS)
        .max(1);
    let mut container = json!({
        "name": owner.service,
        "image": image,
        "ports": [{"name": "http", "containerPort": crate::HTTP_PORT, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": config_map_name(owner.service)}}],
        "env": container_env(owner.app, spec),
        "startupProbe": probe(&spec.health.ready, READY_PERIOD_SECONDS, startup_failures),
        "readinessProbe": probe(&spec.health.ready, READY_PERIOD_SECONDS, 1),
        "livenessProbe": probe(&spec.health.live, LIVE_PERIOD_SECONDS, LIVE_FAILURES),
    });
    if drain > 0 {
        container["lifecycle"] = json!({"preStop": {"sleep": {"seconds": drain}}});
    }
    // The program is the image's entrypoint; only its arguments carry over.
    if spec.command.len() > 1 {
        container["args"] = json!(spec.command[1..]);
    }
    let mut pod = json!({
        "terminationGracePeriodSeconds": seconds(spec.grace_period) + drain,
        "containers": [container],
    });
    if spec.bus_api == BusApi::Http {
        pod["initContainers"] = json!([bus_bridge(owner, mortar_image)]);
    }
    json!({
        "metadata": {"labels": owner.labels()},
        "spec": pod,
    })
}

/// The bus bridge (`mortar bus http`) as a native sidecar (an init
/// container that keeps running): it is started, and serving, before the
/// service, and stopped only after the service has drained — so the
/// service's last acks still reach the bus. It listens on the pod's
/// network (probes come from the kubelet, not loopback) and takes only
/// requests carrying the token from the app's bus-bridge Secret.
fn bus_bridge(owner: &Owner<'_>, mortar_image: &str) -> Value {
    json!({
        "name": "bus-http",
        "image": mortar_image,
        "args": ["bus", "http"],
        "restartPolicy": "Always",
        "ports": [{"name": "bus-http", "containerPort": BUS_BRIDGE_PORT, "protocol": "TCP"}],
        // The service's bus settings (URL, deliveries, ack deadline, size
        // limit, replicas), from the same ConfigMap.
        "envFrom": [{"configMapRef": {"name": config_map_name(owner.service)}}],
        "env": [
            {"name": "PORT", "value": BUS_BRIDGE_PORT.to_string()},
            {"name": "MORTAR_SERVICE", "value": format!("{}-bus-http", owner.service)},
            instance_env(),
            bus_bridge_token_env(owner.app),
        ],
        // Started once it listens; ready once JetStream is connected.
        "startupProbe": probe("/health/live", "bus-http", READY_PERIOD_SECONDS, 30),
        "readinessProbe": probe("/health/ready", "bus-http", READY_PERIOD_SECONDS, 1),
        "livenessProbe": probe("/health/live", "bus-http", LIVE_PERIOD_SECONDS, LIVE_FAILURES),
    })
}
