//! How mortar topics and groups map onto JetStream streams, subjects and
//! durable consumers.
//!
//! Topic and group names use `[a-z0-9._-]`; JetStream names may not contain
//! `.`. A `.` becomes `_D`, which no mortar name can contain (it has an
//! upper-case letter), so the mapping is one-to-one and readable in `nats`
//! tooling: topic `orders.dlq` is stream `MORTAR_orders_Ddlq`.

/// The prefix of every stream mortar creates, so they are easy to find.
const STREAM_PREFIX: &str = "MORTAR_";

/// The prefix of every subject mortar publishes on.
const SUBJECT_PREFIX: &str = "mortar.topic.";

fn escape(name: &str) -> String {
    name.replace('.', "_D")
}

/// The stream holding `topic`.
pub(crate) fn stream(topic: &str) -> String {
    format!("{STREAM_PREFIX}{}", escape(topic))
}

/// The one subject `topic`'s stream captures.
pub(crate) fn subject(topic: &str) -> String {
    format!("{SUBJECT_PREFIX}{topic}")
}

/// The durable consumer of `group`.
pub(crate) fn durable(group: &str) -> String {
    escape(group)
}

fn unescape(name: &str) -> String {
    name.replace("_D", ".")
}

/// The topic a stream holds, if it is one of mortar's.
pub(crate) fn topic_of_stream(stream: &str) -> Option<String> {
    stream.strip_prefix(STREAM_PREFIX).map(unescape)
}

/// The group a durable consumer serves.
pub(crate) fn group_of_durable(durable: &str) -> String {
    unescape(durable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_one_to_one_onto_valid_jetstream_names() {
        assert_eq!(stream("orders"), "MORTAR_orders");
        assert_eq!(stream("orders.dlq"), "MORTAR_orders_Ddlq");
        assert_ne!(stream("a.b"), stream("a_b"));
        assert_ne!(stream("a.b"), stream("a_Db".to_lowercase().as_str()));
        assert_eq!(subject("orders.dlq"), "mortar.topic.orders.dlq");
        assert_eq!(durable("billing.v2"), "billing_Dv2");
        assert!(!durable("a.b.c").contains('.'));
        assert_eq!(
            topic_of_stream(&stream("orders.dlq")).as_deref(),
            Some("orders.dlq")
        );
        assert_eq!(topic_of_stream("KV_config"), None);
        assert_eq!(group_of_durable(&durable("billing.v2")), "billing.v2");
    }
}
