//! Waiting for a condition, with a generous deadline: the machine is shared
//! and slow at times, so tests wait for behaviour, never for a fixed time.

use std::time::{Duration, Instant};

/// Polls `probe` every 20 ms until it returns `Some`, or panics after
/// `timeout` with `what` in the message.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
