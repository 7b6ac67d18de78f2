//! Backlog autoscaling: a KEDA `ScaledObject` whose `nats-jetstream`
//! trigger reads the lag of the service's durable consumer, as the node
//! reads the backlog of its subscription on one machine.

use mortar_manifest::{AutoscaleSpec, Strategy};
use serde_json::{Value, json};

use crate::object::{Owner, object, seconds};
use crate::options::ExportOptions;
use crate::workload::ROLLOUT_API;

/// The `ScaledObject` scaling the service's workload between `min` and
/// `max` by `ceil(lag / target_backlog)`, removing instances only after
/// `scale_down_window` of lower demand.
pub(crate) fn scaled_object(
    owner: &Owner<'_>,
    autoscale: &AutoscaleSpec,
    strategy: Strategy,
    options: &ExportOptions,
) -> Value {
    let target = if strategy == Strategy::BlueGreen {
        json!({"apiVersion": ROLLOUT_API, "kind": "Rollout", "name": owner.service})
    } else {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": owner.service})
    };
    object(
        "keda.sh/v1alpha1",
        "ScaledObject",
        owner.metadata(owner.service),
        (
            "spec",
            json!({
                "scaleTargetRef": target,
                "minReplicaCount": autoscale.min,
                "maxReplicaCount": autoscale.max,
                "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {
                    "stabilizationWindowSeconds": seconds(autoscale.scale_down_window),
                }}}},
                "triggers": [{
                    "type": "nats-jetstream",
                    "metadata": {
                        "natsServerMonitoringEndpoint": options.nats_monitoring(),
                        "account": "$G",
                        "stream": mortar_bus_client::jetstream_stream(&autoscale.topic),
                        "consumer": mortar_bus_client::jetstream_consumer(&autoscale.group),
                        "lagThreshold": autoscale.target_backlog.to_string(),
                    },
                }],
            }),
        ),
    )
}
