//! The app's secrets at launch: decrypt the secrets file once, before
//! anything starts, and pick for each service exactly the secrets its
//! manifest entry names.

use std::collections::BTreeMap;
use std::path::Path;

use mortar_manifest::Manifest;
use mortar_secrets::{Identity, Secrets, SecretsError, SecretsFile};

use crate::node::NodeError;

/// Each service's secrets, by service name; empty when no service names
/// any (then neither the file nor a key is needed).
///
/// Fails, before anything is started, when a key is needed and not given,
/// when the file cannot be decrypted, or when a service names a secret the
/// file does not hold (every such service and name is listed).
pub(crate) fn for_services(
    manifest: &Manifest,
    key: Option<&Path>,
    cert: Option<&Path>,
) -> Result<BTreeMap<String, Secrets>, NodeError> {
    let wanting: Vec<_> = manifest
        .services
        .iter()
        .filter(|s| !s.secrets.is_empty())
        .collect();
    if wanting.is_empty() {
        return Ok(BTreeMap::new());
    }
    let file = SecretsFile::new(manifest.secrets_file());
    let Some(key) = key else {
        return Err(NodeError::SecretsKeyMissing {
            file: file.path().to_owned(),
            services: wanting.iter().map(|s| s.name.clone()).collect(),
        });
    };
    let identity = Identity::load(key, cert)?;
    let all = file.open(&identity)?;
    let mut chosen = BTreeMap::new();
    let mut missing = Vec::new();
    for service in wanting {
        match all.select(service.secrets.iter().map(String::as_str)) {
            Ok(secrets) => {
                chosen.insert(service.name.clone(), secrets);
            }
            Err(names) => missing.extend(names.into_iter().map(|n| (service.name.clone(), n))),
        }
    }
    if !missing.is_empty() {
        return Err(SecretsError::Missing {
            path: file.path().to_owned(),
            missing,
            available: all.names().map(str::to_owned).collect(),
        }
        .into());
    }
    for (service, secrets) in &chosen {
        tracing::info!(
            managed_service = %service,
            secrets = %secrets.names().collect::<Vec<_>>().join(","),
            file = %file.path().display(),
            "secrets decrypted for the service (values are never logged)"
        );
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn manifest(dir: &Path, body: &str) -> Manifest {
        let path = dir.join("mortar.toml");
        std::fs::write(&path, format!("[app]\nname = \"shop\"\n{body}")).unwrap();
        Manifest::load(&path).unwrap()
    }

    #[test]
    fn no_service_with_secrets_needs_no_file_and_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(dir.path(), "[services.a]\ncommand = [\"a\"]\n");
        assert!(for_services(&m, None, None).unwrap().is_empty());
    }

    #[test]
    fn a_missing_key_names_the_file_and_the_services() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(
            dir.path(),
            "[services.a]\ncommand = [\"a\"]\nsecrets = [\"X\"]\n[services.b]\ncommand = [\"b\"]\n",
        );
        let e = for_services(&m, None, None).unwrap_err().to_string();
        assert!(e.contains("secrets.cms") && e.contains("a"), "{e}");
        assert!(e.contains("MORTAR_SECRETS_KEY"), "{e}");
    }
}
