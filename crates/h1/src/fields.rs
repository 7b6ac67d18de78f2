//! [`Fields`]: a head's fields as they arrived, without an `http::HeaderMap`.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::H1Error;

/// A message head's fields as they arrived: names in their original case,
/// values as sent, all sharing the head's memory.
///
/// Why not `http::HeaderMap`: a proxy passing an answer on looks at a few
/// fields (framing, hop-by-hop) and writes the rest out again. Building a
/// map parses and hashes every name and allocates its table, and encoding
/// walks it again; for the gateway's answers that was about a tenth of the
/// instructions of a forwarded call (docs/benchmarks.md). A map is built
/// only when someone asks for one ([`Fields::to_header_map`]).
#[derive(Debug, Clone, Default)]
pub struct Fields {
    buf: Bytes,
    spans: Vec<Span>,
}

/// Where one field's name and value lie in the buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub(crate) name: (usize, usize),
    pub(crate) value: (usize, usize),
}

impl Fields {
    /// Fields whose names and values lie in `buf` at `spans` (`start`,
    /// `length`); names must be valid field names and values valid field
    /// values (the parser checked both).
    pub(crate) fn parsed(buf: Bytes, spans: Vec<Span>) -> Fields {
        Fields { buf, spans }
    }

    /// The fields of `headers`, copied into one buffer.
    pub fn from_header_map(headers: &HeaderMap) -> Fields {
        let size: usize = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum();
        let mut buf = BytesMut::with_capacity(size);
        let mut spans = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            let name_at = buf.len();
            buf.put_slice(name.as_str().as_bytes());
            let value_at = buf.len();
            buf.put_slice(value.as_bytes());
            spans.push(Span {
                name: (name_at, name.as_str().len()),
                value: (value_at, value.len()),
            });
        }
        Fields {
            buf: buf.freeze(),
            spans,
        }
    }

    /// How many fields there are (a repeated name counts each time).
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Each field's name (as sent: any case) and value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.spans.iter().map(|s| {
            (
                &self.buf[s.name.0..s.name.0 + s.name.1],
                &self.buf[s.value.0..s.value.0 + s.value.1],
            )
        })
    }

    /// The fields as a map, values sharing this buffer, with room for a few
    /// more (a proxy adds forwarding and tracing fields).
    pub fn to_header_map(&self) -> Result<HeaderMap, H1Error> {
        let mut headers = HeaderMap::with_capacity(self.spans.len() + 4);
        for s in &self.spans {
            let name = &self.buf[s.name.0..s.name.0 + s.name.1];
            let name = HeaderName::from_bytes(name).map_err(|_| {
                let name = String::from_utf8_lossy(name);
                H1Error::Malformed(format!("invalid field name `{name}`"))
            })?;
            let value = self.buf.slice(s.value.0..s.value.0 + s.value.1);
            let value = HeaderValue::from_maybe_shared(value)
                .map_err(|_| H1Error::Malformed(format!("invalid value of field `{name}`")))?;
            headers.append(name, value);
        }
        Ok(headers)
    }
}

/// `headers` as the (name, value) pairs the encoders take.
pub fn map_fields(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_round_trips_in_order() {
        let mut h = HeaderMap::new();
        h.append("content-type", HeaderValue::from_static("text/plain"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        let fields = Fields::from_header_map(&h);
        assert_eq!(fields.len(), 3);
        let back = fields.to_header_map().expect("valid");
        assert_eq!(back, h);
        let pairs: Vec<_> = fields.iter().collect();
        assert_eq!(pairs[2], (&b"x-a"[..], &b"2"[..]));
    }
}
