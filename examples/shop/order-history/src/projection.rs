//! The "my orders" read model: one row per order with only what the page
//! shows, fed by ordering's events.
//!
//! Why every statement is an upsert guarded by the event's version: the bus
//! delivers at least once and, with concurrent handlers or redeliveries, not
//! necessarily in order. A status change that arrives before its
//! `OrderPlaced` still lands (the row is completed when `OrderPlaced`
//! comes), and an older status never overwrites a newer one — so the rows
//! end up the same whatever the delivery order, which is also why a rebuild
//! (replay in commit order) equals the live model.

use mortar_cqrs::eventstore::RecordedEvent;
use mortar_cqrs::{DomainEvent, Projection, Sql, decode_event};
use serde::Deserialize;

/// The projection's name: its checkpoint and inbox key, and the name
/// `mortar projections rebuild` takes.
pub(crate) const NAME: &str = "order-history";

/// The stream prefix of ordering's Order aggregate.
const STREAM_PREFIX: &str = "order-";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS order_history (
    order_id      TEXT PRIMARY KEY,
    customer      TEXT,
    status        TEXT   NOT NULL,
    total_cents   BIGINT,
    placed_at_ms  BIGINT,
    updated_at_ms BIGINT NOT NULL,
    version       BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS order_history_by_customer
    ON order_history (customer, placed_at_ms DESC, order_id DESC);
";

const PLACED: &str = "INSERT INTO order_history
    (order_id, customer, status, total_cents, placed_at_ms, updated_at_ms, version)
    VALUES ($1, $2, 'placed', $3, $4, $4, $5)
 ON CONFLICT (order_id) DO UPDATE SET
    customer = excluded.customer,
    total_cents = excluded.total_cents,
    placed_at_ms = excluded.placed_at_ms";

const TRANSITION: &str = "INSERT INTO order_history
    (order_id, status, updated_at_ms, version) VALUES ($1, $2, $3, $4)
 ON CONFLICT (order_id) DO UPDATE SET
    status = CASE WHEN excluded.version > order_history.version
                  THEN excluded.status ELSE order_history.status END,
    updated_at_ms = CASE WHEN excluded.version > order_history.version
                  THEN excluded.updated_at_ms ELSE order_history.updated_at_ms END,
    version = CASE WHEN excluded.version > order_history.version
                  THEN excluded.version ELSE order_history.version END";

/// A customer's orders, newest first.
pub(crate) const BY_CUSTOMER: &str =
    "SELECT order_id, status, total_cents, placed_at_ms, updated_at_ms
 FROM order_history WHERE customer = $1
 ORDER BY placed_at_ms DESC, order_id DESC LIMIT $2";

/// ordering's events as this consumer reads them: only the fields the page
/// needs, unknown fields ignored, so ordering can add to its events freely.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(tag = "type", content = "data")]
#[allow(clippy::enum_variant_names)] // the event types as ordering names them
enum OrderEvent {
    OrderPlaced { customer: String, total_cents: i64 },
    OrderPaid {},
    OrderCancelled {},
    OrderShipped {},
}

impl DomainEvent for OrderEvent {}

/// See the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OrderHistory;

impl Projection for OrderHistory {
    fn name(&self) -> &str {
        NAME
    }

    fn schema(&self) -> &str {
        SCHEMA
    }

    fn clear(&self) -> Vec<Sql> {
        vec![Sql::new("DELETE FROM order_history")]
    }

    fn handle(&self, event: &RecordedEvent) -> Result<Vec<Sql>, String> {
        let Some(order_id) = event.stream_id.strip_prefix(STREAM_PREFIX) else {
            return Ok(Vec::new());
        };
        let known = ["OrderPlaced", "OrderPaid", "OrderCancelled", "OrderShipped"];
        if !known.contains(&event.event_type.as_str()) {
            // A newer ordering may add event types; they do not change
            // what this page shows.
            return Ok(Vec::new());
        }
        let decoded: OrderEvent = decode_event(event)
            .map_err(|e| format!("{} {}: {e}", event.event_type, event.event_id()))?;
        let status = match decoded {
            OrderEvent::OrderPlaced {
                customer,
                total_cents,
            } => {
                return Ok(vec![
                    Sql::new(PLACED)
                        .bind(order_id)
                        .bind(customer)
                        .bind(total_cents)
                        .bind(event.recorded_at_ms)
                        .bind(event.version),
                ]);
            }
            OrderEvent::OrderPaid {} => "paid",
            OrderEvent::OrderCancelled {} => "cancelled",
            OrderEvent::OrderShipped {} => "shipped",
        };
        Ok(vec![
            Sql::new(TRANSITION)
                .bind(order_id)
                .bind(status)
                .bind(event.recorded_at_ms)
                .bind(event.version),
        ])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mortar_cqrs::eventstore::Metadata;
    use serde_json::json;

    fn event(stream: &str, version: i64, kind: &str, payload: serde_json::Value) -> RecordedEvent {
        RecordedEvent {
            position: version,
            stream_id: stream.into(),
            version,
            event_type: kind.into(),
            schema_version: 1,
            payload,
            metadata: Metadata::default(),
            recorded_at_ms: 1_000 + version,
        }
    }

    #[test]
    fn placed_binds_the_page_fields() {
        let e = event(
            "order-a1",
            1,
            "OrderPlaced",
            json!({"customer": "ann", "lines": [], "total_cents": 2580}),
        );
        let sql = OrderHistory.handle(&e).unwrap();
        assert_eq!(sql.len(), 1);
        assert_eq!(
            sql[0].params,
            vec![
                "a1".into(),
                "ann".into(),
                2580.into(),
                1001.into(),
                1.into()
            ]
        );
    }

    #[test]
    fn other_streams_and_unknown_types_are_ignored_but_malformed_known_ones_are_not() {
        let other = event("payment-1", 1, "OrderPaid", json!({}));
        assert!(OrderHistory.handle(&other).unwrap().is_empty());
        let unknown = event("order-1", 2, "OrderGiftWrapped", json!({}));
        assert!(OrderHistory.handle(&unknown).unwrap().is_empty());
        let broken = event("order-1", 1, "OrderPlaced", json!({"customer": 7}));
        assert!(OrderHistory.handle(&broken).is_err());
        let paid = event("order-1", 2, "OrderPaid", json!({"amount_cents": 5}));
        assert_eq!(
            OrderHistory.handle(&paid).unwrap()[0].params[1],
            "paid".into()
        );
    }
}
