//! `[services.<name>.deploy]`: how `mortar deploy` replaces a service's
//! instances with a new release — rolling, recreate or blue-green — and the
//! limits that make each safe by default.

use std::time::Duration;

use crate::model::{DeploySpec, Strategy};
use crate::reader::{Reader, Value, child};

/// Keys of `[services.<name>.deploy]`.
const DEPLOY_KEYS: &[&str] = &[
    "strategy",
    "max_surge",
    "max_unavailable",
    "min_ready",
    "progress_deadline",
    "drain_delay",
    "hold_timeout",
    "hold_queue",
    "traffic_share",
    "analysis",
    "min_requests",
    "max_error_rate",
    "max_p99_increase",
    "promote_delay",
    "manual",
];

/// Upper bound of every deploy duration: beyond it the value is almost
/// certainly a unit mistake.
const MAX_DEPLOY_DURATION: Duration = Duration::from_secs(6 * 3600);
/// Upper bound of `min_ready` and `drain_delay`, which may also be zero.
const MAX_SHORT_DURATION: Duration = Duration::from_secs(3600);

/// Reads `[services.<name>.deploy]` at `field`.
pub(crate) fn read_deploy(
    r: &mut Reader<'_>,
    value: &Value<'_>,
    field: &str,
) -> Option<DeploySpec> {
    let table = r.table(value, field)?;
    r.unknown_keys(table, field, DEPLOY_KEYS);
    let d = DeploySpec::default();
    let f = |key: &str| child(field, key);
    let strategy = match table.get("strategy") {
        None => Some(d.strategy),
        Some(v) => {
            const EXPECTED: &str = r#""rolling", "recreate" or "blue-green""#;
            let text = r.string(v, &f("strategy"), EXPECTED)?;
            let strategy = Strategy::parse(text);
            if strategy.is_none() {
                r.error(
                    v.span(),
                    &f("strategy"),
                    format!("expected {EXPECTED}, found {text:?}"),
                );
            }
            strategy
        }
    };
    let count = |r: &mut Reader<'_>, key: &str, default: u32, range| match table.get(key) {
        None => Some(default),
        Some(v) => r.integer(v, &f(key), range),
    };
    let max_surge = count(r, "max_surge", d.max_surge, 0..=crate::MAX_INSTANCES);
    let max_unavailable = count(
        r,
        "max_unavailable",
        d.max_unavailable,
        0..=crate::MAX_INSTANCES,
    );
    let hold_queue = count(r, "hold_queue", d.hold_queue, 1..=1_000_000);
    let traffic_share = count(r, "traffic_share", d.traffic_share, 1..=100);
    let min_requests = count(r, "min_requests", d.min_requests, 1..=10_000_000);
    let duration = |r: &mut Reader<'_>, key: &str, default: Duration| match table.get(key) {
        None => Some(default),
        Some(v) => r.duration(v, &f(key), Some(MAX_DEPLOY_DURATION)),
    };
    let progress_deadline = duration(r, "progress_deadline", d.progress_deadline);
    let hold_timeout = duration(r, "hold_timeout", d.hold_timeout);
    let analysis = duration(r, "analysis", d.analysis);
    let short = |r: &mut Reader<'_>, key: &str, default: Duration| match table.get(key) {
        None => Some(default),
        Some(v) => {
            let duration = r.duration(v, &f(key), None)?;
            if duration > MAX_SHORT_DURATION {
                r.error(
                    v.span(),
                    &f(key),
                    format!(
                        "expected a duration of at most {}, found {:?}",
                        humantime::format_duration(MAX_SHORT_DURATION),
                        r.text(v.span())
                    ),
                );
                return None;
            }
            Some(duration)
        }
    };
    let min_ready = short(r, "min_ready", d.min_ready);
    let drain_delay = short(r, "drain_delay", d.drain_delay);
    let promote_delay = short(r, "promote_delay", d.promote_delay);
    let percent = |r: &mut Reader<'_>, key: &str, default: f64, max: f64| match table.get(key) {
        None => Some(default),
        Some(v) => read_percent(r, v, &f(key), max),
    };
    let max_error_rate = percent(r, "max_error_rate", d.max_error_rate, 100.0);
    let max_p99_increase = percent(r, "max_p99_increase", d.max_p99_increase, 10_000.0);
    let manual = match table.get("manual") {
        None => Some(false),
        Some(v) => {
            let b = v.get_ref().as_bool();
            if b.is_none() {
                r.wrong_type(v, &f("manual"), "true or false");
            }
            b
        }
    };
    let (max_surge, max_unavailable) = (max_surge?, max_unavailable?);
    if max_surge == 0 && max_unavailable == 0 {
        let at = table
            .get("max_surge")
            .or(table.get("max_unavailable"))
            .map_or(value.span(), |v| v.span());
        r.error(
            at,
            &f("max_surge"),
            "max_surge and max_unavailable cannot both be 0: a rolling deploy could then neither add nor remove an instance; set max_surge = 1 (the default) for a rollout that never lowers capacity",
        );
        return None;
    }
    Some(DeploySpec {
        strategy: strategy?,
        max_surge,
        max_unavailable,
        min_ready: min_ready?,
        progress_deadline: progress_deadline?,
        drain_delay: drain_delay?,
        hold_timeout: hold_timeout?,
        hold_queue: hold_queue?,
        traffic_share: traffic_share?,
        analysis: analysis?,
        min_requests: min_requests?,
        max_error_rate: max_error_rate?,
        max_p99_increase: max_p99_increase?,
        promote_delay: promote_delay?,
        manual: manual?,
    })
}

/// A percentage written as a string, `"1%"` or `"0.5%"`, from 0 to `max`.
fn read_percent(r: &mut Reader<'_>, value: &Value<'_>, field: &str, max: f64) -> Option<f64> {
    let expected = format!("a percentage from \"0%\" to \"{max}%\", such as \"1%\" or \"0.5%\"");
    let text = r.string(value, field, &expected)?;
    let parsed = text
        .trim()
        .strip_suffix('%')
        .and_then(|n| n.trim().parse::<f64>().ok())
        .filter(|n| n.is_finite() && (0.0..=max).contains(n));
    if parsed.is_none() {
        r.error(
            value.span(),
            field,
            format!("expected {expected}, found {text:?}"),
        );
    }
    parsed
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::{DeploySpec, Manifest, ManifestError, Strategy};

    fn parse(deploy: &str) -> Result<Manifest, Vec<ManifestError>> {
        let src = format!(
            "[app]\nname = \"shop\"\n\n[services.web]\ncommand = [\"x\"]\n[services.web.deploy]\n{deploy}"
        );
        Manifest::parse(&src, Path::new("mortar.toml")).map_err(|e| e.errors)
    }

    #[test]
    fn an_absent_table_means_a_safe_rolling_deploy() {
        let m = Manifest::parse(
            "[app]\nname = \"a\"\n[services.web]\ncommand = [\"x\"]\n",
            Path::new("mortar.toml"),
        )
        .unwrap();
        let spec = &m.services[0].deploy;
        assert_eq!(spec, &DeploySpec::default());
        assert_eq!(spec.strategy, Strategy::Rolling);
        assert_eq!((spec.max_surge, spec.max_unavailable), (1, 0));
    }

    #[test]
    fn every_key_is_read() {
        let m = parse(
            "strategy = \"blue-green\"\nmax_surge = 2\nmax_unavailable = 1\nmin_ready = \"0s\"\nprogress_deadline = \"1m\"\ndrain_delay = \"200ms\"\nhold_timeout = \"3s\"\nhold_queue = 50\ntraffic_share = 25\nanalysis = \"5s\"\nmin_requests = 10\nmax_error_rate = \"0.5%\"\nmax_p99_increase = \"20%\"\npromote_delay = \"1s\"\nmanual = true\n",
        )
        .unwrap();
        let spec = &m.services[0].deploy;
        assert_eq!(spec.strategy, Strategy::BlueGreen);
        assert_eq!((spec.max_surge, spec.max_unavailable), (2, 1));
        assert_eq!(spec.min_ready, Duration::ZERO);
        assert_eq!(spec.progress_deadline, Duration::from_secs(60));
        assert_eq!(spec.drain_delay, Duration::from_millis(200));
        assert_eq!(
            (spec.hold_timeout, spec.hold_queue),
            (Duration::from_secs(3), 50)
        );
        assert_eq!((spec.traffic_share, spec.min_requests), (25, 10));
        assert_eq!(spec.analysis, Duration::from_secs(5));
        assert_eq!((spec.max_error_rate, spec.max_p99_increase), (0.5, 20.0));
        assert!(spec.manual);
    }

    #[test]
    fn every_mistake_is_reported_with_its_field_and_a_fix() {
        let errors = parse(
            "strategy = \"canary\"\nmax_surge = 0\nmax_unavailable = 0\ntraffic_share = 0\nmax_error_rate = \"1\"\nanalysis = \"0s\"\nmanual = \"yes\"\nspeed = 2\n",
        )
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "services.web.deploy.strategy",
                "services.web.deploy.max_surge",
                "services.web.deploy.traffic_share",
                "services.web.deploy.max_error_rate",
                "services.web.deploy.analysis",
                "services.web.deploy.manual",
                "services.web.deploy.speed",
            ],
            "{errors:#?}"
        );
        assert!(
            errors[0].message.contains("\"blue-green\""),
            "{}",
            errors[0]
        );
        assert!(errors[3].message.contains("\"0.5%\""), "{}", errors[3]);
        let errors = parse("max_surge = 0\nmax_unavailable = 0\n").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].message.contains("cannot both be 0"),
            "{}",
            errors[0]
        );
    }
}
