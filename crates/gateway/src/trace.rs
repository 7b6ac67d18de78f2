//! W3C trace context: keep the client's trace id, or start a trace, and
//! give the upstream hop its own parent id.

use http::HeaderValue;
use http::header::Entry;
use rand::RngCore;

/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";

/// [`TRACEPARENT`] as a header name, so the hot path never parses it.
pub(crate) const TRACEPARENT_NAME: http::HeaderName = http::HeaderName::from_static(TRACEPARENT);

/// Replaces the `traceparent` of `headers` with [`next_hop`]'s, and
/// returns it. Through the map's entry: one lookup rather than a get and an
/// insert.
pub(crate) fn replace(headers: &mut http::HeaderMap) -> HeaderValue {
    match headers.entry(TRACEPARENT_NAME) {
        Entry::Vacant(empty) => empty.insert(next_hop(None)).clone(),
        Entry::Occupied(mut sent) => {
            let next = next_hop(Some(sent.get()));
            sent.insert(next.clone());
            next
        }
    }
}

/// The `traceparent` to send upstream for a request that came with
/// `incoming` (kept trace id and flags, new parent id), or a new trace.
///
/// Written as hex into a fixed buffer: it runs on every request, and
/// formatting through `format!` cost more than the rest of this function.
pub(crate) fn next_hop(incoming: Option<&HeaderValue>) -> HeaderValue {
    let mut rng = rand::rng();
    // "00-" trace(32) "-" parent(16) "-" flags(2)
    let mut out = [0u8; 55];
    out[..3].copy_from_slice(b"00-");
    match incoming.and_then(|v| v.to_str().ok()).and_then(parse) {
        Some((trace, flags)) => {
            out[3..35].copy_from_slice(trace.as_bytes());
            out[53..55].copy_from_slice(flags.as_bytes());
        }
        None => {
            let trace = (u128::from(non_zero(&mut rng)) << 64) | u128::from(rng.next_u64());
            write_hex(&mut out[3..35], &trace.to_be_bytes());
            out[53..55].copy_from_slice(b"01");
        }
    }
    out[35] = b'-';
    write_hex(&mut out[36..52], &non_zero(&mut rng).to_be_bytes());
    out[52] = b'-';
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| {
        HeaderValue::from_static("00-00000000000000000000000000000001-0000000000000001-01")
    })
}

/// A random non-zero `u64` (an all-zero id is invalid). Drawn directly
/// rather than from a range: range sampling cost more than the rest of
/// [`next_hop`].
fn non_zero(rng: &mut impl RngCore) -> u64 {
    loop {
        let v = rng.next_u64();
        if v != 0 {
            return v;
        }
    }
}

/// Writes `bytes` as lowercase hex into `out` (twice their length).
fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// (trace id, flags) of a valid version-00 header.
fn parse(v: &str) -> Option<(&str, &str)> {
    let mut parts = v.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = version == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    ok.then_some((trace, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_trace_id_and_replaces_the_parent() {
        let incoming =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let out = next_hop(Some(&incoming));
        let out = out.to_str().unwrap();
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(out.ends_with("-01"));
        assert!(!out.contains("00f067aa0ba902b7"));
    }

    #[test]
    fn replace_sets_the_next_hop_whether_or_not_one_came() {
        let mut h = http::HeaderMap::new();
        let started = replace(&mut h);
        assert_eq!(h[TRACEPARENT_NAME], started);
        let next = replace(&mut h);
        assert_eq!(h.get_all(TRACEPARENT_NAME).iter().count(), 1);
        assert_eq!(h[TRACEPARENT_NAME], next);
        let trace_id = |v: &HeaderValue| v.to_str().expect("ascii")[3..35].to_owned();
        assert_eq!(trace_id(&next), trace_id(&started));
        assert_ne!(next, started);
    }

    #[test]
    fn hex_is_zero_padded_lowercase() {
        let mut out = [0u8; 16];
        write_hex(&mut out, &0xab_cdef_u64.to_be_bytes());
        assert_eq!(&out, b"0000000000abcdef");
    }

    #[test]
    fn starts_a_trace_when_missing_or_invalid() {
        for bad in [
            None,
            Some(HeaderValue::from_static("garbage")),
            Some(HeaderValue::from_static(
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            )),
        ] {
            let out = next_hop(bad.as_ref());
            assert!(parse(out.to_str().unwrap()).is_some(), "{out:?}");
        }
        assert_ne!(next_hop(None), next_hop(None), "ids must be random");
    }
}
