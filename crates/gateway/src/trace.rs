//! W3C trace context: keep the client's trace id, or start a trace, and
//! give the upstream hop its own parent id.

use http::HeaderValue;
use rand::Rng;

/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";

/// [`TRACEPARENT`] as a header name, so the hot path never parses it.
pub(crate) const TRACEPARENT_NAME: http::HeaderName = http::HeaderName::from_static(TRACEPARENT);

/// The `traceparent` to send upstream for a request that came with
/// `incoming` (kept trace id and flags, new parent id), or a new trace.
pub(crate) fn next_hop(incoming: Option<&HeaderValue>) -> HeaderValue {
    let mut rng = rand::rng();
    let span: u64 = rng.random_range(1..=u64::MAX);
    let parsed = incoming.and_then(|v| v.to_str().ok()).and_then(parse);
    let value = match parsed {
        Some((trace, flags)) => format!("00-{trace}-{span:016x}-{flags}"),
        None => {
            let trace: u128 = rng.random_range(1..=u128::MAX);
            format!("00-{trace:032x}-{span:016x}-01")
        }
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| {
        HeaderValue::from_static("00-00000000000000000000000000000001-0000000000000001-01")
    })
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
    }
}
