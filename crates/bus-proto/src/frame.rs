//! Every frame of the protocol, and how each body is laid out.
//!
//! The layout of each body is specified in `PROTOCOL.md`; the order of the
//! fields in the encoders below is that specification.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::CodecError;
use crate::error_code::ErrorCode;
use crate::message::{Message, NewMessage};
use crate::wire::{Reader, put_count, put_ids, put_message, put_new_message, put_string};

/// The handshake a client sends first on every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Must be [`crate::MAGIC`].
    pub magic: [u8; 4],
    /// The protocol version the client speaks.
    pub version: u16,
    /// Who is connecting, for logs and consumer names.
    pub client_name: String,
    /// A bearer token issued by the node; a node's embedded broker refuses
    /// a `Hello` without a valid one (`Unauthorized`).
    pub token: String,
}

impl Hello {
    /// A hello with the current magic and version.
    pub fn new(client_name: impl Into<String>, token: impl Into<String>) -> Self {
        Hello {
            magic: crate::MAGIC,
            version: crate::PROTOCOL_VERSION,
            client_name: client_name.into(),
            token: token.into(),
        }
    }
}

/// One frame of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client → server, first frame: who is speaking which version.
    Hello(Hello),
    /// Server → client: handshake accepted.
    HelloOk {
        /// The version the server will speak.
        version: u16,
        /// The largest payload the broker accepts per message.
        max_message_bytes: u32,
    },
    /// Either way: a request failed (or, with `request_id` 0, the connection).
    Error {
        /// The `request_id` or `sub_id` the error answers; 0 for the connection.
        request_id: u64,
        /// What went wrong, for programs.
        code: ErrorCode,
        /// What went wrong and how to fix it, for humans.
        message: String,
    },
    /// Client → server: append messages to a topic.
    Publish {
        /// Chosen by the client; echoed in the answer.
        request_id: u64,
        /// The topic to append to.
        topic: String,
        /// The batch, stored atomically and in order.
        messages: Vec<NewMessage>,
    },
    /// Server → client: the batch is durable (fsynced); its ids in order.
    PublishOk {
        /// The request this answers.
        request_id: u64,
        /// One id per published message, in order.
        ids: Vec<u64>,
    },
    /// Client → server: create a topic (and its `.dlq`); idempotent.
    CreateTopic {
        /// Chosen by the client; echoed in the answer.
        request_id: u64,
        /// The topic to create.
        topic: String,
    },
    /// Server → client: the topic exists.
    CreateTopicOk {
        /// The request this answers.
        request_id: u64,
    },
    /// Client → server: start receiving a topic as a member of a group.
    Subscribe {
        /// Chosen by the client, unique on the connection.
        sub_id: u64,
        /// The topic to consume.
        topic: String,
        /// The consumer group; members share the work.
        group: String,
        /// How many un-acked messages the server may send at first.
        credits: u32,
    },
    /// Server → client: the subscription is active.
    SubscribeOk {
        /// The subscription now active.
        sub_id: u64,
    },
    /// Server → client: messages for a subscription (each uses one credit).
    Deliver {
        /// The subscription they belong to.
        sub_id: u64,
        /// The messages, oldest first.
        messages: Vec<Message>,
    },
    /// Client → server: allow `n` more messages on a subscription.
    Credit {
        /// The subscription.
        sub_id: u64,
        /// How many more messages the client can take.
        n: u32,
    },
    /// Client → server: these messages are processed.
    Ack {
        /// The subscription they were delivered on.
        sub_id: u64,
        /// Their ids.
        ids: Vec<u64>,
    },
    /// Client → server: these messages failed; redeliver later.
    Nack {
        /// The subscription they were delivered on.
        sub_id: u64,
        /// Their ids.
        ids: Vec<u64>,
        /// Delay before redelivery in ms; 0 = the broker's backoff.
        delay_ms: u64,
        /// Why, kept with dead letters.
        reason: String,
    },
    /// Client → server: stop a subscription; its un-acked messages go back
    /// to the group at once.
    Unsubscribe {
        /// The subscription to stop.
        sub_id: u64,
    },
    /// Client → server: send nothing more on this subscription (scale-in,
    /// shutdown); the client finishes and acks what it holds. Answered by
    /// `Drained` once the last `Deliver` for it has been sent.
    Drain {
        /// The subscription to drain.
        sub_id: u64,
    },
    /// Server → client: no `Deliver` follows for this subscription; every
    /// message it will get has arrived.
    Drained {
        /// The subscription drained.
        sub_id: u64,
    },
    /// Either way: are you there?
    Ping {
        /// Echoed in the pong.
        nonce: u64,
    },
    /// Either way: yes.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
}

/// The type byte of each frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// [`Frame::Hello`]
    Hello = 0x01,
    /// [`Frame::HelloOk`]
    HelloOk = 0x02,
    /// [`Frame::Error`]
    Error = 0x03,
    /// [`Frame::Publish`]
    Publish = 0x10,
    /// [`Frame::PublishOk`]
    PublishOk = 0x11,
    /// [`Frame::CreateTopic`]
    CreateTopic = 0x12,
    /// [`Frame::CreateTopicOk`]
    CreateTopicOk = 0x13,
    /// [`Frame::Subscribe`]
    Subscribe = 0x20,
    /// [`Frame::SubscribeOk`]
    SubscribeOk = 0x21,
    /// [`Frame::Deliver`]
    Deliver = 0x22,
    /// [`Frame::Credit`]
    Credit = 0x23,
    /// [`Frame::Ack`]
    Ack = 0x24,
    /// [`Frame::Nack`]
    Nack = 0x25,
    /// [`Frame::Unsubscribe`]
    Unsubscribe = 0x26,
    /// [`Frame::Drain`]
    Drain = 0x27,
    /// [`Frame::Drained`]
    Drained = 0x28,
    /// [`Frame::Ping`]
    Ping = 0x30,
    /// [`Frame::Pong`]
    Pong = 0x31,
}

impl FrameType {
    /// The frame type for a type byte, if it is one.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => FrameType::Hello,
            0x02 => FrameType::HelloOk,
            0x03 => FrameType::Error,
            0x10 => FrameType::Publish,
            0x11 => FrameType::PublishOk,
            0x12 => FrameType::CreateTopic,
            0x13 => FrameType::CreateTopicOk,
            0x20 => FrameType::Subscribe,
            0x21 => FrameType::SubscribeOk,
            0x22 => FrameType::Deliver,
            0x23 => FrameType::Credit,
            0x24 => FrameType::Ack,
            0x25 => FrameType::Nack,
            0x26 => FrameType::Unsubscribe,
            0x27 => FrameType::Drain,
            0x28 => FrameType::Drained,
            0x30 => FrameType::Ping,
            0x31 => FrameType::Pong,
            _ => return None,
        })
    }
}

impl Frame {
    /// This frame's type.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Hello(_) => FrameType::Hello,
            Frame::HelloOk { .. } => FrameType::HelloOk,
            Frame::Error { .. } => FrameType::Error,
            Frame::Publish { .. } => FrameType::Publish,
            Frame::PublishOk { .. } => FrameType::PublishOk,
            Frame::CreateTopic { .. } => FrameType::CreateTopic,
            Frame::CreateTopicOk { .. } => FrameType::CreateTopicOk,
            Frame::Subscribe { .. } => FrameType::Subscribe,
            Frame::SubscribeOk { .. } => FrameType::SubscribeOk,
            Frame::Deliver { .. } => FrameType::Deliver,
            Frame::Credit { .. } => FrameType::Credit,
            Frame::Ack { .. } => FrameType::Ack,
            Frame::Nack { .. } => FrameType::Nack,
            Frame::Unsubscribe { .. } => FrameType::Unsubscribe,
            Frame::Drain { .. } => FrameType::Drain,
            Frame::Drained { .. } => FrameType::Drained,
            Frame::Ping { .. } => FrameType::Ping,
            Frame::Pong { .. } => FrameType::Pong,
        }
    }

    /// A connection-level or request-level error frame.
    pub fn error(request_id: u64, code: ErrorCode, message: impl Into<String>) -> Self {
        Frame::Error {
            request_id,
            code,
            message: message.into(),
        }
    }

    /// Appends the body (without length and type) to `dst`.
    pub(crate) fn encode_body(&self, dst: &mut BytesMut) -> Result<(), CodecError> {
        match self {
            Frame::Hello(h) => {
                dst.put_slice(&h.magic);
                dst.put_u16(h.version);
                put_string(dst, "client name", &h.client_name)?;
                put_string(dst, "token", &h.token)?;
            }
            Frame::HelloOk {
                version,
                max_message_bytes,
            } => {
                dst.put_u16(*version);
                dst.put_u32(*max_message_bytes);
            }
            Frame::Error {
                request_id,
                code,
                message,
            } => {
                dst.put_u64(*request_id);
                dst.put_u16(code.as_u16());
                put_string(dst, "error message", message)?;
            }
            Frame::Publish {
                request_id,
                topic,
                messages,
            } => {
                dst.put_u64(*request_id);
                put_string(dst, "topic", topic)?;
                put_count(dst, "messages", messages.len())?;
                for m in messages {
                    put_new_message(dst, m)?;
                }
            }
            Frame::PublishOk { request_id, ids } => {
                dst.put_u64(*request_id);
                put_ids(dst, ids)?;
            }
            Frame::CreateTopic { request_id, topic } => {
                dst.put_u64(*request_id);
                put_string(dst, "topic", topic)?;
            }
            Frame::CreateTopicOk { request_id } => dst.put_u64(*request_id),
            Frame::Subscribe {
                sub_id,
                topic,
                group,
                credits,
            } => {
                dst.put_u64(*sub_id);
                put_string(dst, "topic", topic)?;
                put_string(dst, "group", group)?;
                dst.put_u32(*credits);
            }
            Frame::SubscribeOk { sub_id } => dst.put_u64(*sub_id),
            Frame::Deliver { sub_id, messages } => {
                dst.put_u64(*sub_id);
                put_count(dst, "messages", messages.len())?;
                for m in messages {
                    put_message(dst, m)?;
                }
            }
            Frame::Credit { sub_id, n } => {
                dst.put_u64(*sub_id);
                dst.put_u32(*n);
            }
            Frame::Ack { sub_id, ids } => {
                dst.put_u64(*sub_id);
                put_ids(dst, ids)?;
            }
            Frame::Nack {
                sub_id,
                ids,
                delay_ms,
                reason,
            } => {
                dst.put_u64(*sub_id);
                put_ids(dst, ids)?;
                dst.put_u64(*delay_ms);
                put_string(dst, "reason", reason)?;
            }
            Frame::Unsubscribe { sub_id } | Frame::Drain { sub_id } | Frame::Drained { sub_id } => {
                dst.put_u64(*sub_id)
            }
            Frame::Ping { nonce } | Frame::Pong { nonce } => dst.put_u64(*nonce),
        }
        Ok(())
    }

    /// Decodes one body of the given type; the body must be consumed exactly.
    pub(crate) fn decode_body(type_byte: u8, body: Bytes) -> Result<Frame, CodecError> {
        let kind = FrameType::from_u8(type_byte).ok_or_else(|| {
            CodecError::Malformed(format!("unknown frame type 0x{type_byte:02x}"))
        })?;
        let mut r = Reader::new(body);
        let frame = match kind {
            FrameType::Hello => Frame::Hello(Hello {
                magic: r.array4("magic")?,
                version: r.u16("version")?,
                client_name: r.string("client name")?,
                token: r.string("token")?,
            }),
            FrameType::HelloOk => Frame::HelloOk {
                version: r.u16("version")?,
                max_message_bytes: r.u32("max message bytes")?,
            },
            FrameType::Error => Frame::Error {
                request_id: r.u64("request id")?,
                code: ErrorCode::from_u16(r.u16("error code")?),
                message: r.string("error message")?,
            },
            FrameType::Publish => {
                let request_id = r.u64("request id")?;
                let topic = r.string("topic")?;
                // Smallest message: key flag, header count, payload length.
                let n = r.count("messages", 7)?;
                let messages = (0..n).map(|_| r.new_message()).collect::<Result<_, _>>()?;
                Frame::Publish {
                    request_id,
                    topic,
                    messages,
                }
            }
            FrameType::PublishOk => Frame::PublishOk {
                request_id: r.u64("request id")?,
                ids: r.ids()?,
            },
            FrameType::CreateTopic => Frame::CreateTopic {
                request_id: r.u64("request id")?,
                topic: r.string("topic")?,
            },
            FrameType::CreateTopicOk => Frame::CreateTopicOk {
                request_id: r.u64("request id")?,
            },
            FrameType::Subscribe => Frame::Subscribe {
                sub_id: r.u64("sub id")?,
                topic: r.string("topic")?,
                group: r.string("group")?,
                credits: r.u32("credits")?,
            },
            FrameType::SubscribeOk => Frame::SubscribeOk {
                sub_id: r.u64("sub id")?,
            },
            FrameType::Deliver => {
                let sub_id = r.u64("sub id")?;
                let n = r.count("messages", 29)?;
                let messages = (0..n).map(|_| r.message()).collect::<Result<_, _>>()?;
                Frame::Deliver { sub_id, messages }
            }
            FrameType::Credit => Frame::Credit {
                sub_id: r.u64("sub id")?,
                n: r.u32("credits")?,
            },
            FrameType::Ack => Frame::Ack {
                sub_id: r.u64("sub id")?,
                ids: r.ids()?,
            },
            FrameType::Nack => Frame::Nack {
                sub_id: r.u64("sub id")?,
                ids: r.ids()?,
                delay_ms: r.u64("delay ms")?,
                reason: r.string("reason")?,
            },
            FrameType::Unsubscribe => Frame::Unsubscribe {
                sub_id: r.u64("sub id")?,
            },
            FrameType::Drain => Frame::Drain {
                sub_id: r.u64("sub id")?,
            },
            FrameType::Drained => Frame::Drained {
                sub_id: r.u64("sub id")?,
            },
            FrameType::Ping => Frame::Ping {
                nonce: r.u64("nonce")?,
            },
            FrameType::Pong => Frame::Pong {
                nonce: r.u64("nonce")?,
            },
        };
        r.finish(&format!("{kind:?} frame"))?;
        Ok(frame)
    }
}
