//! The on-disk record: one message, framed with its length and a crc32c so a torn
//! or damaged tail is detected instead of served.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! len u32 | crc u32 | body (len bytes)
//! body = offset u64 | publish_time_ms u64 | key_len u32 (u32::MAX = no key) | key
//!      | header_count u32 | (name_len u32 | name | value_len u32 | value)*
//!      | payload_len u32 | payload
//! ```
//!
//! The crc32c covers the length field and the body, so a damaged length is caught too.

use bytes::Bytes;

use crate::NewMessage;

/// Bytes before the body: length and checksum.
pub(crate) const HEADER_LEN: usize = 8;

/// A decoded record: a message with its offset and publish time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) offset: u64,
    pub(crate) publish_time_ms: u64,
    pub(crate) key: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) payload: Bytes,
}

impl Record {
    /// What counts against `max_message_bytes`: payload, key, header names and values.
    pub(crate) fn size(&self) -> usize {
        mortar_bus_proto::counted_size(self.payload.len(), self.key.as_deref(), &self.headers)
    }
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A whole, valid record that took `len` bytes.
    Record { record: Record, len: usize },
    /// The buffer ends inside a record; at least `needed` bytes in total are required.
    Incomplete { needed: usize },
    /// The bytes are not a valid record.
    Corrupt { reason: &'static str },
}

/// Appends the encoding of `message` at `offset` to `out`.
pub(crate) fn encode(offset: u64, publish_time_ms: u64, message: &NewMessage, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&publish_time_ms.to_le_bytes());
    match &message.key {
        Some(key) => put_bytes(out, key.as_bytes()),
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
    out.extend_from_slice(&len_u32(message.headers.len()).to_le_bytes());
    for (name, value) in &message.headers {
        put_bytes(out, name.as_bytes());
        put_bytes(out, value.as_bytes());
    }
    put_bytes(out, &message.payload);
    let body_len = len_u32(out.len() - start - HEADER_LEN).to_le_bytes();
    out[start..start + 4].copy_from_slice(&body_len);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&body_len), &out[start + HEADER_LEN..]);
    out[start + 4..start + HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the record at the start of `buf`. Never panics, and never returns a record
/// whose checksum does not match.
pub(crate) fn decode(buf: &[u8]) -> Decoded {
    let (Some(len), Some(crc)) = (read_u32(buf, 0), read_u32(buf, 4)) else {
        return Decoded::Incomplete { needed: HEADER_LEN };
    };
    let total = HEADER_LEN.saturating_add(len as usize);
    let Some(body) = buf.get(HEADER_LEN..total) else {
        return Decoded::Incomplete { needed: total };
    };
    let actual = crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), body);
    if actual != crc {
        return Decoded::Corrupt {
            reason: "checksum mismatch",
        };
    }
    match parse_body(body) {
        Some(record) => Decoded::Record { record, len: total },
        None => Decoded::Corrupt {
            reason: "malformed record body",
        },
    }
}

fn parse_body(body: &[u8]) -> Option<Record> {
    let mut cursor = Cursor { buf: body, at: 0 };
    let offset = cursor.u64()?;
    let publish_time_ms = cursor.u64()?;
    let key = match cursor.u32()? {
        u32::MAX => None,
        len => Some(cursor.string(len)?),
    };
    let count = cursor.u32()?;
    let mut headers = Vec::new();
    for _ in 0..count {
        let name_len = cursor.u32()?;
        let name = cursor.string(name_len)?;
        let value_len = cursor.u32()?;
        headers.push((name, cursor.string(value_len)?));
    }
    let payload_len = cursor.u32()?;
    let payload = Bytes::copy_from_slice(cursor.take(payload_len)?);
    (cursor.at == body.len()).then_some(Record {
        offset,
        publish_time_ms,
        key,
        headers,
        payload,
    })
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: u32) -> Option<&'a [u8]> {
        let end = self.at.checked_add(len as usize)?;
        let bytes = self.buf.get(self.at..end)?;
        self.at = end;
        Some(bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self, len: u32) -> Option<String> {
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&len_u32(bytes.len()).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Lengths are bounded by `max_message_bytes` long before they reach `u32::MAX`;
/// saturating keeps the encoder total (a saturated length fails to decode, never misreads).
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> NewMessage {
        NewMessage {
            key: Some("order-7".into()),
            headers: vec![
                ("traceparent".into(), "00-abc-01".into()),
                ("x".into(), String::new()),
            ],
            payload: Bytes::from_static(b"hello"),
        }
    }

    #[test]
    fn round_trips_a_record() {
        let mut buf = Vec::new();
        encode(42, 1_700_000_000_000, &sample(), &mut buf);
        let Decoded::Record { record, len } = decode(&buf) else {
            panic!("did not decode")
        };
        assert_eq!(len, buf.len());
        assert_eq!(record.offset, 42);
        assert_eq!(record.publish_time_ms, 1_700_000_000_000);
        assert_eq!(record.key.as_deref(), Some("order-7"));
        assert_eq!(record.headers, sample().headers);
        assert_eq!(record.payload, sample().payload);
    }

    #[test]
    fn round_trips_a_record_without_key() {
        let mut buf = Vec::new();
        encode(0, 0, &NewMessage::new(Bytes::new()), &mut buf);
        assert!(matches!(decode(&buf), Decoded::Record { record, .. } if record.key.is_none()));
    }

    #[test]
    fn a_truncated_record_is_incomplete_and_a_flipped_byte_is_corrupt() {
        let mut buf = Vec::new();
        encode(1, 2, &sample(), &mut buf);
        assert!(
            matches!(decode(&buf[..buf.len() - 1]), Decoded::Incomplete { needed } if needed == buf.len())
        );
        assert!(matches!(decode(&buf[..3]), Decoded::Incomplete { .. }));
        let last = buf.len() - 1;
        buf[last] ^= 0x40;
        assert!(matches!(decode(&buf), Decoded::Corrupt { .. }));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics_nor_returns_a_bad_checksum(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Decoded::Record { len, .. } = decode(&bytes) {
                let stored = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
                let computed = crc32c::crc32c_append(crc32c::crc32c(&bytes[0..4]), &bytes[HEADER_LEN..len]);
                prop_assert_eq!(stored, computed);
            }
        }

        #[test]
        fn a_single_damaged_byte_is_never_served(position in any::<usize>(), flip in 1u8..=255) {
            let mut buf = Vec::new();
            encode(9, 9, &sample(), &mut buf);
            let at = position % buf.len();
            buf[at] ^= flip;
            let is_record = matches!(decode(&buf), Decoded::Record { .. });
            prop_assert!(!is_record);
        }
    }
}
