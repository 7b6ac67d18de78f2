//! Writing message heads. The framing fields (`Content-Length`,
//! `Transfer-Encoding`, `Connection`) are always the encoder's own, so a
//! head never says something about its body that the body does not do.

use bytes::{BufMut, BytesMut};
use http::{Method, StatusCode, Uri, Version};

/// How a response's body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body may follow (an answer to HEAD, or 1xx/204/304): the fields
    /// are written as they are, `Content-Length` included.
    NoBody,
    /// Exactly this many bytes.
    Length(u64),
    /// In chunks (HTTP/1.1 clients, length unknown).
    Chunked,
    /// Until the connection closes (HTTP/1.0 clients, length unknown).
    UntilClose,
}

/// Appends a response head to `dst` with `fields` (name, value) pairs, as
/// from [`map_fields`](crate::map_fields) or [`Fields::iter`](crate::Fields::iter).
/// `keep_alive` says whether the connection stays open afterwards;
/// `client` is the request's version (an HTTP/1.0 client is told
/// explicitly that it is kept alive).
pub fn encode_response_head<'a>(
    dst: &mut BytesMut,
    status: StatusCode,
    fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    framing: ResponseFraming,
    keep_alive: bool,
    client: Version,
) {
    dst.reserve(512);
    dst.put_slice(b"HTTP/1.1 ");
    dst.put_slice(status.as_str().as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    dst.put_slice(b"\r\n");
    let keep_length = framing == ResponseFraming::NoBody;
    let dated = put_fields(dst, fields, keep_length);
    if !dated {
        dst.put_slice(b"date: ");
        crate::date::put_http_date(dst);
        dst.put_slice(b"\r\n");
    }
    match framing {
        ResponseFraming::Length(n) => put_length(dst, n),
        ResponseFraming::Chunked => dst.put_slice(b"transfer-encoding: chunked\r\n"),
        ResponseFraming::NoBody | ResponseFraming::UntilClose => {}
    }
    if !keep_alive {
        dst.put_slice(b"connection: close\r\n");
    } else if client == Version::HTTP_10 {
        dst.put_slice(b"connection: keep-alive\r\n");
    }
    dst.put_slice(b"\r\n");
}

/// Appends a request head to `dst` in origin form, with `fields` (name,
/// value) pairs. The caller includes `Host` among them; `length` is the
/// body's (`None`: no body and no `Content-Length`).
pub fn encode_request_head<'a>(
    dst: &mut BytesMut,
    method: &Method,
    uri: &Uri,
    fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    length: Option<u64>,
) {
    dst.reserve(512);
    dst.put_slice(method.as_str().as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    dst.put_slice(b" HTTP/1.1\r\n");
    put_fields(dst, fields, false);
    if let Some(n) = length {
        put_length(dst, n);
    }
    dst.put_slice(b"\r\n");
}

/// Writes the fields but the framing ones (the encoder writes its own);
/// `true` if a `Date` was among them.
fn put_fields<'a>(
    dst: &mut BytesMut,
    fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    keep_length: bool,
) -> bool {
    let mut dated = false;
    for (name, value) in fields {
        let framing = name.eq_ignore_ascii_case(b"connection")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
            || (!keep_length && name.eq_ignore_ascii_case(b"content-length"));
        if framing {
            continue;
        }
        dated |= name.eq_ignore_ascii_case(b"date");
        dst.put_slice(name);
        dst.put_slice(b": ");
        dst.put_slice(value);
        dst.put_slice(b"\r\n");
    }
    dated
}

fn put_length(dst: &mut BytesMut, n: u64) {
    dst.put_slice(b"content-length: ");
    put_decimal(dst, n);
    dst.put_slice(b"\r\n");
}

/// `n` in decimal, without going through `fmt`.
pub(crate) fn put_decimal(dst: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    dst.put_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue, header};

    use super::*;
    use crate::{BodyLength, map_fields, parse_request, parse_response};

    #[test]
    fn a_response_head_carries_its_own_framing_and_a_date() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        let mut dst = BytesMut::new();
        encode_response_head(
            &mut dst,
            StatusCode::CREATED,
            map_fields(&h),
            ResponseFraming::Length(12),
            true,
            Version::HTTP_11,
        );
        let text = String::from_utf8(dst.to_vec()).expect("ascii");
        assert!(text.starts_with("HTTP/1.1 201 Created\r\n"), "{text}");
        assert!(text.contains("content-length: 12\r\n"), "{text}");
        assert!(!text.contains("999") && !text.contains("upgrade"), "{text}");
        assert!(text.contains("date: "), "{text}");
        let parsed = parse_response(&mut dst, &Method::GET)
            .expect("valid")
            .expect("complete");
        assert_eq!(parsed.body, BodyLength::Known(12));
        assert!(parsed.keep_alive);
    }

    #[test]
    fn fields_as_sent_are_recognised_in_any_case() {
        let fields: [(&[u8], &[u8]); 3] = [
            (b"Content-Length", b"999"),
            (b"Date", b"Sun, 06 Nov 1994 08:49:37 GMT"),
            (b"X-Kept", b"yes"),
        ];
        let mut dst = BytesMut::new();
        encode_response_head(
            &mut dst,
            StatusCode::OK,
            fields,
            ResponseFraming::Length(2),
            true,
            Version::HTTP_11,
        );
        let text = String::from_utf8(dst.to_vec()).expect("ascii");
        assert!(!text.contains("999"), "{text}");
        assert_eq!(text.matches("ate: ").count(), 1, "{text}");
        assert!(text.contains("X-Kept: yes\r\n"), "{text}");
    }

    #[test]
    fn closing_and_http_1_0_keep_alive_are_said() {
        let h = HeaderMap::new();
        let mut dst = BytesMut::new();
        encode_response_head(
            &mut dst,
            StatusCode::OK,
            map_fields(&h),
            ResponseFraming::UntilClose,
            false,
            Version::HTTP_11,
        );
        assert!(String::from_utf8_lossy(&dst).contains("connection: close\r\n"));
        dst.clear();
        encode_response_head(
            &mut dst,
            StatusCode::OK,
            map_fields(&h),
            ResponseFraming::Length(0),
            true,
            Version::HTTP_10,
        );
        assert!(String::from_utf8_lossy(&dst).contains("connection: keep-alive\r\n"));
    }

    #[test]
    fn an_absolute_target_is_sent_in_origin_form() {
        let mut dst = BytesMut::new();
        let uri: Uri = "http://catalog:8080/p?q=1".parse().expect("uri");
        encode_request_head(&mut dst, &Method::GET, &uri, std::iter::empty(), None);
        assert!(dst.starts_with(b"GET /p?q=1 HTTP/1.1\r\n"));
        dst.clear();
        let uri: Uri = "http://catalog:8080".parse().expect("uri");
        encode_request_head(&mut dst, &Method::GET, &uri, std::iter::empty(), None);
        assert!(dst.starts_with(b"GET / HTTP/1.1\r\n"));
    }

    #[test]
    fn a_request_head_round_trips_through_the_parser() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("catalog"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let uri: Uri = "/v1/items?page=2".parse().expect("uri");
        let mut dst = BytesMut::new();
        encode_request_head(
            &mut dst,
            &Method::PUT,
            &uri,
            map_fields(&h),
            Some(1234567890),
        );
        let parsed = parse_request(&mut dst).expect("valid").expect("complete");
        assert_eq!(parsed.parts.method, Method::PUT);
        assert_eq!(parsed.parts.uri, "/v1/items?page=2");
        assert_eq!(parsed.parts.headers[header::HOST], "catalog");
        assert_eq!(parsed.body, BodyLength::Known(1234567890));
    }
}
