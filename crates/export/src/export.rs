//! The export itself: one YAML file per service plus the Ingress, and the
//! notes on what the cluster will not do as the node does.

use std::path::{Path, PathBuf};

use mortar_manifest::{BusApi, Manifest, ServiceSpec, Strategy};
use serde_json::Value;

use crate::ExportError;
use crate::autoscale::scaled_object;
use crate::config::{bus_bridge_secret_name, config_map, plain_env, secret_name};
use crate::ingress::ingress;
use crate::object::Owner;
use crate::options::ExportOptions;
use crate::service::{preview_service_name, service};
use crate::workload::workload;

/// One file of the export: a YAML stream of objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFile {
    /// The file name, e.g. `catalog.yaml`.
    pub name: String,
    /// `---`-separated YAML documents.
    pub contents: String,
}

/// The manifests for one app, ready for `kubectl apply -f DIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The files, services in manifest order, then `ingress.yaml`.
    pub files: Vec<ExportFile>,
    /// What the manifest asks for that the exported objects do not do, one
    /// line each, for the operator to handle (docs/scale-out.md).
    pub notes: Vec<String>,
}

/// Turns `manifest` into Kubernetes objects.
pub fn kubernetes(manifest: &Manifest, options: &ExportOptions) -> Result<Export, ExportError> {
    let names: Vec<&str> = manifest.services.iter().map(|s| s.name.as_str()).collect();
    options.check(&names)?;
    let app = manifest.app.name.as_str();
    let namespace = options.namespace.as_deref();
    let mut files = Vec::new();
    let mut notes = Vec::new();
    for spec in &manifest.services {
        let owner = Owner {
            app,
            service: &spec.name,
            namespace,
        };
        let mut objects = vec![config_map(
            &owner,
            &plain_env(app, spec, &manifest.bus, options),
        )];
        objects.push(workload(
            &owner,
            spec,
            &options.image(app, &spec.name),
            &options.mortar_image(),
        ));
        objects.push(service(&owner, &spec.name));
        if spec.deploy.strategy == Strategy::BlueGreen {
            objects.push(service(&owner, &preview_service_name(&spec.name)));
        }
        if let Some(autoscale) = &spec.autoscale {
            objects.push(scaled_object(
                &owner,
                autoscale,
                spec.deploy.strategy,
                options,
            ));
        }
        notes.extend(service_notes(app, spec));
        files.push(ExportFile {
            name: format!("{}.yaml", spec.name),
            contents: yaml_stream(&objects)?,
        });
    }
    if let Some(ingress) = ingress(app, namespace, &manifest.gateway) {
        files.push(ExportFile {
            name: "ingress.yaml".into(),
            contents: yaml_stream(&[ingress])?,
        });
        notes.extend(gateway_notes(manifest));
    }
    Ok(Export { files, notes })
}

impl Export {
    /// Writes every file into `dir`, creating it if needed.
    pub fn write_to(&self, dir: &Path) -> Result<Vec<PathBuf>, ExportError> {
        std::fs::create_dir_all(dir).map_err(|source| ExportError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        self.files
            .iter()
            .map(|file| {
                let path = dir.join(&file.name);
                std::fs::write(&path, &file.contents)
                    .map(|()| path.clone())
                    .map_err(|source| ExportError::Write { path, source })
            })
            .collect()
    }

    /// Every file as one YAML stream, each introduced by a `# <name>`
    /// comment: what `mortar export kubernetes` prints without `-o`.
    pub fn to_stream(&self) -> String {
        let mut out = String::new();
        for file in &self.files {
            out.push_str(&format!("# {}\n", file.name));
            out.push_str(&file.contents);
        }
        out
    }
}

/// Objects as `---`-separated YAML documents.
fn yaml_stream(objects: &[Value]) -> Result<String, ExportError> {
    let mut out = String::new();
    for object in objects {
        let text = serde_norway::to_string(object).map_err(|source| ExportError::Yaml {
            object: format!("{} {}", object["kind"], object["metadata"]["name"]),
            source,
        })?;
        out.push_str("---\n");
        out.push_str(&text);
    }
    Ok(out)
}

/// What a service's manifest asks for that its objects do not do.
fn service_notes(app: &str, spec: &ServiceSpec) -> Vec<String> {
    let name = &spec.name;
    let mut notes = Vec::new();
    if !spec.secrets.is_empty() {
        notes.push(format!(
            "{name}: create Secret {} with keys {} before applying (values are never exported)",
            secret_name(app),
            spec.secrets.join(", ")
        ));
    }
    if spec.bus_api == BusApi::Http {
        notes.push(format!(
            "{name}: uses the HTTP bus API, served by a `mortar bus http` sidecar; create Secret {} with key token before applying (e.g. kubectl create secret generic {} --from-literal=token=$(openssl rand -hex 32))",
            bus_bridge_secret_name(app),
            bus_bridge_secret_name(app),
        ));
    }
    if spec.callers.is_some() {
        notes.push(format!(
            "{name}: callers (mTLS caller check) is not exported; enforce it with the mesh's authorization policy"
        ));
    }
    match spec.deploy.strategy {
        Strategy::BlueGreen => notes.push(format!(
            "{name}: blue-green traffic_share ({}%) and the error-rate/p99 verdict are not exported; the preview Service gets no live traffic and promotion is {}",
            spec.deploy.traffic_share,
            if spec.deploy.manual {
                "manual (kubectl argo rollouts promote)"
            } else {
                "after the analysis window"
            }
        )),
        Strategy::Recreate => notes.push(format!(
            "{name}: recreate holds no requests while no instance is up (the gateway's hold_timeout); callers get errors and should retry"
        )),
        Strategy::Rolling => {}
    }
    notes
}

/// What the gateway does that an Ingress does not.
fn gateway_notes(manifest: &Manifest) -> Vec<String> {
    let mut notes = Vec::new();
    for route in manifest.gateway.routes.iter().filter(|r| r.authenticated) {
        notes.push(format!(
            "ingress: route {} is authenticated, but an Ingress checks no access tokens; {} must check them itself, or put an authenticating proxy in front",
            route.prefix, route.service
        ));
    }
    if manifest.gateway.routes.iter().any(|r| r.public) {
        notes.push(
            "ingress: the gateway's cache of public GET responses is not exported; configure caching in the ingress controller or a CDN".to_owned(),
        );
    }
    notes
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn objects(toml: &str) -> Vec<Value> {
        let manifest = Manifest::parse(toml, Path::new("mortar.toml")).unwrap();
        let export = kubernetes(&manifest, &ExportOptions::default()).unwrap();
        export
            .files
            .iter()
            .flat_map(|f| {
                f.contents
                    .split("---\n")
                    .filter(|d| !d.is_empty())
                    .map(|d| serde_norway::from_str::<Value>(d).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn kind<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
        objects.iter().find(|o| o["kind"] == kind).unwrap()
    }

    #[test]
    fn termination_grace_covers_the_drain_pause_and_the_grace_period() {
        let objects = objects(
            r#"
[app]
name = "a"
[services.s]
command = ["./s"]
grace_period = "12s"
[services.s.deploy]
drain_delay = "2500ms"
"#,
        );
        let pod = &kind(&objects, "Deployment")["spec"]["template"]["spec"];
        assert_eq!(pod["terminationGracePeriodSeconds"], 15);
        assert_eq!(
            pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"],
            3
        );
    }

    #[test]
    fn an_autoscaled_blue_green_service_leaves_replicas_to_keda_and_scales_the_rollout() {
        let objects = objects(
            r#"
[app]
name = "a"
[services.s]
command = ["./s"]
[services.s.deploy]
strategy = "blue-green"
[services.s.autoscale]
min = 1
max = 4
subscription = { topic = "t", group = "g" }
target_backlog = 10
[bus]
topics = ["t"]
"#,
        );
        let rollout = kind(&objects, "Rollout");
        assert!(rollout["spec"].get("replicas").is_none());
        let scaled = kind(&objects, "ScaledObject");
        assert_eq!(scaled["spec"]["scaleTargetRef"]["kind"], "Rollout");
        assert_eq!(
            scaled["spec"]["triggers"][0]["metadata"]["stream"],
            "MORTAR_t"
        );
        let services: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "Service")
            .map(|o| &o["metadata"]["name"])
            .collect();
        assert_eq!(services, ["s", "s-preview"]);
    }

    #[test]
    fn an_http_bus_service_gets_the_bus_bridge_beside_it_and_others_do_not() {
        let toml = r#"
[app]
name = "a"
[services.py]
command = ["python3", "py.py"]
bus_api = "http"
[services.rs]
command = ["./rs"]
"#;
        let objects = objects(toml);
        let deployments: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "Deployment")
            .collect();
        let py = &deployments[0]["spec"]["template"]["spec"];
        let bridge = &py["initContainers"][0];
        assert_eq!(bridge["args"], serde_json::json!(["bus", "http"]));
        assert_eq!(bridge["image"], "localhost:5000/mortar:latest");
        // A native sidecar: runs before and after the service.
        assert_eq!(bridge["restartPolicy"], "Always");
        assert_eq!(bridge["readinessProbe"]["httpGet"]["path"], "/health/ready");
        assert_eq!(bridge["ports"][0]["containerPort"], 8090);
        // The bridge and the service share the token, by reference only.
        let token_ref = serde_json::json!({"name": "a-bus-http", "key": "token"});
        let token_of = |env: &Value| {
            env.as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == "MORTAR_BUS_HTTP_TOKEN")
                .map(|e| e["valueFrom"]["secretKeyRef"].clone())
        };
        assert_eq!(token_of(&bridge["env"]), Some(token_ref.clone()));
        assert_eq!(token_of(&py["containers"][0]["env"]), Some(token_ref));
        let configs: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "ConfigMap")
            .collect();
        assert_eq!(
            configs[0]["data"]["MORTAR_BUS_HTTP_URL"],
            "http://127.0.0.1:8090"
        );
        // A service on the SDK's bus client has neither.
        let rs = &deployments[1]["spec"]["template"]["spec"];
        assert!(rs.get("initContainers").is_none(), "{rs}");
        assert!(configs[1]["data"].get("MORTAR_BUS_HTTP_URL").is_none());
        assert!(token_of(&rs["containers"][0]["env"]).is_none());
        // The operator is told to create the token's Secret.
        let manifest = Manifest::parse(toml, Path::new("mortar.toml")).unwrap();
        let export = kubernetes(&manifest, &ExportOptions::default()).unwrap();
        assert!(
            export
                .notes
                .iter()
                .any(|n| n.starts_with("py:") && n.contains("a-bus-http")),
            "{:?}",
            export.notes
        );
    }

    #[test]
    fn secrets_are_references_and_their_names_only() {
        let objects = objects(
            r#"
[app]
name = "a"
[services.s]
command = ["./s"]
secrets = ["API_KEY"]
"#,
        );
        let config = kind(&objects, "ConfigMap");
        assert!(config["data"].get("API_KEY").is_none());
        assert_eq!(config["data"]["MORTAR_SECRET_NAMES"], "API_KEY");
        let env = &kind(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(
            env[1]["valueFrom"]["secretKeyRef"],
            serde_json::json!({"name": "a-secrets", "key": "API_KEY"})
        );
    }
}
