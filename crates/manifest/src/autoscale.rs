//! `[services.<name>.autoscale]`: how many instances a bus consumer runs,
//! driven by the backlog of one subscription.
//!
//! Cross-checks that need the rest of the manifest (the topic exists in
//! `[bus]`, `instances` lies within `min..=max`) are done here too, so every
//! mistake is reported with the line it is on.

use crate::model::{
    AutoscaleSpec, DEFAULT_SCALE_DOWN_WINDOW, MAX_INSTANCES, MAX_SCALE_DOWN_WINDOW,
};
use crate::reader::{Reader, Value, child};

/// Keys of `[services.<name>.autoscale]`.
const AUTOSCALE_KEYS: &[&str] = &[
    "min",
    "max",
    "subscription",
    "target_backlog",
    "scale_down_window",
];
/// Keys of the `subscription` inline table.
const SUBSCRIPTION_KEYS: &[&str] = &["topic", "group"];
/// How a group name is described in messages (the bus's name rule).
const GROUP_RULE: &str = "1-128 characters of a-z, 0-9, '.', '_' and '-', not starting with '.'";

/// The bus's rule for group names (`mortar_bus_proto::is_valid_name`, kept
/// here so the manifest crate stays free of bus dependencies).
fn is_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// Reads `[services.<name>.autoscale]` at `field`. `topics` are the topics
/// of `[bus]` (`None` when `[bus]` itself is broken, to avoid a second
/// error about the same mistake); `instances` is the service's explicit
/// `instances` value and where it is written, if it has one.
pub(crate) fn read_autoscale(
    r: &mut Reader<'_>,
    value: &Value<'_>,
    field: &str,
    topics: Option<&[String]>,
    instances: Option<(&Value<'_>, u32)>,
) -> Option<AutoscaleSpec> {
    let table = r.table(value, field)?;
    r.unknown_keys(table, field, AUTOSCALE_KEYS);
    let f = |key: &str| child(field, key);
    let missing = |r: &mut Reader<'_>, key: &str, hint: &str| {
        r.error(
            value.span(),
            &f(key),
            format!("missing required key {key:?}; {hint}"),
        );
    };
    let min = match table.get("min") {
        Some(v) => r.integer(v, &f("min"), 1..=MAX_INSTANCES),
        None => Some(1),
    };
    let max = match table.get("max") {
        Some(v) => r.integer(v, &f("max"), 1..=MAX_INSTANCES),
        None => {
            missing(r, "max", "the most instances the autoscaler may run");
            None
        }
    };
    let target_backlog = match table.get("target_backlog") {
        Some(v) => r.integer(v, &f("target_backlog"), 1..=1_000_000),
        None => {
            missing(
                r,
                "target_backlog",
                "the backlog one instance is expected to keep up with, such as 100",
            );
            None
        }
    };
    let scale_down_window = match table.get("scale_down_window") {
        Some(v) => r.duration(v, &f("scale_down_window"), Some(MAX_SCALE_DOWN_WINDOW)),
        None => Some(DEFAULT_SCALE_DOWN_WINDOW),
    };
    let subscription = match table.get("subscription") {
        Some(v) => read_subscription(r, v, &f("subscription"), topics),
        None => {
            missing(
                r,
                "subscription",
                r#"the bus subscription whose backlog drives scaling, such as { topic = "orders", group = "billing" }"#,
            );
            None
        }
    };
    let (min, max) = (min?, max?);
    if min > max {
        let at = table.get("min").map_or(value.span(), |v| v.span());
        r.error(
            at,
            &f("min"),
            format!("min ({min}) must not be greater than max ({max})"),
        );
        return None;
    }
    if let Some((at, n)) = instances
        && !(min..=max).contains(&n)
    {
        r.error(
            at.span(),
            &child(field.trim_end_matches(".autoscale"), "instances"),
            format!(
                "instances ({n}) is the starting count of an autoscaled service and must lie within autoscale min..=max ({min}..={max}); leave it out to start at min"
            ),
        );
        return None;
    }
    let (topic, group) = subscription?;
    Some(AutoscaleSpec {
        min,
        max,
        topic,
        group,
        target_backlog: target_backlog?,
        scale_down_window: scale_down_window?,
    })
}

/// `subscription = { topic = "…", group = "…" }`.
fn read_subscription(
    r: &mut Reader<'_>,
    value: &Value<'_>,
    field: &str,
    topics: Option<&[String]>,
) -> Option<(String, String)> {
    let table = r.table(value, field)?;
    r.unknown_keys(table, field, SUBSCRIPTION_KEYS);
    let topic = match table.get("topic") {
        Some(v) => {
            let name = r.string(
                v,
                &child(field, "topic"),
                "a topic name listed in [bus] topics",
            )?;
            match topics {
                Some(topics) if !topics.iter().any(|t| t == name) => {
                    let known = if topics.is_empty() {
                        "[bus] lists no topics".to_owned()
                    } else {
                        format!("[bus] topics: {}", topics.join(", "))
                    };
                    r.error(
                        v.span(),
                        &child(field, "topic"),
                        format!("unknown topic {name:?}; add it to [bus] topics ({known})"),
                    );
                    None
                }
                _ => Some(name.to_owned()),
            }
        }
        None => {
            r.error(
                value.span(),
                &child(field, "topic"),
                "missing required key \"topic\"; the topic the service consumes",
            );
            None
        }
    };
    let group = match table.get("group") {
        Some(v) => {
            let name = r.string(v, &child(field, "group"), "a consumer group name")?;
            if is_group_name(name) {
                Some(name.to_owned())
            } else {
                r.error(
                    v.span(),
                    &child(field, "group"),
                    format!("expected a group name of {GROUP_RULE}, found {name:?}"),
                );
                None
            }
        }
        None => {
            r.error(
                value.span(),
                &child(field, "group"),
                "missing required key \"group\"; the consumer group the service's instances share",
            );
            None
        }
    };
    Some((topic?, group?))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::{AutoscaleSpec, Manifest, ManifestError};

    fn parse(service: &str, bus: &str) -> Result<Manifest, Vec<ManifestError>> {
        let src = format!(
            "[app]\nname = \"shop\"\n\n[services.worker]\ncommand = [\"x\"]\n{service}\n{bus}"
        );
        Manifest::parse(&src, Path::new("mortar.toml")).map_err(|e| e.errors)
    }

    const BUS: &str = "[bus]\ntopics = [\"jobs\"]\n";

    #[test]
    fn autoscale_is_read_with_defaults_and_starts_at_min() {
        let m = parse(
            "[services.worker.autoscale]\nmin = 2\nmax = 5\ntarget_backlog = 10\nsubscription = { topic = \"jobs\", group = \"workers\" }\n",
            BUS,
        )
        .unwrap();
        let worker = &m.services[0];
        assert_eq!(worker.instances, 2);
        assert_eq!(
            worker.autoscale,
            Some(AutoscaleSpec {
                min: 2,
                max: 5,
                topic: "jobs".into(),
                group: "workers".into(),
                target_backlog: 10,
                scale_down_window: crate::DEFAULT_SCALE_DOWN_WINDOW,
            })
        );
    }

    #[test]
    fn explicit_instances_within_bounds_is_the_starting_count() {
        let m = parse(
            "instances = 3\n[services.worker.autoscale]\nmax = 4\ntarget_backlog = 1\nscale_down_window = \"2s\"\nsubscription = { topic = \"jobs\", group = \"w\" }\n",
            BUS,
        )
        .unwrap();
        let spec = m.services[0].autoscale.clone().unwrap();
        assert_eq!((m.services[0].instances, spec.min, spec.max), (3, 1, 4));
        assert_eq!(spec.scale_down_window, Duration::from_secs(2));
    }

    #[test]
    fn every_mistake_is_reported_with_its_field_and_line() {
        let errors = parse(
            "instances = 9\n[services.worker.autoscale]\nmin = 3\nmax = 2\nscale_down_window = \"0s\"\nspeed = 1\nsubscription = { topic = \"nope\", group = \"Bad\" }\n",
            BUS,
        )
        .unwrap_err();
        let fields: Vec<(&str, usize)> =
            errors.iter().map(|e| (e.field.as_str(), e.line)).collect();
        assert_eq!(
            fields,
            [
                ("services.worker.autoscale.target_backlog", 7),
                ("services.worker.autoscale.min", 8),
                ("services.worker.autoscale.scale_down_window", 10),
                ("services.worker.autoscale.speed", 11),
                ("services.worker.autoscale.subscription.topic", 12),
                ("services.worker.autoscale.subscription.group", 12),
            ],
            "{errors:#?}"
        );
        assert!(errors[1].message.contains("must not be greater than max"));
        assert!(errors[4].message.contains("[bus] topics: jobs"));
    }

    #[test]
    fn instances_outside_min_max_and_a_zero_max_are_refused() {
        let errors = parse(
            "instances = 9\n[services.worker.autoscale]\nmax = 4\ntarget_backlog = 1\nsubscription = { topic = \"jobs\", group = \"w\" }\n",
            BUS,
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].field, "services.worker.instances");
        assert!(errors[0].message.contains("1..=4"), "{}", errors[0].message);

        let errors = parse(
            "[services.worker.autoscale]\nmin = 0\nmax = 0\ntarget_backlog = 1\nsubscription = { topic = \"jobs\", group = \"w\" }\n",
            BUS,
        )
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "services.worker.autoscale.min",
                "services.worker.autoscale.max"
            ]
        );
    }

    #[test]
    fn a_subscription_without_a_bus_topic_names_the_fix() {
        let errors = parse(
            "[services.worker.autoscale]\nmax = 2\ntarget_backlog = 1\nsubscription = { topic = \"jobs\" }\n",
            "",
        )
        .unwrap_err();
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 2, "{messages:#?}");
        assert!(
            messages.iter().all(|m| m.starts_with("mortar.toml:9:")),
            "{messages:#?}"
        );
        assert!(messages.iter().any(|m| m.contains("[bus] lists no topics")));
        assert!(
            messages
                .iter()
                .any(|m| m.contains("subscription.group: missing required key"))
        );
    }
}
