//! Which old segments may go: those past retention (by age or total size) that every
//! group has acknowledged. The active segment always stays. Unacknowledged messages are
//! never removed, so a stuck group holds disk rather than losing work.

use std::time::Duration;

use crate::log::SegmentInfo;

/// How many of the oldest `segments` to remove.
///
/// `min_floor` is the lowest acked low-watermark over all groups (`None`: no groups).
pub(crate) fn removable(
    segments: &[SegmentInfo],
    min_floor: Option<u64>,
    now_ms: u64,
    max_age: Option<Duration>,
    max_bytes: Option<u64>,
) -> usize {
    let mut total: u64 = segments.iter().map(|s| s.size).sum();
    let mut count = 0;
    for segment in segments.iter().take(segments.len().saturating_sub(1)) {
        let acked = min_floor.is_none_or(|floor| floor >= segment.next_offset);
        let too_old = max_age.is_some_and(|age| {
            let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
            now_ms.saturating_sub(segment.last_publish_ms) > age_ms
        });
        let too_big = max_bytes.is_some_and(|limit| total > limit);
        if !(acked && (too_old || too_big)) {
            break;
        }
        total -= segment.size;
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: u64, next_offset: u64, size: u64, last_publish_ms: u64) -> SegmentInfo {
        SegmentInfo {
            base,
            next_offset,
            size,
            last_publish_ms,
        }
    }

    #[test]
    fn removes_old_acked_segments_but_never_the_active_one() {
        let segments = [
            seg(0, 10, 100, 1_000),
            seg(10, 20, 100, 2_000),
            seg(20, 25, 50, 3_000),
        ];
        let day = Some(Duration::from_millis(500));
        assert_eq!(removable(&segments, None, 10_000, day, None), 2);
        assert_eq!(removable(&segments, Some(15), 10_000, day, None), 1);
        assert_eq!(removable(&segments, Some(0), 10_000, day, None), 0);
        assert_eq!(removable(&segments, None, 2_200, day, None), 1);
        assert_eq!(removable(&segments, None, 10_000, None, None), 0);
    }

    #[test]
    fn size_retention_removes_oldest_until_under_the_limit() {
        let segments = [seg(0, 10, 100, 1), seg(10, 20, 100, 1), seg(20, 25, 50, 1)];
        assert_eq!(removable(&segments, None, 2, None, Some(100)), 2);
        assert_eq!(removable(&segments, None, 2, None, Some(160)), 1);
        assert_eq!(removable(&segments, Some(10), 2, None, Some(100)), 1);
        assert_eq!(removable(&segments, None, 2, None, Some(250)), 0);
    }
}
