//! `/metrics` of a service: what it answered (requests, latency and status
//! per route) and what it asked (calls, latency and failures per upstream
//! service, retries, ejections, breaker states), in the Prometheus
//! (OpenMetrics) text format.
//!
//! Request counters are recorded by [`crate::request`] as requests finish;
//! the clients' numbers are read from the clients at scrape time, so they
//! cannot drift from what the clients decided.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use mortar_resilience::{BreakerState, Client, LATENCY_BUCKETS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The media type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label pairs of one series.
pub type Labels = Vec<(&'static str, String)>;

type RequestLabels = Vec<(&'static str, String)>;

/// A service's metrics: its request families and the clients it made.
/// Cheap to clone.
#[derive(Clone)]
pub struct ServiceMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram>,
    clients: Clients,
}

impl std::fmt::Debug for ServiceMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceMetrics").finish_non_exhaustive()
    }
}

/// The clients a service made with `ctx.client`, read at scrape time.
#[derive(Clone, Default)]
struct Clients(Arc<Mutex<Vec<Client>>>);

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients").finish_non_exhaustive()
    }
}

impl Collector for Clients {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let clients = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        encode_clients(&mut encoder, "service", &clients)
    }
}

impl Default for ServiceMetrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(LATENCY_BUCKETS.iter().copied())
        });
        let clients = Clients::default();
        let mut registry = Registry::default();
        registry.register(
            "mortar_http_requests",
            "Requests answered, per route, method and status code.",
            requests.clone(),
        );
        registry.register(
            "mortar_http_request_duration_seconds",
            "Time to answer a request (until the response head), per route and method.",
            duration.clone(),
        );
        registry.register_collector(Box::new(clients.clone()));
        ServiceMetrics {
            inner: Arc::new(Inner {
                registry,
                requests,
                duration,
                clients,
            }),
        }
    }
}

impl ServiceMetrics {
    /// Records one answered request. `route` is the matched route pattern
    /// (`/v1/orders/{id}`), never the raw path, so ids do not explode the
    /// number of series.
    pub fn record(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let route = route.to_owned();
        let method = method.to_owned();
        self.inner
            .requests
            .get_or_create(&vec![
                ("route", route.clone()),
                ("method", method.clone()),
                ("status", status.to_string()),
            ])
            .inc();
        self.inner
            .duration
            .get_or_create(&vec![("route", route), ("method", method)])
            .observe(elapsed.as_secs_f64());
    }

    /// Exports `client`'s numbers on `/metrics` from now on.
    pub fn watch_client(&self, client: &Client) {
        self.inner
            .clients
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(client.clone());
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry);
        text
    }

    /// The `/metrics` answer.
    pub fn response(&self) -> Response {
        ([(header::CONTENT_TYPE, CONTENT_TYPE)], self.render()).into_response()
    }
}

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

/// Writes the numbers of `clients` (summed) as the `mortar_client_*`
/// families, labelled `component` (`gateway`, `service`): decision
/// counters, and per upstream service its calls, failures, latency
/// histogram and breaker state (0 closed, 1 half-open, 2 open).
pub fn encode_clients(
    encoder: &mut DescriptorEncoder,
    component: &str,
    clients: &[Client],
) -> Result<(), std::fmt::Error> {
    let mut m = mortar_resilience::MetricsSnapshot::default();
    let mut upstreams: Vec<(String, mortar_resilience::UpstreamSnapshot)> = Vec::new();
    let mut breakers: Vec<(String, BreakerState)> = Vec::new();
    for client in clients {
        let s = client.metrics().snapshot();
        m.calls += s.calls;
        m.failures += s.failures;
        m.attempts += s.attempts;
        m.retries += s.retries;
        m.retries_denied_by_budget += s.retries_denied_by_budget;
        m.timeouts += s.timeouts;
        m.deadlines_exceeded += s.deadlines_exceeded;
        m.no_instances += s.no_instances;
        m.ejections += s.ejections;
        m.readmissions += s.readmissions;
        m.breaker_opened += s.breaker_opened;
        m.breaker_half_opened += s.breaker_half_opened;
        m.breaker_closed += s.breaker_closed;
        m.breaker_rejected += s.breaker_rejected;
        m.fallbacks += s.fallbacks;
        for (service, u) in client.upstreams() {
            match upstreams.iter_mut().find(|(s, _)| *s == service) {
                Some((_, sum)) => {
                    sum.calls += u.calls;
                    sum.failures += u.failures;
                    sum.latency_sum_us += u.latency_sum_us;
                    for (a, b) in sum.cumulative.iter_mut().zip(&u.cumulative) {
                        *a += b;
                    }
                }
                None => upstreams.push((service, u)),
            }
        }
        for (service, state) in client.breaker_states() {
            match breakers.iter_mut().find(|(s, _)| *s == service) {
                // The worst state of any client counts.
                Some((_, worst)) => *worst = worse(*worst, state),
                None => breakers.push((service, state)),
            }
        }
    }
    let one = |v: u64| vec![(vec![("component", component.to_owned())], v)];
    let families: [(&str, &str, u64); 15] = [
        ("mortar_client_calls", "Calls made to services.", m.calls),
        (
            "mortar_client_failures",
            "Calls that ended in an error.",
            m.failures,
        ),
        (
            "mortar_client_attempts",
            "Attempts sent to instances (first tries and retries).",
            m.attempts,
        ),
        ("mortar_client_retries", "Retries issued.", m.retries),
        (
            "mortar_client_retries_denied",
            "Retries refused by the retry budget.",
            m.retries_denied_by_budget,
        ),
        (
            "mortar_client_timeouts",
            "Attempts that hit the per-try timeout.",
            m.timeouts,
        ),
        (
            "mortar_client_deadlines_exceeded",
            "Calls that ran out of their overall deadline.",
            m.deadlines_exceeded,
        ),
        (
            "mortar_client_no_instances",
            "Calls refused because no instance was ready.",
            m.no_instances,
        ),
        (
            "mortar_client_ejections",
            "Instances taken out of rotation after consecutive failures.",
            m.ejections,
        ),
        (
            "mortar_client_readmissions",
            "Ejected instances put back.",
            m.readmissions,
        ),
        (
            "mortar_client_breaker_opened",
            "Circuit breaker transitions to open.",
            m.breaker_opened,
        ),
        (
            "mortar_client_breaker_half_opened",
            "Circuit breaker transitions to half-open.",
            m.breaker_half_opened,
        ),
        (
            "mortar_client_breaker_closed",
            "Circuit breaker transitions to closed.",
            m.breaker_closed,
        ),
        (
            "mortar_client_breaker_rejected",
            "Calls shed by an open circuit breaker.",
            m.breaker_rejected,
        ),
        (
            "mortar_client_fallbacks",
            "Failed calls answered by the fallback hook.",
            m.fallbacks,
        ),
    ];
    for (name, help, value) in families {
        counter(encoder, name, help, &one(value))?;
    }
    let labels = |service: &str| {
        vec![
            ("component", component.to_owned()),
            ("upstream", service.to_owned()),
        ]
    };
    counter(
        encoder,
        "mortar_client_upstream_calls",
        "Calls per upstream service.",
        &upstreams
            .iter()
            .map(|(s, u)| (labels(s), u.calls))
            .collect::<Vec<_>>(),
    )?;
    counter(
        encoder,
        "mortar_client_upstream_failures",
        "Failed calls per upstream service (before any fallback).",
        &upstreams
            .iter()
            .map(|(s, u)| (labels(s), u.failures))
            .collect::<Vec<_>>(),
    )?;
    {
        let mut family = encoder.encode_descriptor(
            "mortar_client_upstream_duration_seconds",
            "Time a call to an upstream service took, retries included.",
            None,
            MetricType::Histogram,
        )?;
        for (service, u) in &upstreams {
            let mut previous = 0;
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(&u.cumulative)
                .map(|(bound, total)| {
                    let n = total - previous;
                    previous = *total;
                    (bound, n)
                })
                .collect();
            let labels = labels(service);
            family.encode_family(&labels)?.encode_histogram::<Labels>(
                u.latency_sum_us as f64 / 1e6,
                u.calls,
                &buckets,
                None,
            )?;
        }
    }
    gauge(
        encoder,
        "mortar_client_breaker_state",
        "Circuit breaker state per upstream service: 0 closed, 1 half-open, 2 open.",
        &breakers
            .iter()
            .map(|(s, state)| (labels(s), breaker_value(*state)))
            .collect::<Vec<_>>(),
    )
}

fn breaker_value(state: BreakerState) -> i64 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen { .. } => 1,
        BreakerState::Open { .. } => 2,
    }
}

fn worse(a: BreakerState, b: BreakerState) -> BreakerState {
    if breaker_value(b) > breaker_value(a) {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_per_route_and_status() {
        let metrics = ServiceMetrics::default();
        metrics.record("/v1/orders", "POST", 201, Duration::from_millis(3));
        metrics.record("/v1/orders", "POST", 201, Duration::from_millis(4));
        metrics.record("/v1/orders/{id}", "GET", 404, Duration::from_millis(1));
        let text = metrics.render();
        assert!(
            text.contains(
                r#"mortar_http_requests_total{route="/v1/orders",method="POST",status="201"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"mortar_http_request_duration_seconds_bucket{le="0.005",route="/v1/orders",method="POST"} 2"#
            ) || text.contains(
                r#"mortar_http_request_duration_seconds_bucket{route="/v1/orders",method="POST",le="0.005"} 2"#
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_exposition_parses_with_a_prometheus_parser_and_has_the_key_series() {
        let metrics = ServiceMetrics::default();
        metrics.record("/v1/orders", "POST", 201, Duration::from_millis(3));
        metrics.record("/v1/orders", "POST", 503, Duration::from_millis(40));
        let text = metrics.render();
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        let names: std::collections::BTreeSet<&str> =
            scrape.samples.iter().map(|s| s.metric.as_str()).collect();
        for key in [
            "mortar_http_requests_total",
            "mortar_http_request_duration_seconds",
            "mortar_http_request_duration_seconds_count",
            "mortar_client_calls_total",
            "mortar_client_retries_total",
            "mortar_client_ejections_total",
            "mortar_client_breaker_opened_total",
        ] {
            assert!(names.contains(key), "{key} missing from {names:?}");
        }
        let errors = scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "mortar_http_requests_total" && s.labels.get("status") == Some("503")
            })
            .unwrap();
        // OpenMetrics names a counter family without `_total`; the parser
        // then reads the sample untyped.
        assert!(matches!(
            errors.value,
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) if v == 1.0
        ));
        let histogram = scrape
            .samples
            .iter()
            .find(|s| s.metric == "mortar_http_request_duration_seconds")
            .unwrap();
        let prometheus_parse::Value::Histogram(buckets) = &histogram.value else {
            panic!("not a histogram: {histogram:?}");
        };
        assert_eq!(buckets.last().unwrap().count, 2.0);
    }
}
