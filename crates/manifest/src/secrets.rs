//! `[secrets]` and `services.<name>.secrets`: where the app's encrypted
//! secrets are, and which of them each service gets.
//!
//! Only names live in the manifest; the values are in the CMS file and are
//! checked against these names when the node decrypts it at launch.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::model::SecretsSpec;
use crate::parse::env_name_problem;
use crate::reader::{Reader, Value, child};

/// Keys of `[secrets]`.
const SECRETS_KEYS: &[&str] = &["file"];

/// Reads `[secrets]`.
pub(crate) fn read_secrets(r: &mut Reader<'_>, value: &Value<'_>) -> Option<SecretsSpec> {
    let table = r.table(value, "secrets")?;
    r.unknown_keys(table, "secrets", SECRETS_KEYS);
    let Some(file) = table.get("file") else {
        return Some(SecretsSpec::default());
    };
    const EXPECTED: &str = "a path to the CMS secrets file, relative to the manifest";
    let field = child("secrets", "file");
    let text = r.string(file, &field, EXPECTED)?;
    if text.is_empty() {
        r.error(
            file.span(),
            &field,
            format!("expected {EXPECTED}, found \"\""),
        );
        return None;
    }
    Some(SecretsSpec {
        file: PathBuf::from(text),
    })
}

/// Reads `services.<name>.secrets`: names of secrets, each passed as the
/// environment variable of that name, so each must be a valid one that no
/// `env` entry of the service (already read into `env`) also sets.
pub(crate) fn read_service_secrets(
    r: &mut Reader<'_>,
    value: &Value<'_>,
    field: &str,
    env: Option<&BTreeMap<String, String>>,
) -> Option<Vec<String>> {
    let Some(array) = value.get_ref().as_array() else {
        r.wrong_type(value, field, "an array of secret names");
        return None;
    };
    let mut names = Vec::with_capacity(array.len());
    let mut seen = BTreeSet::new();
    let mut ok = true;
    for (i, item) in array.iter().enumerate() {
        let item_field = format!("{field}[{i}]");
        let Some(name) = r.string(item, &item_field, "a secret name") else {
            ok = false;
            continue;
        };
        let problem = if let Some(problem) = env_name_problem(name) {
            Some(problem.replace("environment variable name", "secret name"))
        } else if !seen.insert(name) {
            Some(format!("secret {name:?} is listed twice"))
        } else if env.is_some_and(|env| env.contains_key(name)) {
            Some(format!(
                "{name:?} is both a secret and an env entry of this service; remove it from env so the secret is what the service gets"
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            r.error(item.span(), &item_field, problem);
            ok = false;
        }
        names.push(name.to_owned());
    }
    ok.then_some(names)
}
