//! The mortar bus wire protocol, shared by the broker's TCP server and the
//! client that services link.
//!
//! Why a crate of its own: the protocol is a contract between processes that
//! may be built at different times, so it lives apart from both ends, is
//! versioned ([`PROTOCOL_VERSION`]) and is specified in `PROTOCOL.md`.
//!
//! A frame is a big-endian `u32` length, a `u8` frame type and a body in a
//! hand-written binary encoding (no JSON on the hot path). [`Frame`] is the
//! typed view, [`BusCodec`] turns bytes into frames and back with a maximum
//! frame size, and [`ErrorCode`] names every error a peer can report.

mod codec;
pub mod dead_letter;
mod error_code;
mod frame;
mod message;
pub mod names;
mod wire;

pub use codec::{BATCH_FACTOR, BusCodec, CodecError, FRAME_OVERHEAD_BYTES, max_frame_bytes};
pub use error_code::ErrorCode;
pub use frame::{Frame, FrameType, Hello};
pub use message::{Message, NewMessage, counted_size};

/// The protocol version this crate speaks; a peer with another version is
/// refused in the handshake (see the versioning rule in `PROTOCOL.md`).
pub const PROTOCOL_VERSION: u16 = 1;

/// The four bytes that open every handshake, so that a peer speaking some
/// other protocol is recognised at once.
pub const MAGIC: [u8; 4] = *b"MRTR";

/// Bytes of a frame's header: the `u32` length and the `u8` type.
pub const HEADER_BYTES: usize = 5;
