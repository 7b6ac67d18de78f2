//! `Transfer-Encoding: chunked` (RFC 9112 §7.1): decoding from a read
//! buffer as bytes arrive, and encoding.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{H1Error, MAX_HEAD_BYTES};

/// The longest chunk-size line (size and extensions) accepted.
const MAX_SIZE_LINE: usize = 4096;

/// The chunk that ends a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// What [`ChunkedDecoder::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes, taken off the buffer.
    Data(Bytes),
    /// Read more into the buffer and call again.
    NeedMore,
    /// The body ended (trailers, if any, were read and dropped); what
    /// follows in the buffer is the next message.
    Done,
}

/// Decodes one chunked body from the front of a read buffer. Extensions
/// and trailer fields are read and dropped; line ends must be CRLF, since a
/// lenient parser is how a request is smuggled past another one.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: State,
    trailer_bytes: usize,
}

#[derive(Debug, Default, Clone, Copy)]
enum State {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl ChunkedDecoder {
    /// Takes the next piece of the body off `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, H1Error> {
        loop {
            match self.state {
                State::Size => {
                    let Some(end) = line_end(buf, MAX_SIZE_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&buf[..end])?;
                    buf.advance(end + 2);
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    self.state = match left - take as u64 {
                        0 => State::DataEnd,
                        rest => State::Data(rest),
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(H1Error::Chunked("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    let Some(end) = line_end(buf, MAX_HEAD_BYTES)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    buf.advance(end + 2);
                    if end == 0 {
                        self.state = State::Done;
                        return Ok(Decoded::Done);
                    }
                    self.trailer_bytes += end + 2;
                    if self.trailer_bytes > MAX_HEAD_BYTES {
                        return Err(H1Error::Chunked("trailer fields too large"));
                    }
                }
                State::Done => return Ok(Decoded::Done),
            }
        }
    }
}

/// Where the CRLF ending the first line is; `None` if not read yet.
fn line_end(buf: &[u8], max: usize) -> Result<Option<usize>, H1Error> {
    let window = &buf[..buf.len().min(max + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(end) => Ok(Some(end)),
        None if buf.len() > max + 1 => Err(H1Error::Chunked("line too long")),
        None => Ok(None),
    }
}

/// The hexadecimal size before any `;extension`.
fn chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let digits = line
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii_end();
    if digits.is_empty() || digits.len() > 16 {
        return Err(H1Error::Chunked("invalid chunk size"));
    }
    let mut size = 0u64;
    for d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(H1Error::Chunked("invalid chunk size")),
        };
        size = size << 4 | u64::from(v);
    }
    Ok(size)
}

/// Appends `data` to `dst` as one chunk (nothing for empty data, which
/// would read as the last chunk).
pub fn encode_chunk(dst: &mut BytesMut, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    dst.reserve(data.len() + 20);
    let _ = std::fmt::Write::write_fmt(&mut Hex(dst), format_args!("{:x}\r\n", data.len()));
    dst.put_slice(data);
    dst.put_slice(b"\r\n");
}

struct Hex<'a>(&'a mut BytesMut);

impl std::fmt::Write for Hex<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Decodes everything in `wire`, fed `step` bytes at a time.
    fn decode_all(wire: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), H1Error> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::Done => return Ok((body, buf.to_vec())),
                Decoded::NeedMore => {
                    if fed == wire.len() {
                        return Err(H1Error::Chunked("ended early"));
                    }
                    let n = step.min(wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn chunks_extensions_and_trailers_decode_to_the_body() {
        let wire = b"5;name=v\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in [1, 3, 7, wire.len()] {
            let (body, rest) = decode_all(wire, step).expect("valid");
            assert_eq!(body, b"hello 0123456789");
            assert_eq!(rest, b"NEXT"[..rest.len()].to_vec());
        }
    }

    #[test]
    fn broken_framing_is_an_error_not_a_guess() {
        for wire in [
            &b"5\r\nhelloX\r\n0\r\n\r\n"[..],
            b"z\r\n",
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
        ] {
            assert!(
                matches!(decode_all(wire, wire.len()), Err(H1Error::Chunked(_))),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let long = format!("1;{}\r\n", "e".repeat(MAX_SIZE_LINE));
        assert_eq!(
            decode_all(long.as_bytes(), long.len()),
            Err(H1Error::Chunked("line too long"))
        );
    }

    proptest! {
        #[test]
        fn encoded_chunks_decode_to_the_same_body(
            pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            step in 1usize..64,
        ) {
            let mut wire = BytesMut::new();
            for p in &pieces {
                encode_chunk(&mut wire, p);
            }
            wire.put_slice(LAST_CHUNK);
            let (body, rest) = decode_all(&wire, step).expect("valid");
            prop_assert_eq!(body, pieces.concat());
            prop_assert!(rest.is_empty());
        }

        /// Untrusted input: any bytes end in data, a request for more or an
        /// error — never a panic, and never more data than was fed.
        #[test]
        fn arbitrary_bytes_never_panic(wire in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut decoder = ChunkedDecoder::default();
            let mut buf = BytesMut::from(&wire[..]);
            let mut out = 0;
            while let Ok(Decoded::Data(d)) = decoder.decode(&mut buf) {
                out += d.len();
            }
            prop_assert!(out <= wire.len());
        }
    }
}
