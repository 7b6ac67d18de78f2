//! The `[bus]` table: topics and delivery settings of the embedded broker.

use std::collections::BTreeSet;

use crate::model::{BusDelivery, BusSpec, DEFAULT_MAX_MESSAGE_BYTES};
use crate::reader::{Reader, Value, child};

const BUS_KEYS: &[&str] = &[
    "topics",
    "ack_deadline",
    "max_deliveries",
    "max_message_bytes",
    "retention",
    "delivery",
];
const TOPIC_RULE: &str = "1-120 characters of a-z, 0-9, '.', '_' and '-', not ending in .dlq";

fn is_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 120
        && !name.ends_with(".dlq")
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// Reads `[bus]`.
pub(crate) fn read_bus(r: &mut Reader<'_>, value: &Value<'_>) -> Option<BusSpec> {
    let table = r.table(value, "bus")?;
    r.unknown_keys(table, "bus", BUS_KEYS);
    let defaults = BusSpec::default();
    let topics = match table.get("topics") {
        None => Some(Vec::new()),
        Some(v) => {
            let items = r.string_array(v, "bus.topics", false)?;
            let mut seen = BTreeSet::new();
            let mut ok = true;
            for (i, item) in items.iter().enumerate() {
                let field = format!("bus.topics[{i}]");
                let name = item.get_ref();
                if !is_topic_name(name) {
                    r.error(
                        item.span(),
                        &field,
                        format!("expected a topic name of {TOPIC_RULE}, found {name:?}"),
                    );
                    ok = false;
                } else if !seen.insert(name.clone()) {
                    r.error(
                        item.span(),
                        &field,
                        format!("topic {name:?} is listed twice"),
                    );
                    ok = false;
                }
            }
            ok.then(|| items.into_iter().map(|s| s.into_inner()).collect())
        }
    };
    let ack_deadline = match table.get("ack_deadline") {
        None => Some(defaults.ack_deadline),
        Some(v) => r.duration(
            v,
            &child("bus", "ack_deadline"),
            Some(std::time::Duration::from_secs(12 * 3600)),
        ),
    };
    let retention = match table.get("retention") {
        None => Some(defaults.retention),
        Some(v) => r.duration(
            v,
            &child("bus", "retention"),
            Some(std::time::Duration::from_secs(3650 * 24 * 3600)),
        ),
    };
    let max_deliveries = match table.get("max_deliveries") {
        None => Some(defaults.max_deliveries),
        Some(v) => r.integer(v, &child("bus", "max_deliveries"), 1..=1000),
    };
    let max_message_bytes = match table.get("max_message_bytes") {
        None => Some(DEFAULT_MAX_MESSAGE_BYTES),
        Some(v) => r.integer(v, &child("bus", "max_message_bytes"), 1024..=(64 << 20)),
    };
    let delivery = match table.get("delivery") {
        None => Some(defaults.delivery),
        Some(v) => {
            const EXPECTED: &str = r#""written" or "synced""#;
            let text = r.string(v, &child("bus", "delivery"), EXPECTED)?;
            let delivery = BusDelivery::parse(text);
            if delivery.is_none() {
                r.error(
                    v.span(),
                    &child("bus", "delivery"),
                    format!("expected {EXPECTED}, found {text:?}"),
                );
            }
            delivery
        }
    };
    Some(BusSpec {
        topics: topics?,
        delivery: delivery?,
        ack_deadline: ack_deadline?,
        max_deliveries: max_deliveries?,
        max_message_bytes: max_message_bytes?,
        retention: retention?,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::Manifest;

    const HEAD: &str = "[app]\nname = \"shop\"\n\n[services.catalog]\ncommand = [\"x\"]\n\n";

    #[test]
    fn bus_settings_are_read_with_defaults() {
        let src = format!(
            "{HEAD}[bus]\ntopics = [\"orders\", \"order.events\"]\nack_deadline = \"5s\"\n"
        );
        let m = Manifest::parse(&src, Path::new("mortar.toml")).unwrap();
        assert_eq!(m.bus.topics, ["orders", "order.events"]);
        assert_eq!(m.bus.ack_deadline, Duration::from_secs(5));
        assert_eq!(m.bus.max_deliveries, crate::DEFAULT_MAX_DELIVERIES);
        assert_eq!(m.bus.delivery, crate::BusDelivery::Written);
        let synced = format!("{HEAD}[bus]\ndelivery = \"synced\"\n");
        let m = Manifest::parse(&synced, Path::new("mortar.toml")).unwrap();
        assert_eq!(m.bus.delivery, crate::BusDelivery::Synced);
    }

    #[test]
    fn bad_bus_settings_are_reported_each_with_its_line() {
        let src = format!(
            "{HEAD}[bus]\ntopics = [\"Orders\", \"a\", \"a\", \"x.dlq\"]\nmax_deliveries = 0\nmax_message_bytes = 10\nspeed = 1\ndelivery = \"fsynced\"\n"
        );
        let errors = Manifest::parse(&src, Path::new("mortar.toml"))
            .unwrap_err()
            .errors;
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "bus.topics[0]",
                "bus.topics[2]",
                "bus.topics[3]",
                "bus.max_deliveries",
                "bus.max_message_bytes",
                "bus.speed",
                "bus.delivery"
            ]
        );
        assert!(errors.iter().all(|e| e.line >= 7));
        let delivery = errors.iter().find(|e| e.field == "bus.delivery").unwrap();
        assert!(
            delivery.message.contains("\"written\" or \"synced\"")
                && delivery.message.contains("\"fsynced\""),
            "{}",
            delivery.message
        );
    }
}
