//! Password hashing with argon2id (RFC 9106), off the async threads.
//!
//! Parameters are the `argon2` crate's defaults, which follow OWASP's
//! recommendation for argon2id: 19 MiB of memory, 2 passes, 1 lane. The
//! hash is stored in PHC string form, so parameters can be raised later and
//! old hashes still verify.

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

#[derive(Debug, thiserror::Error)]
pub(crate) enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the hashing task failed: {0}")]
    Task(String),
}

fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// Hashes `password` with a fresh random salt.
pub(crate) async fn hash(password: String) -> Result<String, PasswordError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    })
    .await
    .map_err(|e| PasswordError::Task(e.to_string()))?
}

/// Whether `password` matches `stored` (a PHC string). A stored value that
/// is not a valid hash matches nothing.
pub(crate) async fn verify(password: String, stored: String) -> Result<bool, PasswordError> {
    tokio::task::spawn_blocking(move || match PasswordHash::new(&stored) {
        Ok(parsed) => argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    })
    .await
    .map_err(|e| PasswordError::Task(e.to_string()))
}

/// A real hash of a password nobody knows: verifying against it when the
/// username does not exist costs as much as a real check, so response
/// times do not tell which usernames exist.
pub(crate) async fn decoy() -> String {
    static DECOY: OnceLock<String> = OnceLock::new();
    if let Some(d) = DECOY.get() {
        return d.clone();
    }
    let made = hash(mortar_auth::random_token(24).unwrap_or_default())
        .await
        .unwrap_or_default();
    DECOY.get_or_init(|| made).clone()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verify_only_the_password() {
        let a = hash("correct horse".into()).await.unwrap();
        let b = hash("correct horse".into()).await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(verify("correct horse".into(), a.clone()).await.unwrap());
        assert!(!verify("correct horsE".into(), a).await.unwrap());
        assert!(!verify("x".into(), "not a hash".into()).await.unwrap());
        let d = decoy().await;
        assert!(d.starts_with("$argon2id$"));
        assert!(!verify(String::new(), d).await.unwrap());
    }
}
