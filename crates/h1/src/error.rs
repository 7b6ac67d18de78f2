//! What can be wrong with a message on the wire.

/// A message that cannot be framed. Each says what was wrong, since a
/// proxy answers it to the client (or logs it for an upstream).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum H1Error {
    /// The head is not valid HTTP/1.x.
    #[error("malformed HTTP/1 head: {0}")]
    Malformed(String),
    /// The head is larger than [`MAX_HEAD_BYTES`](crate::MAX_HEAD_BYTES) or
    /// has more than [`MAX_HEADERS`](crate::MAX_HEADERS) fields.
    #[error(
        "request head too large: at most {max_bytes} bytes and {max_headers} header fields are accepted"
    )]
    HeadTooLarge {
        /// The byte limit.
        max_bytes: usize,
        /// The field limit.
        max_headers: usize,
    },
    /// `Content-Length` is not one non-negative decimal number.
    #[error("invalid Content-Length `{0}`: send one decimal byte count")]
    InvalidContentLength(String),
    /// Both `Transfer-Encoding` and `Content-Length` were sent: a message
    /// two parsers could frame differently (request smuggling), refused.
    #[error("both Transfer-Encoding and Content-Length sent; send only one")]
    LengthAndChunked,
    /// A transfer coding other than `chunked`.
    #[error("unsupported Transfer-Encoding `{0}`: only `chunked` is accepted")]
    UnsupportedTransferEncoding(String),
    /// An `Expect` other than `100-continue`.
    #[error("unsupported Expect `{0}`: only `100-continue` is accepted")]
    UnsupportedExpectation(String),
    /// The chunked body's framing is broken.
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
}
