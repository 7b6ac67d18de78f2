//! Topic and group names: they become file names, so they are kept to a safe alphabet.

use crate::BusError;

pub use mortar_bus_proto::names::MAX_NAME_LEN;

/// Checks a topic or group name (`what` names which, for the error) against
/// `[a-z0-9._-]{1,128}`, refusing a leading '.' (which would allow `.` and `..` as
/// directory names). Servers may call it to refuse bad names before any I/O.
pub fn validate(what: &'static str, name: &str) -> Result<(), BusError> {
    let ok = mortar_bus_proto::names::is_valid_name(name);
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
