//! Parsing a message head and deciding how its body is delimited
//! (RFC 9112 §6).

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::{Method, StatusCode, Uri, Version};

use crate::H1Error;
use crate::fields::{Fields, Span};

/// The most header fields a head may have.
pub const MAX_HEADERS: usize = 100;
/// The largest head accepted, in bytes (request line and fields).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Known(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the connection closes (responses only).
    UntilClose,
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    /// Method, target, version and fields.
    pub parts: http::request::Parts,
    /// How the body that follows is delimited.
    pub body: BodyLength,
    /// Whether the client keeps the connection open after the answer.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before sending its body.
    pub expect_continue: bool,
}

/// A parsed response head. Its fields are kept as they arrived (see
/// [`Fields`]): a proxy passes most answers on without needing a map.
#[derive(Debug)]
pub struct ResponseHead {
    /// The status code.
    pub status: StatusCode,
    /// The version the instance spoke.
    pub version: Version,
    /// The fields, framing fields included.
    pub fields: Fields,
    /// How the body that follows is delimited.
    pub body: BodyLength,
    /// Whether the connection can carry another request afterwards.
    pub keep_alive: bool,
}

/// Parses the request head at the start of `buf`. `Ok(None)`: the head is
/// not complete yet (read more). On success the head is split off `buf`
/// and its field values share that memory rather than being copied.
pub fn parse_request(buf: &mut BytesMut) -> Result<Option<RequestHead>, H1Error> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD_BYTES => n,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD_BYTES => return Ok(None),
        Ok(_) | Err(httparse::Error::TooManyHeaders) => return Err(too_large()),
        Err(e) => return Err(H1Error::Malformed(e.to_string())),
    };
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| H1Error::Malformed("invalid method".to_owned()))?;
    let target = span(req.path.unwrap_or_default().as_bytes());
    let version = if req.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let (spans, mut control) = spans_of(req.headers, base)?;
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.0 + target.1))
        .map_err(|e| H1Error::Malformed(format!("invalid request target: {e}")))?;
    // The gateway reads and changes a request's fields, so they go into a
    // map; their values share the head's memory.
    let headers = Fields::parsed(head, spans).to_header_map()?;
    let keep_alive = control.keep_alive(version);
    let body = match (std::mem::take(&mut control.chunked), control.length) {
        (Chunked::No, None) => BodyLength::Empty,
        (Chunked::No, Some(0)) => BodyLength::Empty,
        (Chunked::No, Some(n)) => BodyLength::Known(n),
        (Chunked::Yes, None) if version == Version::HTTP_11 => BodyLength::Chunked,
        (Chunked::Yes, None) => {
            return Err(H1Error::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request".to_owned(),
            ));
        }
        (Chunked::Yes, Some(_)) | (Chunked::Other(_), Some(_)) => {
            return Err(H1Error::LengthAndChunked);
        }
        (Chunked::Other(coding), None) => {
            return Err(H1Error::UnsupportedTransferEncoding(coding));
        }
    };
    if let Some(other) = control.expect_other {
        return Err(H1Error::UnsupportedExpectation(other));
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(RequestHead {
        keep_alive,
        // An HTTP/1.0 client does not know 100 Continue (RFC 9110 §10.1.1).
        expect_continue: control.expect_continue
            && body != BodyLength::Empty
            && version == Version::HTTP_11,
        parts,
        body,
    }))
}

/// Parses the response head at the start of `buf`, answering a `method`
/// request. `Ok(None)`: not complete yet. Informational (1xx) answers are
/// returned like any other, with an empty body; the caller reads on.
pub fn parse_response(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<ResponseHead>, H1Error> {
    // Uninitialised, as for requests: zeroing all MAX_HEADERS slots cost
    // more than parsing the few fields an answer has.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD_BYTES => n,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD_BYTES => return Ok(None),
        Ok(_) | Err(httparse::Error::TooManyHeaders) => return Err(too_large()),
        Err(e) => return Err(H1Error::Malformed(e.to_string())),
    };
    let status = StatusCode::from_u16(resp.code.unwrap_or_default())
        .map_err(|_| H1Error::Malformed("invalid status code".to_owned()))?;
    let version = if resp.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let (spans, mut control) = spans_of(resp.headers, buf.as_ptr() as usize)?;
    let fields = Fields::parsed(buf.split_to(len).freeze(), spans);
    let mut keep_alive = control.keep_alive(version);
    let body = if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || *method == Method::HEAD
    {
        BodyLength::Empty
    } else {
        match (std::mem::take(&mut control.chunked), control.length) {
            (Chunked::Yes, length) => {
                // Both sent: chunked wins, and the connection is not trusted
                // with another message (RFC 9112 §6.3).
                keep_alive &= length.is_none();
                BodyLength::Chunked
            }
            (Chunked::Other(_), _) => BodyLength::UntilClose,
            (Chunked::No, Some(0)) => BodyLength::Empty,
            (Chunked::No, Some(n)) => BodyLength::Known(n),
            (Chunked::No, None) => BodyLength::UntilClose,
        }
    };
    if body == BodyLength::UntilClose {
        keep_alive = false;
    }
    Ok(Some(ResponseHead {
        status,
        version,
        fields,
        body,
        keep_alive,
    }))
}

/// Where each field's name and value lie in the head that starts at
/// `base`, so they can share its memory once it is split off the read
/// buffer; the framing fields are noted on the way.
fn spans_of(fields: &[httparse::Header<'_>], base: usize) -> Result<(Vec<Span>, Control), H1Error> {
    let mut control = Control::default();
    let mut spans = Vec::with_capacity(fields.len());
    for h in fields {
        control.note(h.name.as_bytes(), h.value)?;
        spans.push(Span {
            name: (h.name.as_ptr() as usize - base, h.name.len()),
            value: (h.value.as_ptr() as usize - base, h.value.len()),
        });
    }
    Ok((spans, control))
}

fn too_large() -> H1Error {
    H1Error::HeadTooLarge {
        max_bytes: MAX_HEAD_BYTES,
        max_headers: MAX_HEADERS,
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Chunked {
    #[default]
    No,
    Yes,
    /// A coding other than a single `chunked`.
    Other(String),
}

/// The fields that decide framing and the connection's fate.
#[derive(Default)]
struct Control {
    length: Option<u64>,
    chunked: Chunked,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
    expect_other: Option<String>,
}

impl Control {
    /// Takes note of one field (`name` in any case).
    fn note(&mut self, name: &[u8], value: &[u8]) -> Result<(), H1Error> {
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = content_length(value)?;
            if self.length.is_some_and(|prev| prev != n) {
                return Err(invalid_length(value));
            }
            self.length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let text = std::str::from_utf8(value).unwrap_or_default();
            for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                self.chunked = match self.chunked {
                    Chunked::No if coding.eq_ignore_ascii_case("chunked") => Chunked::Yes,
                    Chunked::Other(ref prev) => Chunked::Other(format!("{prev}, {coding}")),
                    Chunked::Yes => Chunked::Other(format!("chunked, {coding}")),
                    Chunked::No => Chunked::Other(coding.to_owned()),
                };
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in std::str::from_utf8(value).unwrap_or_default().split(',') {
                let token = token.trim();
                self.close |= token.eq_ignore_ascii_case("close");
                self.keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            let text = std::str::from_utf8(value).unwrap_or_default().trim();
            if text.eq_ignore_ascii_case("100-continue") {
                self.expect_continue = true;
            } else {
                self.expect_other = Some(text.to_owned());
            }
        }
        Ok(())
    }

    fn keep_alive(&self, version: Version) -> bool {
        !self.close && (version == Version::HTTP_11 || self.keep_alive)
    }
}

/// One decimal count, or a list of identical ones (RFC 9110 §8.6).
fn content_length(value: &[u8]) -> Result<u64, H1Error> {
    let mut found = None;
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(invalid_length(value));
        }
        let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|prev| prev != n) {
            return Err(invalid_length(value));
        }
        found = Some(n);
    }
    found.ok_or_else(|| invalid_length(value))
}

fn invalid_length(value: &[u8]) -> H1Error {
    H1Error::InvalidContentLength(String::from_utf8_lossy(value).into_owned())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn request(text: &str) -> Result<Option<RequestHead>, H1Error> {
        parse_request(&mut BytesMut::from(text))
    }

    fn response(text: &str, method: &Method) -> ResponseHead {
        parse_response(&mut BytesMut::from(text), method)
            .expect("valid")
            .expect("complete")
    }

    #[test]
    fn a_request_head_is_split_off_and_keeps_what_follows() {
        let mut buf = BytesMut::from(
            "POST /v1/orders?x=1 HTTP/1.1\r\nHost: shop\r\nContent-Length: 2\r\nX-A: b\r\n\r\n{}GET",
        );
        let head = parse_request(&mut buf).expect("valid").expect("complete");
        assert_eq!(head.parts.method, Method::POST);
        assert_eq!(head.parts.uri.path(), "/v1/orders");
        assert_eq!(head.parts.uri.query(), Some("x=1"));
        assert_eq!(head.parts.headers["x-a"], "b");
        assert_eq!(head.body, BodyLength::Known(2));
        assert!(head.keep_alive);
        assert_eq!(&buf[..], b"{}GET");
    }

    #[test]
    fn an_incomplete_head_asks_for_more_and_consumes_nothing() {
        let mut buf = BytesMut::from("GET / HTTP/1.1\r\nHost: a\r\n");
        assert!(parse_request(&mut buf).expect("valid").is_none());
        assert_eq!(buf.len(), 25);
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_tokens() {
        let ka = |t: &str| request(t).expect("valid").expect("complete").keep_alive;
        assert!(ka("GET / HTTP/1.1\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
        assert!(ka("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn ambiguous_or_unsupported_framing_is_refused_with_a_reason() {
        assert_eq!(
            request("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap_err(),
            H1Error::LengthAndChunked
        );
        assert_eq!(
            request("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n")
                .unwrap_err(),
            H1Error::InvalidContentLength("4".to_owned())
        );
        assert!(matches!(
            request("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n").unwrap_err(),
            H1Error::InvalidContentLength(_)
        ));
        assert_eq!(
            request("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap_err(),
            H1Error::UnsupportedTransferEncoding("gzip, chunked".to_owned())
        );
        assert_eq!(
            request("POST / HTTP/1.1\r\nExpect: magic\r\nContent-Length: 1\r\n\r\n").unwrap_err(),
            H1Error::UnsupportedExpectation("magic".to_owned())
        );
        assert!(matches!(
            request("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n").unwrap_err(),
            H1Error::Malformed(_)
        ));
    }

    #[test]
    fn identical_listed_lengths_are_one_length() {
        let head = request("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(head.body, BodyLength::Known(5));
    }

    #[test]
    fn chunked_requests_and_continue_are_recognised() {
        let head =
            request("PUT / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n")
                .expect("valid")
                .expect("complete");
        assert_eq!(head.body, BodyLength::Chunked);
        assert!(head.expect_continue);
    }

    #[test]
    fn too_many_fields_or_bytes_are_too_large() {
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let text = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(request(&text), Err(H1Error::HeadTooLarge { .. })));
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert!(matches!(request(&long), Err(H1Error::HeadTooLarge { .. })));
    }

    #[test]
    fn response_bodies_are_framed_by_status_method_and_fields() {
        let get = Method::GET;
        let r = response("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", &get);
        assert_eq!((r.body, r.keep_alive), (BodyLength::Known(12), true));
        let r = response(
            "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
            &Method::HEAD,
        );
        assert_eq!(r.body, BodyLength::Empty);
        let r = response(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n",
            &get,
        );
        assert_eq!(r.body, BodyLength::Empty);
        let r = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &get,
        );
        assert_eq!((r.body, r.keep_alive), (BodyLength::Chunked, true));
        let r = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            &get,
        );
        assert_eq!((r.body, r.keep_alive), (BodyLength::Chunked, false));
        let r = response("HTTP/1.1 200 OK\r\n\r\n", &get);
        assert_eq!((r.body, r.keep_alive), (BodyLength::UntilClose, false));
        let r = response("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", &get);
        assert!(!r.keep_alive);
        let r = response("HTTP/1.1 100 Continue\r\n\r\n", &get);
        assert_eq!(r.body, BodyLength::Empty);
        assert!(r.status.is_informational());
    }

    proptest! {
        /// Untrusted input: any bytes give a head, a request for more or an
        /// error, never a panic; a head consumes only what it parsed.
        #[test]
        fn arbitrary_bytes_never_panic(wire in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut buf = BytesMut::from(&wire[..]);
            if let Ok(Some(_)) = parse_request(&mut buf) {
                prop_assert!(buf.len() < wire.len());
            }
            let mut buf = BytesMut::from(&wire[..]);
            if let Ok(Some(head)) = parse_response(&mut buf, &Method::GET) {
                // What the parser accepts, `http` accepts: a raw answer can
                // always become an `http::Response`.
                prop_assert!(head.fields.to_header_map().is_ok());
            }
        }

        /// Any valid field names and values (obs-text included): every
        /// field is kept, in order, and the fields convert to a map.
        #[test]
        fn accepted_fields_are_kept_and_convert(
            fields in proptest::collection::vec(
                (
                    "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}",
                    proptest::collection::vec(
                        prop_oneof![Just(b'\t'), 0x20u8..=0x7e, 0x80u8..=0xff],
                        0..16,
                    ),
                ),
                0..8,
            ),
        ) {
            let mut wire = b"HTTP/1.1 200 OK\r\n".to_vec();
            for (name, value) in &fields {
                wire.extend_from_slice(name.as_bytes());
                wire.extend_from_slice(b": ");
                wire.extend_from_slice(value);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"content-length: 0\r\n\r\n");
            let head = parse_response(&mut BytesMut::from(&wire[..]), &Method::GET);
            prop_assert!(matches!(head, Ok(Some(_))), "{:?}", head);
            if let Ok(Some(head)) = head {
                prop_assert_eq!(head.fields.len(), fields.len() + 1);
                let map = head.fields.to_header_map();
                prop_assert!(map.is_ok(), "{:?}", map);
                for ((name, _), (kept, _)) in fields.iter().zip(head.fields.iter()) {
                    prop_assert_eq!(name.as_bytes(), kept);
                }
            }
        }

        /// Mostly-valid heads with hostile framing fields: the verdict is
        /// always one of the documented ones.
        #[test]
        fn framing_fields_get_a_definite_verdict(
            length in proptest::option::of("[0-9, a-z-]{0,12}"),
            coding in proptest::option::of("(chunked|gzip|identity|Chunked)(, (chunked|gzip))?"),
            version in prop_oneof![Just("1.0"), Just("1.1")],
        ) {
            let mut text = format!("POST /x HTTP/{version}\r\nHost: a\r\n");
            if let Some(l) = &length {
                text.push_str(&format!("Content-Length: {l}\r\n"));
            }
            if let Some(c) = &coding {
                text.push_str(&format!("Transfer-Encoding: {c}\r\n"));
            }
            text.push_str("\r\n");
            match parse_request(&mut BytesMut::from(text.as_str())) {
                Ok(Some(head)) => {
                    prop_assert!(length.is_none() || coding.is_none());
                    if coding.is_some() {
                        prop_assert_eq!(head.body, BodyLength::Chunked);
                    }
                }
                Ok(None) => prop_assert!(false, "a complete head is not partial"),
                Err(_) => {}
            }
        }
    }
}
