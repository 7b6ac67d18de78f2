//! Bearer credentials the node issues for its own APIs (admin, registry,
//! bus): one admin token for one-off commands (kept in a 0600 file in the
//! data directory) and one token per running instance (given in its
//! environment, replaced at every launch).

use std::collections::HashMap;
use std::path::Path;
use std::sync::RwLock;

use crate::TlsError;

/// Environment variable: the instance's credential for the node's APIs
/// (registry, endpoint report); the supervisor also sets
/// `MORTAR_BUS_TOKEN` to it for the embedded bus.
pub const NODE_TOKEN_ENV: &str = "MORTAR_NODE_TOKEN";

/// The file in the data directory holding the admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Who presented a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The operator (the CLI): every API.
    Admin,
    /// A running instance, by id: the registry, the bus and reporting its
    /// own endpoint.
    Instance(String),
}

/// The tokens the node has issued.
pub struct Credentials {
    admin: String,
    /// token → instance id.
    instances: RwLock<HashMap<String, String>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

/// 32 random bytes, hex: unguessable, fine in a header or an env var.
fn random_token() -> Result<String, TlsError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TlsError::Pem {
            path: "<random>".into(),
            reason: "the system random generator failed".into(),
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares without stopping at the first difference, so timing does not
/// reveal how much of a guess was right.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Credentials {
    /// A fresh admin token, written to `<data_dir>/admin.token` (0600).
    pub fn create(data_dir: &Path) -> Result<Credentials, TlsError> {
        let admin = random_token()?;
        crate::ca::write_atomic(&data_dir.join(ADMIN_TOKEN_FILE), admin.as_bytes(), 0o600)?;
        Ok(Credentials {
            admin,
            instances: RwLock::default(),
        })
    }

    /// Reads the admin token a running node wrote into `data_dir`.
    pub fn read_admin_token(data_dir: &Path) -> Result<String, TlsError> {
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_owned())
            .map_err(|source| TlsError::Io { path, source })
    }

    /// Issues a new token for `instance`, revoking its previous one.
    pub fn issue(&self, instance: &str) -> Result<String, TlsError> {
        let token = random_token()?;
        let mut map = self.instances.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, id| id != instance);
        map.insert(token.clone(), instance.to_owned());
        Ok(token)
    }

    /// Who `token` belongs to, if anyone.
    pub fn check(&self, token: &str) -> Option<Role> {
        if same(token, &self.admin) {
            return Some(Role::Admin);
        }
        let map = self.instances.read().unwrap_or_else(|p| p.into_inner());
        map.get(token).map(|id| Role::Instance(id.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tokens_are_checked_and_reissuing_revokes_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let creds = Credentials::create(dir.path()).unwrap();
        let admin = Credentials::read_admin_token(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(ADMIN_TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(creds.check(&admin), Some(Role::Admin));
        let first = creds.issue("catalog-1").unwrap();
        assert_eq!(
            creds.check(&first),
            Some(Role::Instance("catalog-1".into()))
        );
        let second = creds.issue("catalog-1").unwrap();
        assert_eq!(creds.check(&first), None);
        assert!(creds.check(&second).is_some());
        assert_eq!(creds.check(""), None);
        assert_eq!(creds.check("nope"), None);
    }
}
