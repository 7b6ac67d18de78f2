//! The Order aggregate: the rules of an order's life.
//!
//! placed → paid → shipped, or cancelled before shipping. No shipping an
//! unpaid order, no paying a cancelled one, no paying the wrong amount.

use mortar_cqrs::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Line {
    pub(crate) sku: String,
    pub(crate) quantity: u32,
    pub(crate) unit_price_cents: i64,
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    #[default]
    New,
    Placed,
    Paid,
    Cancelled,
    Shipped,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Placed => "placed",
            Status::Paid => "paid",
            Status::Cancelled => "cancelled",
            Status::Shipped => "shipped",
        }
    }
}

/// The state the rules need (and a little the API shows).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Order {
    pub(crate) status: Status,
    pub(crate) customer: String,
    pub(crate) total_cents: i64,
    pub(crate) lines: u32,
}

/// What a client asks of an order.
#[derive(Debug, Clone)]
pub(crate) enum Command {
    Place { customer: String, lines: Vec<Line> },
    Pay { amount_cents: i64 },
    Cancel { reason: String },
    Ship { carrier: String },
}

/// What happened to an order (stored, published on `orders`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
#[allow(clippy::enum_variant_names)] // the stored event types read OrderPlaced, OrderPaid, …
pub(crate) enum Event {
    OrderPlaced {
        customer: String,
        lines: Vec<Line>,
        total_cents: i64,
    },
    OrderPaid {
        amount_cents: i64,
    },
    OrderCancelled {
        reason: String,
    },
    OrderShipped {
        carrier: String,
    },
}

impl DomainEvent for Event {}

/// Why an order refused a command.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum OrderError {
    #[error("the order does not exist")]
    NotFound,
    #[error("the order was already placed")]
    AlreadyPlaced,
    #[error("{0}")]
    Invalid(String),
    #[error("the payment of {paid} cents does not match the order total of {total} cents")]
    WrongAmount { paid: i64, total: i64 },
    #[error("a {0} order cannot be paid")]
    NotPayable(&'static str),
    #[error("a {0} order cannot be cancelled")]
    NotCancellable(&'static str),
    #[error("a {0} order cannot be shipped; only paid orders ship")]
    NotShippable(&'static str),
}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    type Command = Command;
    type Event = Event;
    type Error = OrderError;

    fn decide(&self, command: &Command) -> Result<Vec<Event>, OrderError> {
        let status = self.status;
        if status == Status::New && !matches!(command, Command::Place { .. }) {
            return Err(OrderError::NotFound);
        }
        match command {
            Command::Place { customer, lines } => {
                if status != Status::New {
                    return Err(OrderError::AlreadyPlaced);
                }
                if customer.trim().is_empty() {
                    return Err(OrderError::Invalid("customer must not be empty".into()));
                }
                if lines.is_empty() || lines.len() > 100 {
                    return Err(OrderError::Invalid("an order has 1 to 100 lines".into()));
                }
                let mut total: i64 = 0;
                for line in lines {
                    if line.quantity == 0 || line.unit_price_cents <= 0 || line.sku.is_empty() {
                        return Err(OrderError::Invalid(format!(
                            "line {:?}: sku must be set, quantity and price positive",
                            line.sku
                        )));
                    }
                    total = line
                        .unit_price_cents
                        .checked_mul(i64::from(line.quantity))
                        .and_then(|t| total.checked_add(t))
                        .ok_or_else(|| OrderError::Invalid("the total is too large".into()))?;
                }
                Ok(vec![Event::OrderPlaced {
                    customer: customer.clone(),
                    lines: lines.clone(),
                    total_cents: total,
                }])
            }
            Command::Pay { amount_cents } => match status {
                Status::Placed if *amount_cents == self.total_cents => Ok(vec![Event::OrderPaid {
                    amount_cents: *amount_cents,
                }]),
                Status::Placed => Err(OrderError::WrongAmount {
                    paid: *amount_cents,
                    total: self.total_cents,
                }),
                other => Err(OrderError::NotPayable(other.as_str())),
            },
            Command::Cancel { reason } => match status {
                Status::Placed | Status::Paid => Ok(vec![Event::OrderCancelled {
                    reason: reason.clone(),
                }]),
                other => Err(OrderError::NotCancellable(other.as_str())),
            },
            Command::Ship { carrier } => match status {
                Status::Paid => Ok(vec![Event::OrderShipped {
                    carrier: carrier.clone(),
                }]),
                other => Err(OrderError::NotShippable(other.as_str())),
            },
        }
    }

    fn apply(&mut self, event: &Event) {
        match event {
            Event::OrderPlaced {
                customer,
                lines,
                total_cents,
            } => {
                self.status = Status::Placed;
                self.customer = customer.clone();
                self.total_cents = *total_cents;
                self.lines = lines.len() as u32;
            }
            Event::OrderPaid { .. } => self.status = Status::Paid,
            Event::OrderCancelled { .. } => self.status = Status::Cancelled,
            Event::OrderShipped { .. } => self.status = Status::Shipped,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn run(commands: &[Command]) -> Result<Order, OrderError> {
        let mut order = Order::default();
        for c in commands {
            for e in order.decide(c)? {
                order.apply(&e);
            }
        }
        Ok(order)
    }

    fn place() -> Command {
        Command::Place {
            customer: "ann".into(),
            lines: vec![Line {
                sku: "MUG-001".into(),
                quantity: 2,
                unit_price_cents: 1290,
            }],
        }
    }

    #[test]
    fn the_happy_path() {
        let o = run(&[
            place(),
            Command::Pay { amount_cents: 2580 },
            Command::Ship {
                carrier: "post".into(),
            },
        ])
        .unwrap();
        assert_eq!((o.status, o.total_cents), (Status::Shipped, 2580));
    }

    #[test]
    fn no_shipping_an_unpaid_order() {
        let err = run(&[
            place(),
            Command::Ship {
                carrier: "x".into(),
            },
        ])
        .unwrap_err();
        assert_eq!(err, OrderError::NotShippable("placed"));
    }

    #[test]
    fn no_paying_a_cancelled_order() {
        let err = run(&[
            place(),
            Command::Cancel { reason: "r".into() },
            Command::Pay { amount_cents: 2580 },
        ])
        .unwrap_err();
        assert_eq!(err, OrderError::NotPayable("cancelled"));
    }

    #[test]
    fn other_rules() {
        assert_eq!(
            run(&[Command::Pay { amount_cents: 1 }]).unwrap_err(),
            OrderError::NotFound
        );
        assert_eq!(
            run(&[place(), place()]).unwrap_err(),
            OrderError::AlreadyPlaced
        );
        assert!(matches!(
            run(&[place(), Command::Pay { amount_cents: 1 }]).unwrap_err(),
            OrderError::WrongAmount { .. }
        ));
        let shipped = [
            place(),
            Command::Pay { amount_cents: 2580 },
            Command::Ship {
                carrier: "x".into(),
            },
            Command::Cancel {
                reason: "late".into(),
            },
        ];
        assert_eq!(
            run(&shipped).unwrap_err(),
            OrderError::NotCancellable("shipped")
        );
        let empty = Command::Place {
            customer: "ann".into(),
            lines: vec![],
        };
        assert!(matches!(run(&[empty]).unwrap_err(), OrderError::Invalid(_)));
    }
}
