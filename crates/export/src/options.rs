//! What the export needs beyond the manifest: where the images, the bus and
//! the database are in the cluster, and which namespace it goes to.

use std::collections::BTreeMap;

use crate::ExportError;

/// The registry images come from when `--registry` is not given: a local
/// registry such as the one kind and minikube clusters commonly use.
pub const DEFAULT_REGISTRY: &str = "localhost:5000";

/// The bus when `--bus-url` is not given: a NATS Service called `nats` in
/// the same namespace, resolved by the cluster's DNS.
pub const DEFAULT_BUS_URL: &str = "nats://nats:4222";

/// The port every service listens on in its pod (`PORT`); on one machine
/// the node hands out free ports instead, but a pod has its own network.
pub const HTTP_PORT: u16 = 8080;

/// The port of the bus bridge (`mortar bus http`) beside a service whose
/// manifest says `bus_api = "http"`; the service reaches it on the pod's
/// loopback.
pub const BUS_BRIDGE_PORT: u16 = 8090;

/// JetStream replicas of every stream when `--nats-replicas` is not
/// given: three, so an acknowledged publish survives the loss of a server.
pub const DEFAULT_NATS_REPLICAS: u32 = 3;

/// Options of `mortar export kubernetes`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    /// The namespace of every object; `None` leaves it to `kubectl -n`.
    pub namespace: Option<String>,
    /// Registry of the default image `<registry>/<app>-<service>:latest`.
    pub registry: String,
    /// `--image SERVICE=REF` overrides, by service.
    pub images: BTreeMap<String, String>,
    /// The image of the `mortar` binary, which runs the bus bridge beside
    /// `bus_api = "http"` services; `None`: `<registry>/mortar:latest`.
    pub mortar_image: Option<String>,
    /// `MORTAR_BUS_URL` of every service: the cluster's NATS JetStream.
    pub bus_url: String,
    /// `MORTAR_BUS_NATS_REPLICAS`: replicas of the streams the services
    /// create (1 for a single-server NATS, 3 or 5 for a cluster).
    pub nats_replicas: u32,
    /// The PostgreSQL database, without `schema`: each service gets its own
    /// schema (`?schema=<service>`). `None`: `postgres://mortar@postgres:5432/<app>`.
    pub store_url: Option<String>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            namespace: None,
            registry: DEFAULT_REGISTRY.to_owned(),
            images: BTreeMap::new(),
            mortar_image: None,
            bus_url: DEFAULT_BUS_URL.to_owned(),
            nats_replicas: DEFAULT_NATS_REPLICAS,
            store_url: None,
        }
    }
}

/// Parses one `--image SERVICE=REF`.
pub fn parse_image(text: &str) -> Result<(String, String), ExportError> {
    match text.split_once('=') {
        Some((service, image)) if !service.is_empty() && !image.trim().is_empty() => {
            Ok((service.to_owned(), image.trim().to_owned()))
        }
        _ => Err(ExportError::BadImage(text.to_owned())),
    }
}

impl ExportOptions {
    /// Checks the options against the manifest's services, so a typo is an
    /// error rather than a silently ignored override.
    pub(crate) fn check(&self, services: &[&str]) -> Result<(), ExportError> {
        if let Some(ns) = &self.namespace
            && !is_dns_label(ns)
        {
            return Err(ExportError::BadNamespace(ns.clone()));
        }
        for service in self.images.keys() {
            if !services.contains(&service.as_str()) {
                return Err(ExportError::UnknownImageService {
                    service: service.clone(),
                    known: services.join(", "),
                });
            }
        }
        if bus_host(&self.bus_url).is_none() {
            return Err(ExportError::BadBusUrl(self.bus_url.clone()));
        }
        if let Some(url) = &self.store_url {
            let problem = if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                Some("expected a postgres:// URL such as postgres://mortar@postgres:5432/shop")
            } else if url.contains("schema=") {
                Some("leave out ?schema=: every service gets its own schema, named after it")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(ExportError::BadStoreUrl {
                    url: url.clone(),
                    problem: problem.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// The image of `service` of `app`.
    pub(crate) fn image(&self, app: &str, service: &str) -> String {
        self.images.get(service).cloned().unwrap_or_else(|| {
            format!(
                "{}/{app}-{service}:latest",
                self.registry.trim_end_matches('/')
            )
        })
    }

    /// The image of the `mortar` binary (the bus bridge).
    pub(crate) fn mortar_image(&self) -> String {
        self.mortar_image
            .clone()
            .unwrap_or_else(|| format!("{}/mortar:latest", self.registry.trim_end_matches('/')))
    }

    /// `MORTAR_STORE_URL` of `service`: the app's database, the service's
    /// own schema (PostgreSQL schema names take '_' where ours take '-').
    pub(crate) fn store_url(&self, app: &str, service: &str) -> String {
        let base = self
            .store_url
            .clone()
            .unwrap_or_else(|| format!("postgres://mortar@postgres:5432/{app}"));
        let separator = if base.contains('?') { '&' } else { '?' };
        format!("{base}{separator}schema={}", schema_name(service))
    }

    /// Host and port of NATS' monitoring endpoint (8222 on the bus host),
    /// which KEDA's `nats-jetstream` scaler reads consumer lag from.
    pub(crate) fn nats_monitoring(&self) -> String {
        let host = bus_host(&self.bus_url).unwrap_or("nats");
        format!("{host}:8222")
    }
}

/// The PostgreSQL schema of `service`.
pub(crate) fn schema_name(service: &str) -> String {
    service.replace('-', "_")
}

/// The host of a `nats://[user[:pass]@]host[:port]` URL.
fn bus_host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("nats://")?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host_port.split(':').next().unwrap_or_default();
    (!host.is_empty()).then_some(host)
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_default_to_the_registry_and_app_and_can_be_overridden() {
        let mut o = ExportOptions {
            registry: "reg.example/".into(),
            ..ExportOptions::default()
        };
        assert_eq!(
            o.image("shop", "catalog"),
            "reg.example/shop-catalog:latest"
        );
        o.images.insert("catalog".into(), "x/y:1".into());
        assert_eq!(o.image("shop", "catalog"), "x/y:1");
        assert_eq!(o.mortar_image(), "reg.example/mortar:latest");
        o.mortar_image = Some("ghcr.io/x/mortar:0.1".into());
        assert_eq!(o.mortar_image(), "ghcr.io/x/mortar:0.1");
    }

    #[test]
    fn image_flags_must_be_service_equals_ref() {
        assert_eq!(
            parse_image("catalog=r/c:1").ok(),
            Some(("catalog".into(), "r/c:1".into()))
        );
        for bad in ["catalog", "=r/c:1", "catalog=", "catalog= "] {
            let e = parse_image(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("SERVICE=IMAGE"), "{bad}: {e}");
        }
    }

    #[test]
    fn every_service_gets_its_own_schema() {
        let o = ExportOptions {
            store_url: Some("postgres://u@db:5432/shop?sslmode=require".into()),
            ..ExportOptions::default()
        };
        assert_eq!(
            o.store_url("shop", "order-history"),
            "postgres://u@db:5432/shop?sslmode=require&schema=order_history"
        );
        assert_eq!(
            ExportOptions::default().store_url("shop", "catalog"),
            "postgres://mortar@postgres:5432/shop?schema=catalog"
        );
    }

    #[test]
    fn bad_options_are_named() {
        let services = ["catalog"];
        let check = |o: ExportOptions| o.check(&services).err().map(|e| e.to_string());
        let mut o = ExportOptions::default();
        o.images.insert("catalgo".into(), "x".into());
        let e = check(o).unwrap_or_default();
        assert!(e.contains("\"catalgo\"") && e.contains("catalog"), "{e}");
        let e = check(ExportOptions {
            namespace: Some("Shop".into()),
            ..ExportOptions::default()
        });
        assert!(e.unwrap_or_default().contains("DNS label"));
        let e = check(ExportOptions {
            bus_url: "mortar://127.0.0.1:4222".into(),
            ..ExportOptions::default()
        });
        assert!(e.unwrap_or_default().contains("nats://"));
        let e = check(ExportOptions {
            store_url: Some("postgres://db/shop?schema=x".into()),
            ..ExportOptions::default()
        });
        assert!(e.unwrap_or_default().contains("own schema"));
        assert!(check(ExportOptions::default()).is_none());
    }

    #[test]
    fn monitoring_endpoint_is_on_the_bus_host() {
        let o = ExportOptions {
            bus_url: "nats://user:pw@nats.messaging.svc:4222".into(),
            ..ExportOptions::default()
        };
        assert_eq!(o.nats_monitoring(), "nats.messaging.svc:8222");
    }
}
