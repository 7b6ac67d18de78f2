//! HTTP/1.1 framing for mortar's forwarding path.
//!
//! The gateway forwards every request it serves, so the HTTP layer is most
//! of its cost. hyper's server and client are general machines (a dispatch
//! task and channels on the client side, a state machine per connection on
//! both); a proxy that reads a whole head, forwards it and streams the
//! answer back needs only the framing rules. This crate has those rules and
//! nothing else — no I/O: heads are parsed by `httparse` into `http`'s
//! types (a response's fields are kept as they arrived, [`Fields`], since a
//! proxy mostly passes them on), bodies are delimited by length or decoded from chunks, and heads
//! are encoded into a buffer the caller writes. docs/benchmarks.md has the
//! CPU per request it saved against hyper.

mod chunked;
mod date;
mod encode;
mod error;
mod fields;
mod head;

pub use chunked::{ChunkedDecoder, Decoded, LAST_CHUNK, encode_chunk};
pub use encode::{ResponseFraming, encode_request_head, encode_response_head};
pub use error::H1Error;
pub use fields::{Fields, map_fields};
pub use head::{
    BodyLength, MAX_HEAD_BYTES, MAX_HEADERS, RequestHead, ResponseHead, parse_request,
    parse_response,
};
