//! Serves a [`mortar_bus::Broker`] to other processes, and NATS JetStream
//! behind the same HTTP API ([`JetStreamBackend`]).
//!
//! Why a crate apart from the broker: the broker is a library any process can
//! embed; this crate is what makes it a *network* service — the framed TCP
//! protocol of `mortar-bus-proto` ([`serve`]), an HTTP/JSON API for languages
//! without a native client ([`http_router`], [`openapi`]), and the one call the
//! node makes to run it all ([`run_embedded`]); the same HTTP API alone over
//! JetStream where there is no node ([`Bridge`], `mortar bus http`). A
//! [`Gate`] lets the node close the bus to everyone or to one service for a
//! while (fault injection).

mod backend;
mod bridge;
mod connection;
mod convert;
mod embedded;
mod gate;
pub mod http;
mod serve;
mod subscription;

pub use backend::{BusBackend, JetStreamBackend};
pub use bridge::Bridge;
pub use embedded::{
    EmbeddedBus, ServerError, run_embedded, run_embedded_with, run_embedded_with_auth,
};
pub use gate::{Closed, Gate, Identify, Refusal, http_middleware};
pub use http::{http_router, openapi};
pub use serve::{ServerOptions, TokenCheck, serve, serve_with};
