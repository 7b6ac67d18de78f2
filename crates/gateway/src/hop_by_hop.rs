//! Fields that belong to one connection and are never forwarded (RFC 9110
//! §7.6.1), in either direction.

use http::{HeaderMap, HeaderName};
use mortar_h1::Fields;

/// Whether `name` (any case) is a field that belongs to one connection and
/// is never forwarded (RFC 9110 §7.6.1).
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    let is = |hop: &[u8]| name.eq_ignore_ascii_case(hop);
    match name.len() {
        2 => is(b"te"),
        7 => is(b"trailer") || is(b"upgrade"),
        10 => is(b"connection") || is(b"keep-alive"),
        17 => is(b"transfer-encoding"),
        18 => is(b"proxy-authenticate"),
        19 => is(b"proxy-authorization"),
        _ => false,
    }
}

/// The fields of an instance's answer to pass on: all but the hop-by-hop
/// ones and those its `Connection` field names.
pub(crate) fn passed_fields(fields: &Fields) -> impl Iterator<Item = (&[u8], &[u8])> {
    let named: Vec<&[u8]> = fields
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, value)| listed_in_connection(value))
        .collect();
    fields.iter().filter(move |(name, _)| {
        !is_hop_by_hop(name) && !named.iter().any(|n| n.eq_ignore_ascii_case(name))
    })
}

/// Removes the hop-by-hop fields of `headers`, and those its `Connection`
/// field names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass of cheap name comparisons; most messages carry none.
    let hop = |name: &HeaderName| is_hop_by_hop(name.as_str().as_bytes());
    if !headers.keys().any(hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|v| listed_in_connection(v.as_bytes()))
        .filter_map(|n| HeaderName::from_bytes(n).ok())
        .collect();
    let listed: Vec<HeaderName> = headers.keys().filter(|n| hop(n)).cloned().collect();
    for name in named.into_iter().chain(listed) {
        headers.remove(name);
    }
}

/// The field names a `Connection` field's `value` lists.
fn listed_in_connection(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_not_passed_on() {
        let mut h = HeaderMap::new();
        h.append("content-type", "text/plain".parse().expect("value"));
        h.append("connection", "x-private, close".parse().expect("value"));
        h.append("keep-alive", "timeout=5".parse().expect("value"));
        h.append("x-private", "secret".parse().expect("value"));
        h.append("x-public", "1".parse().expect("value"));
        let fields = Fields::from_header_map(&h);
        let names: Vec<&[u8]> = passed_fields(&fields).map(|(n, _)| n).collect();
        assert_eq!(names, [&b"content-type"[..], &b"x-public"[..]]);
    }

    #[test]
    fn a_map_loses_the_same_fields() {
        let mut h = HeaderMap::new();
        h.append("content-type", "text/plain".parse().expect("value"));
        h.append("Connection", "X-Private".parse().expect("value"));
        h.append("x-private", "secret".parse().expect("value"));
        h.append("transfer-encoding", "chunked".parse().expect("value"));
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type"]);
    }

    #[test]
    fn hop_by_hop_names_are_recognised_in_any_case() {
        for name in ["TE", "Trailer", "upgrade", "Connection", "Keep-Alive"] {
            assert!(is_hop_by_hop(name.as_bytes()), "{name}");
        }
        for name in [
            "Transfer-Encoding",
            "proxy-authenticate",
            "Proxy-Authorization",
        ] {
            assert!(is_hop_by_hop(name.as_bytes()), "{name}");
        }
        assert!(!is_hop_by_hop(b"content-type"));
        assert!(!is_hop_by_hop(b"tk"));
    }
}
