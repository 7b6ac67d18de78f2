//! `/metrics`: the node's state in the Prometheus (OpenMetrics) text format,
//! read from the live components at scrape time rather than mirrored into
//! counters that could drift.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use mortar_supervisor::{InstanceState, Supervisor};

/// The media type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A source of metric families, asked on every scrape.
pub trait Source: Send + Sync + 'static {
    /// Encodes this source's families.
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error>;
}

/// Every source of the node, as one collector.
struct Sources(Vec<Arc<dyn Source>>);

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Sources").field(&self.0.len()).finish()
    }
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for source in &self.0 {
            source.encode(&mut encoder)?;
        }
        Ok(())
    }
}

/// Renders the exposition text of `sources`.
pub fn render(sources: Vec<Arc<dyn Source>>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Sources(sources)));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// Label pairs of one series.
pub type Labels = Vec<(&'static str, String)>;

/// Writes one gauge family: `(labels, value)` per series.
pub fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, i64)],
) -> Result<(), std::fmt::Error> {
    let mut family =
        encoder.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
    for (labels, value) in series {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

/// Writes one counter family (the exposition adds `_total`).
pub fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family =
        encoder.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for (labels, value) in series {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

/// Instances per service and state, and restarts per instance.
pub struct SupervisorSource(pub Arc<Supervisor>);

impl Source for SupervisorSource {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let services = self.0.status();
        let states = [
            InstanceState::Starting,
            InstanceState::Ready,
            InstanceState::NotReady,
            InstanceState::Backoff,
            InstanceState::Stopping,
            InstanceState::Stopped,
            InstanceState::Failed,
        ];
        let mut instances = Vec::new();
        let mut restarts = Vec::new();
        for service in &services {
            for state in states {
                let count = service
                    .instances
                    .iter()
                    .filter(|i| i.state == state)
                    .count() as i64;
                let state_name = serde_json::to_value(state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                instances.push((
                    vec![("service", service.name.clone()), ("state", state_name)],
                    count,
                ));
            }
            for i in &service.instances {
                restarts.push((
                    vec![
                        ("service", service.name.clone()),
                        ("instance", i.id.clone()),
                    ],
                    u64::from(i.restarts),
                ));
            }
        }
        gauge(
            encoder,
            "mortar_instances",
            "Instances per service and life-cycle state.",
            &instances,
        )?;
        counter(
            encoder,
            "mortar_instance_restarts",
            "Restarts of an instance after it exited unexpectedly.",
            &restarts,
        )?;
        gauge(
            encoder,
            "mortar_service_desired_instances",
            "Instances a service should run: the manifest's count, or the autoscaler's.",
            &services
                .iter()
                .map(|s| (vec![("service", s.name.clone())], i64::from(s.desired)))
                .collect::<Vec<_>>(),
        )?;
        gauge(
            encoder,
            "mortar_service_ready_instances",
            "Instances of a service answering their readiness check.",
            &services
                .iter()
                .map(|s| (vec![("service", s.name.clone())], i64::from(s.ready)))
                .collect::<Vec<_>>(),
        )?;
        let events = self.0.events();
        counter(
            encoder,
            "mortar_deploys",
            "Deploy events (started, succeeded, rolled_back) per service and strategy since the node started.",
            &events
                .deploys()
                .into_iter()
                .map(|(service, strategy, event, n)| {
                    (
                        vec![
                            ("service", service),
                            ("strategy", strategy),
                            ("event", event.as_str().to_owned()),
                        ],
                        n,
                    )
                })
                .collect::<Vec<_>>(),
        )?;
        counter(
            encoder,
            "mortar_autoscale_events",
            "Autoscaler actions that changed a service's instance count (direction up or down).",
            &events
                .scales()
                .into_iter()
                .map(|(service, direction, n)| {
                    (
                        vec![
                            ("service", service),
                            ("direction", direction.as_str().to_owned()),
                        ],
                        n,
                    )
                })
                .collect::<Vec<_>>(),
        )?;
        let decisions = self.0.autoscale_decisions();
        let per_service = |f: &dyn Fn(&mortar_supervisor::autoscale::Decision) -> u64| {
            decisions
                .iter()
                .map(|(service, d)| {
                    (
                        vec![("service", service.clone())],
                        i64::try_from(f(d)).unwrap_or(i64::MAX),
                    )
                })
                .collect::<Vec<_>>()
        };
        gauge(
            encoder,
            "mortar_autoscale_current_instances",
            "Instances an autoscaled service runs, as of the autoscaler's latest decision.",
            &per_service(&|d| u64::from(d.decided)),
        )?;
        gauge(
            encoder,
            "mortar_autoscale_desired_instances",
            "Instances the backlog asks for now (ceil(backlog / target_backlog), clamped to min..=max).",
            &per_service(&|d| u64::from(d.desired)),
        )?;
        gauge(
            encoder,
            "mortar_autoscale_backlog",
            "The backlog the autoscaler last read for a service's subscription.",
            &per_service(&|d| d.backlog),
        )
    }
}

/// Backlog, lag and delivery counters per topic and consumer group: the
/// numbers the autoscaler and an operator watch.
pub struct BusSource(pub std::sync::Arc<dyn mortar_bus_server::BusBackend>);

impl Source for BusSource {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let topics = self.0.last_stats();
        let per_topic = |f: &dyn Fn(&mortar_bus::TopicStats) -> u64| -> Vec<(Labels, u64)> {
            topics
                .iter()
                .map(|t| (vec![("topic", t.topic.clone())], f(t)))
                .collect()
        };
        let per_group = |f: &dyn Fn(&mortar_bus::GroupStats) -> u64| -> Vec<(Labels, u64)> {
            topics
                .iter()
                .flat_map(|t| {
                    t.groups.iter().map(move |g| {
                        (
                            vec![("topic", t.topic.clone()), ("group", g.group.clone())],
                            f(g),
                        )
                    })
                })
                .collect()
        };
        counter(
            encoder,
            "mortar_bus_published",
            "Messages appended to a topic (its next offset).",
            &per_topic(&|t| t.next_offset),
        )?;
        gauge(
            encoder,
            "mortar_bus_topic_bytes",
            "Bytes a topic's log holds on disk.",
            &as_gauge(per_topic(&|t| t.bytes)),
        )?;
        gauge(
            encoder,
            "mortar_bus_backlog",
            "Messages of a group not yet acknowledged (undelivered plus in flight).",
            &as_gauge(per_group(&|g| g.backlog)),
        )?;
        gauge(
            encoder,
            "mortar_bus_lag",
            "Offsets between a group's oldest unacknowledged message and the end of the topic.",
            &as_gauge(per_group(&|g| g.lag)),
        )?;
        gauge(
            encoder,
            "mortar_bus_in_flight",
            "Messages delivered to a group and not yet acknowledged.",
            &as_gauge(per_group(&|g| g.in_flight)),
        )?;
        counter(
            encoder,
            "mortar_bus_dead_lettered",
            "Messages a group moved to the dead-letter topic.",
            &per_group(&|g| g.dead_lettered),
        )?;
        counter(
            encoder,
            "mortar_bus_delivered",
            "Messages handed to a group's consumers, redeliveries included.",
            &per_group(&|g| g.delivered),
        )?;
        counter(
            encoder,
            "mortar_bus_redelivered",
            "Messages delivered to a group again (deadline, nack or release).",
            &per_group(&|g| g.redelivered),
        )?;
        let mut family = encoder.encode_descriptor(
            "mortar_bus_commit_seconds",
            "How long a topic's group commits took to fsync: the disk's share of publish latency.",
            None,
            MetricType::Histogram,
        )?;
        // Topics whose commits the broker does not make itself (JetStream) have none.
        for t in topics.iter().filter(|t| !t.commits.buckets.is_empty()) {
            let buckets: Vec<(f64, u64)> = mortar_bus::COMMIT_BUCKETS_SECONDS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(t.commits.buckets.iter().copied())
                .collect();
            family
                .encode_family(&vec![("topic", t.topic.clone())])?
                .encode_histogram::<Labels>(
                    t.commits.sum_micros as f64 / 1e6,
                    t.commits.count,
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}

fn as_gauge(series: Vec<(Labels, u64)>) -> Vec<(Labels, i64)> {
    series
        .into_iter()
        .map(|(labels, n)| (labels, i64::try_from(n).unwrap_or(i64::MAX)))
        .collect()
}

/// The gateway's resilience decisions (calls, retries, timeouts,
/// ejections, breaker transitions) and, per upstream service, its calls,
/// failures, latency histogram and breaker state; and its open client
/// connections per serving thread, where an uneven spread shows.
pub struct GatewaySource(pub mortar_gateway::Gateway);

impl Source for GatewaySource {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        mortar_sdk::metrics::encode_clients(
            encoder,
            "gateway",
            std::slice::from_ref(self.0.client()),
        )?;
        let open = self
            .0
            .open_connections()
            .into_iter()
            .enumerate()
            .map(|(thread, n)| (vec![("thread", thread.to_string())], n as u64))
            .collect();
        gauge(
            encoder,
            "mortar_gateway_open_connections",
            "Open client connections per gateway serving thread.",
            &as_gauge(open),
        )
    }
}
