//! Exponential backoff with full jitter: the wait before retry `n` is drawn
//! uniformly from `[0, min(max, base * 2^n)]`, so retries of many callers
//! spread out instead of arriving in waves.

use std::time::Duration;

use rand::Rng;

/// The ceiling of the wait before retry `attempt` (0 = first retry).
pub fn ceiling(base: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(max).min(max)
}

/// A random wait in `[0, ceiling(base, max, attempt)]`.
pub fn full_jitter(base: Duration, max: Duration, attempt: u32) -> Duration {
    let top = ceiling(base, max, attempt);
    let nanos = u64::try_from(top.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_the_doubling_ceiling() {
        let base = Duration::from_millis(10);
        let max = Duration::from_millis(500);
        for attempt in 0..10 {
            let top = ceiling(base, max, attempt);
            assert!(top <= max);
            for _ in 0..200 {
                assert!(full_jitter(base, max, attempt) <= top);
            }
        }
        assert_eq!(ceiling(base, max, 0), Duration::from_millis(10));
        assert_eq!(ceiling(base, max, 3), Duration::from_millis(80));
        assert_eq!(ceiling(base, max, 40), max);
    }

    #[test]
    fn jitter_is_spread_not_fixed() {
        let base = Duration::from_millis(100);
        let waits: Vec<_> = (0..100).map(|_| full_jitter(base, base, 0)).collect();
        let low = waits.iter().filter(|w| **w < base / 2).count();
        assert!(low > 10 && low < 90, "{low} of 100 below half");
    }
}
