//! Small typed helpers every object uses: metadata, labels and the
//! rounding of durations to the whole seconds Kubernetes counts in.

use std::time::Duration;

use serde_json::{Map, Value, json};

/// Who an object belongs to: its app and service, and the namespace.
pub(crate) struct Owner<'a> {
    pub(crate) app: &'a str,
    pub(crate) service: &'a str,
    pub(crate) namespace: Option<&'a str>,
}

impl Owner<'_> {
    /// The labels that select this service's pods, and no other app's.
    pub(crate) fn selector(&self) -> Value {
        json!({
            "app.kubernetes.io/name": self.service,
            "app.kubernetes.io/part-of": self.app,
        })
    }

    /// The selector plus who made the object.
    pub(crate) fn labels(&self) -> Value {
        let mut labels = self.selector();
        if let Some(map) = labels.as_object_mut() {
            map.insert("app.kubernetes.io/managed-by".into(), "mortar".into());
        }
        labels
    }

    /// `metadata` of an object called `name`.
    pub(crate) fn metadata(&self, name: &str) -> Value {
        metadata(name, self.namespace, self.labels())
    }
}

/// `metadata` with a name, the namespace when given, and labels.
pub(crate) fn metadata(name: &str, namespace: Option<&str>, labels: Value) -> Value {
    let mut meta = Map::new();
    meta.insert("name".into(), name.into());
    if let Some(ns) = namespace {
        meta.insert("namespace".into(), ns.into());
    }
    meta.insert("labels".into(), labels);
    Value::Object(meta)
}

/// An object: `apiVersion`, `kind`, `metadata`, then `spec` or `data`.
pub(crate) fn object(api_version: &str, kind: &str, metadata: Value, body: (&str, Value)) -> Value {
    let mut o = Map::new();
    o.insert("apiVersion".into(), api_version.into());
    o.insert("kind".into(), kind.into());
    o.insert("metadata".into(), metadata);
    o.insert(body.0.into(), body.1);
    Value::Object(o)
}

/// Whole seconds, rounded up: a 500 ms drain must not become 0 s.
pub(crate) fn seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up() {
        assert_eq!(seconds(Duration::from_millis(500)), 1);
        assert_eq!(seconds(Duration::from_secs(10)), 10);
        assert_eq!(seconds(Duration::from_millis(10_001)), 11);
        assert_eq!(seconds(Duration::ZERO), 0);
    }

    #[test]
    fn metadata_has_a_namespace_only_when_given() {
        let owner = Owner {
            app: "shop",
            service: "catalog",
            namespace: None,
        };
        assert!(owner.metadata("catalog").get("namespace").is_none());
        let owner = Owner {
            namespace: Some("prod"),
            ..owner
        };
        assert_eq!(owner.metadata("catalog")["namespace"], "prod");
        assert_eq!(owner.labels()["app.kubernetes.io/managed-by"], "mortar");
    }
}
