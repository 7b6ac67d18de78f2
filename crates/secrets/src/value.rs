//! [`SecretValue`]: a secret's text that cannot be printed by accident.

use std::fmt;

use zeroize::Zeroizing;

/// What `{:?}` and `{}` print instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// The value of one secret.
///
/// Why a type and not a `String`: a secret must never end up in a log line,
/// an error message or a panic by accident. `Debug` and `Display` print
/// [`REDACTED`], there is no `Serialize`, and the only way to the text is
/// [`SecretValue::expose`] — easy to find in review. The memory is zeroed
/// when the value is dropped, so plaintext does not linger in freed heap
/// pages (a best effort: the OS, the allocator or a child's environment may
/// still hold copies).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    /// Wraps `value`; from here on it prints as [`REDACTED`].
    pub fn new(value: impl Into<String>) -> Self {
        SecretValue(Zeroizing::new(value.into()))
    }

    /// The plaintext. Call it only where the value must leave the process
    /// (a child's environment, an encrypted file, an explicit `decrypt`).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its length in bytes, for limits and messages that must not show it.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretValue {
    fn from(value: String) -> Self {
        SecretValue::new(value)
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let value = SecretValue::new("hunter2");
        assert_eq!(format!("{value:?}"), REDACTED);
        assert_eq!(format!("{value}"), REDACTED);
        assert_eq!(format!("{value:#?}"), REDACTED);
        let nested = Some(vec![("DB_PASSWORD", value.clone())]);
        assert!(!format!("{nested:?}").contains("hunter2"));
        assert_eq!(value.expose(), "hunter2");
        assert_eq!(value.len(), 7);
        assert!(!value.is_empty());
    }
}
