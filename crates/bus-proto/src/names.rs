//! The rule for topic and group names, shared by every backend so a name
//! valid on one bus is valid on all.

/// Longest topic or group name.
pub const MAX_NAME_LEN: usize = 128;

/// Whether `name` matches `[a-z0-9._-]{1,128}` without a leading `.`: names
/// become file names (embedded broker) and stream names (JetStream).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}
