//! The tokio codec: bytes on a socket ⇄ [`Frame`]s, with a maximum frame size.
//!
//! The size limit is checked on the length prefix, before the body is
//! buffered, so a peer cannot make the other side allocate more than the limit.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::HEADER_BYTES;
use crate::frame::Frame;

/// How many maximum-size messages one frame may carry.
pub const BATCH_FACTOR: usize = 16;

/// Room in a frame for everything that is not payload (ids, keys, headers).
pub const FRAME_OVERHEAD_BYTES: usize = 1024 * 1024;

/// The maximum frame size for a broker that accepts messages of up to
/// `max_message_bytes`: a batch of [`BATCH_FACTOR`] such messages plus
/// [`FRAME_OVERHEAD_BYTES`].
pub fn max_frame_bytes(max_message_bytes: usize) -> usize {
    max_message_bytes
        .saturating_mul(BATCH_FACTOR)
        .saturating_add(FRAME_OVERHEAD_BYTES)
        .min(u32::MAX as usize)
}

/// Why bytes could not become a frame, or a frame bytes.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The socket failed.
    #[error("connection I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The length prefix announces more than the limit; the connection must close.
    #[error("frame of {len} bytes exceeds the maximum frame size of {max} bytes")]
    FrameTooLarge {
        /// The announced (or encoded) length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a valid frame; the connection must close.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A frame to send has a field too long for its length prefix.
    #[error("cannot encode frame: {0}")]
    Unencodable(String),
}

/// Encodes and decodes [`Frame`]s: `u32` big-endian length (type byte plus
/// body), `u8` frame type, body.
#[derive(Debug, Clone)]
pub struct BusCodec {
    max_frame_bytes: usize,
}

impl BusCodec {
    /// A codec that refuses frames longer than `max_frame_bytes`
    /// (counting the type byte and body, not the 4-byte length).
    pub fn new(max_frame_bytes: usize) -> Self {
        BusCodec { max_frame_bytes }
    }

    /// The limit this codec enforces.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Changes the limit, e.g. once the handshake told the broker's.
    pub fn set_max_frame_bytes(&mut self, max: usize) {
        self.max_frame_bytes = max;
    }
}

impl Decoder for BusCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len == 0 {
            return Err(CodecError::Malformed(
                "frame length 0: a frame has at least its type byte".to_owned(),
            ));
        }
        if len > self.max_frame_bytes {
            return Err(CodecError::FrameTooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        src.advance(4);
        let mut frame = src.split_to(len);
        let type_byte = frame.get_u8();
        Frame::decode_body(type_byte, frame.freeze()).map(Some)
    }
}

impl Encoder<Frame> for BusCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode(&frame, dst)
    }
}

impl Encoder<&Frame> for BusCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        let start = dst.len();
        dst.reserve(HEADER_BYTES);
        dst.put_u32(0);
        dst.put_u8(frame.frame_type() as u8);
        if let Err(e) = frame.encode_body(dst) {
            dst.truncate(start);
            return Err(e);
        }
        let len = dst.len() - start - 4;
        if len > self.max_frame_bytes {
            dst.truncate(start);
            return Err(CodecError::FrameTooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        let prefix = u32::try_from(len).map_err(|_| CodecError::FrameTooLarge {
            len,
            max: self.max_frame_bytes,
        })?;
        dst[start..start + 4].copy_from_slice(&prefix.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, Hello, Message, NewMessage};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn round_trip(frame: &Frame) -> Frame {
        let mut codec = BusCodec::new(usize::MAX >> 1);
        let mut buf = BytesMut::new();
        codec.encode(frame, &mut buf).unwrap();
        let out = codec.decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty(), "the frame consumed exactly its bytes");
        out
    }

    fn arb_string() -> impl Strategy<Value = String> {
        ".{0,12}"
    }

    fn arb_headers() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::vec((arb_string(), arb_string()), 0..4)
    }

    fn arb_payload() -> impl Strategy<Value = Bytes> {
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
    }

    fn arb_new_message() -> impl Strategy<Value = NewMessage> {
        (prop::option::of(arb_string()), arb_headers(), arb_payload()).prop_map(
            |(key, headers, payload)| NewMessage {
                key,
                headers,
                payload,
            },
        )
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        (
            any::<u64>(),
            arb_string(),
            prop::option::of(arb_string()),
            arb_headers(),
            arb_payload(),
            any::<u64>(),
            any::<u32>(),
        )
            .prop_map(
                |(id, topic, key, headers, payload, publish_time_ms, attempt)| Message {
                    id,
                    topic,
                    key,
                    headers,
                    payload,
                    publish_time_ms,
                    attempt,
                },
            )
    }

    fn arb_ids() -> impl Strategy<Value = Vec<u64>> {
        prop::collection::vec(any::<u64>(), 0..8)
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>(), arb_string(), arb_string()).prop_map(
                |(magic, version, client_name, token)| Frame::Hello(Hello {
                    magic,
                    version,
                    client_name,
                    token
                })
            ),
            (any::<u16>(), any::<u32>()).prop_map(|(version, max_message_bytes)| {
                Frame::HelloOk {
                    version,
                    max_message_bytes,
                }
            }),
            (any::<u64>(), any::<u16>(), arb_string()).prop_map(|(request_id, code, message)| {
                Frame::Error {
                    request_id,
                    code: ErrorCode::from_u16(code),
                    message,
                }
            }),
            (
                any::<u64>(),
                arb_string(),
                prop::collection::vec(arb_new_message(), 0..4)
            )
                .prop_map(|(request_id, topic, messages)| Frame::Publish {
                    request_id,
                    topic,
                    messages
                }),
            (any::<u64>(), arb_ids())
                .prop_map(|(request_id, ids)| Frame::PublishOk { request_id, ids }),
            (any::<u64>(), arb_string(), arb_string(), any::<u32>()).prop_map(
                |(sub_id, topic, group, credits)| Frame::Subscribe {
                    sub_id,
                    topic,
                    group,
                    credits
                }
            ),
            any::<u64>().prop_map(|sub_id| Frame::SubscribeOk { sub_id }),
            (any::<u64>(), arb_string())
                .prop_map(|(request_id, topic)| Frame::CreateTopic { request_id, topic }),
            any::<u64>().prop_map(|request_id| Frame::CreateTopicOk { request_id }),
            (any::<u64>(), prop::collection::vec(arb_message(), 0..4))
                .prop_map(|(sub_id, messages)| Frame::Deliver { sub_id, messages }),
            (any::<u64>(), any::<u32>()).prop_map(|(sub_id, n)| Frame::Credit { sub_id, n }),
            (any::<u64>(), arb_ids()).prop_map(|(sub_id, ids)| Frame::Ack { sub_id, ids }),
            (any::<u64>(), arb_ids(), any::<u64>(), arb_string()).prop_map(
                |(sub_id, ids, delay_ms, reason)| Frame::Nack {
                    sub_id,
                    ids,
                    delay_ms,
                    reason
                }
            ),
            any::<u64>().prop_map(|sub_id| Frame::Unsubscribe { sub_id }),
            any::<u64>().prop_map(|sub_id| Frame::Drain { sub_id }),
            any::<u64>().prop_map(|sub_id| Frame::Drained { sub_id }),
            any::<u64>().prop_map(|nonce| Frame::Ping { nonce }),
            any::<u64>().prop_map(|nonce| Frame::Pong { nonce }),
        ]
    }

    proptest! {
        #[test]
        fn every_frame_round_trips(frame in arb_frame()) {
            prop_assert_eq!(round_trip(&frame), frame);
        }

        #[test]
        fn frames_round_trip_when_split_at_any_byte(frames in prop::collection::vec(arb_frame(), 1..4), cut in any::<prop::sample::Index>()) {
            let mut codec = BusCodec::new(1 << 20);
            let mut wire = BytesMut::new();
            for f in &frames {
                codec.encode(f, &mut wire).unwrap();
            }
            let cut = cut.index(wire.len() + 1);
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut out = Vec::new();
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f);
            }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f);
            }
            prop_assert_eq!(out, frames);
        }

        #[test]
        fn decoding_random_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut codec = BusCodec::new(4096);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
        }

        #[test]
        fn decoding_random_bodies_never_panics(kind in any::<u8>(), body in prop::collection::vec(any::<u8>(), 0..256)) {
            let mut codec = BusCodec::new(4096);
            let mut buf = BytesMut::new();
            buf.put_u32(body.len() as u32 + 1);
            buf.put_u8(kind);
            buf.put_slice(&body);
            let _ = codec.decode(&mut buf);
        }
    }

    #[test]
    fn oversize_length_is_refused_before_the_body_arrives() {
        let mut codec = BusCodec::new(100);
        let mut buf = BytesMut::new();
        buf.put_u32(101);
        match codec.decode(&mut buf) {
            Err(CodecError::FrameTooLarge { len: 101, max: 100 }) => {}
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
    }

    #[test]
    fn encoding_an_oversize_frame_fails_and_writes_nothing() {
        let mut codec = BusCodec::new(64);
        let mut buf = BytesMut::new();
        let frame = Frame::Publish {
            request_id: 1,
            topic: "t".into(),
            messages: vec![NewMessage::new(vec![0u8; 100])],
        };
        assert!(matches!(
            codec.encode(&frame, &mut buf),
            Err(CodecError::FrameTooLarge { .. })
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn unknown_type_and_trailing_bytes_are_malformed() {
        let mut codec = BusCodec::new(64);
        let mut buf = BytesMut::from(&[0, 0, 0, 1, 0x7f][..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(err.to_string().contains("unknown frame type 0x7f"), "{err}");

        let mut buf = BytesMut::from(&[0, 0, 0, 10, 0x30, 0, 0, 0, 0, 0, 0, 0, 1, 9][..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(err.to_string().contains("trailing"), "{err}");
    }

    #[test]
    fn forged_list_count_does_not_allocate() {
        let mut codec = BusCodec::new(64);
        // PublishOk with request id and a count of 2^32-1 ids but no ids.
        let mut buf = BytesMut::new();
        buf.put_u32(1 + 8 + 4);
        buf.put_u8(0x11);
        buf.put_u64(7);
        buf.put_u32(u32::MAX);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    }
}
