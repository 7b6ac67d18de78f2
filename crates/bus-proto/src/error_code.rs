//! The error codes an `Error` frame carries.

/// What went wrong, as a number a program can act on; the frame's message
/// says the same for a human. Unknown codes decode as [`ErrorCode::Other`]
/// so that a newer peer's codes never break an older one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The first frame was not a valid `Hello`.
    BadHandshake,
    /// The peer speaks a protocol version this side does not.
    UnsupportedVersion,
    /// The credentials were refused.
    Unauthorized,
    /// A frame could not be decoded; the connection is closed.
    MalformedFrame,
    /// A frame was larger than the maximum frame size; the connection is closed.
    FrameTooLarge,
    /// The topic does not exist.
    UnknownTopic,
    /// A message is larger than the broker's `max_message_bytes`.
    MessageTooLarge,
    /// A topic, group or consumer name is not acceptable.
    InvalidName,
    /// A frame named a subscription this connection does not have.
    UnknownSubscription,
    /// The request is well-formed but not acceptable (e.g. a duplicate `sub_id`).
    InvalidRequest,
    /// The broker is shutting down or cannot serve right now; retry later.
    Unavailable,
    /// The broker failed; the message says why without leaking internals.
    Internal,
    /// A code this version does not know.
    Other(u16),
}

impl ErrorCode {
    /// The number on the wire.
    pub fn as_u16(self) -> u16 {
        match self {
            ErrorCode::BadHandshake => 1,
            ErrorCode::UnsupportedVersion => 2,
            ErrorCode::Unauthorized => 3,
            ErrorCode::MalformedFrame => 4,
            ErrorCode::FrameTooLarge => 5,
            ErrorCode::UnknownTopic => 10,
            ErrorCode::MessageTooLarge => 11,
            ErrorCode::InvalidName => 12,
            ErrorCode::UnknownSubscription => 13,
            ErrorCode::InvalidRequest => 14,
            ErrorCode::Unavailable => 50,
            ErrorCode::Internal => 51,
            ErrorCode::Other(n) => n,
        }
    }

    /// The code for a number from the wire.
    pub fn from_u16(n: u16) -> Self {
        match n {
            1 => ErrorCode::BadHandshake,
            2 => ErrorCode::UnsupportedVersion,
            3 => ErrorCode::Unauthorized,
            4 => ErrorCode::MalformedFrame,
            5 => ErrorCode::FrameTooLarge,
            10 => ErrorCode::UnknownTopic,
            11 => ErrorCode::MessageTooLarge,
            12 => ErrorCode::InvalidName,
            13 => ErrorCode::UnknownSubscription,
            14 => ErrorCode::InvalidRequest,
            50 => ErrorCode::Unavailable,
            51 => ErrorCode::Internal,
            other => ErrorCode::Other(other),
        }
    }

    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorCode::Unavailable | ErrorCode::Internal)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            ErrorCode::BadHandshake => "bad_handshake",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::UnknownTopic => "unknown_topic",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::UnknownSubscription => "unknown_subscription",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Other(n) => return write!(f, "error_{n}"),
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for n in 0..=u16::MAX {
            assert_eq!(ErrorCode::from_u16(n).as_u16(), n);
        }
    }
}
