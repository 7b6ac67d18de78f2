//! Topic and group names: they become file names, so they are kept to a safe alphabet.

use crate::BusError;

/// Longest topic or group name a user may choose.
pub const MAX_NAME_LEN: usize = 128;

/// Checks a topic or group name (`what` names which, for the error) against
/// `[a-z0-9._-]{1,128}`, refusing a leading '.' (which would allow `.` and `..` as
/// directory names). Servers may call it to refuse bad names before any I/O.
pub fn validate(what: &'static str, name: &str) -> Result<(), BusError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(BusError::InvalidName {
            what,
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet_and_refuses_the_rest() {
        assert!(validate("topic", "orders.v2_eu-1").is_ok());
        assert!(validate("topic", &"a".repeat(128)).is_ok());
        for bad in [
            "",
            "..",
            ".hidden",
            "Orders",
            "a/b",
            "a b",
            &"a".repeat(129),
        ] {
            assert!(validate("topic", bad).is_err(), "{bad:?} was accepted");
        }
    }
}
