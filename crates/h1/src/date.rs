//! The `Date` field, formatted once a second per thread rather than per
//! response.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};

thread_local! {
    static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Appends now, as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub(crate) fn put_http_date(dst: &mut BytesMut) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(at, text)| {
        if *at != second {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        dst.put_slice(text.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_date_parses_back_to_now() {
        let mut dst = bytes::BytesMut::new();
        super::put_http_date(&mut dst);
        let text = std::str::from_utf8(&dst).expect("ascii");
        let parsed = httpdate::parse_http_date(text).expect("an HTTP date");
        let skew = std::time::SystemTime::now()
            .duration_since(parsed)
            .unwrap_or_default();
        assert!(skew.as_secs() <= 2);
    }
}
