//! How long a nacked message waits before redelivery when the consumer names no delay.

use std::time::Duration;

/// The longest automatic nack delay.
pub const MAX_NACK_DELAY: Duration = Duration::from_secs(300);

/// `base * 2^(attempt-1)`, capped at [`MAX_NACK_DELAY`]: a message that keeps failing
/// is retried less and less often instead of spinning a consumer.
pub fn nack_delay(base: Duration, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(31);
    base.saturating_mul(1u32 << exponent).min(MAX_NACK_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_per_attempt_and_caps_at_five_minutes() {
        let base = Duration::from_millis(500);
        assert_eq!(nack_delay(base, 0), base);
        assert_eq!(nack_delay(base, 1), base);
        assert_eq!(nack_delay(base, 2), Duration::from_secs(1));
        assert_eq!(nack_delay(base, 4), Duration::from_secs(4));
        assert_eq!(nack_delay(base, 20), MAX_NACK_DELAY);
        assert_eq!(nack_delay(base, u32::MAX), MAX_NACK_DELAY);
    }
}
