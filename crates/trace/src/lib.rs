//! W3C trace context (`traceparent`), carried through every hop so one
//! order can be followed across services by grepping one id.
//!
//! - [`TraceContext`]: parse an incoming header, start a trace, continue
//!   one with a new span id ([`TraceContext::child`]).
//! - [`scope`] / [`current`]: the context of the request or message being
//!   handled, as a task-local, so the resilient client and the bus client
//!   put it on outgoing calls and publishes without the handler passing it.
//! - [`span`]: a tracing span whose `trace_id` field the SDK's JSON logger
//!   writes on every line logged inside it.

mod context;
mod current;

pub use context::{TRACEPARENT, TraceContext};
pub use current::{current, outgoing, scope, span};
