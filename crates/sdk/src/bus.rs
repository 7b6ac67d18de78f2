//! The message bus, as a service uses it: publish (durable on return, or
//! buffered in this instance's outbox while the bus is away) and subscribe
//! with a handler. See [`crate::Context::bus`].

pub use mortar_bus_client::{
    BUS_URL_ENV, Client, ClientConfig, ClientError, Message, NewMessage, Published, Subscription,
};
