//! The walk over a spanned TOML document that checks it against the manifest
//! format and builds the typed [`Manifest`], collecting every error on the
//! way rather than stopping at the first.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;
use toml::de::DeTable;

use crate::error::{LoadError, ManifestErrors};
use crate::model::{
    AppSpec, BusApi, BusSpec, DEFAULT_GRACE_PERIOD, DEFAULT_INSTANCES, DEFAULT_STARTUP_TIMEOUT,
    DeploySpec, GatewaySpec, HealthSpec, MAX_INSTANCES, MAX_RAPID_CRASHES, MAX_SERVICE_TIMEOUT,
    Manifest, RESERVED_ENV_KEYS, RESERVED_ENV_PREFIX, RestartPolicy, SecretsSpec, ServiceSpec,
    manifest_dir,
};
use crate::order::cycles;
use crate::reader::{Reader, Value, child, entries, is_probable_typo, with_article};

/// Keys of the top-level table.
const ROOT_KEYS: &[&str] = &["app", "services", "gateway", "bus", "secrets"];
/// Keys of `[app]`.
const APP_KEYS: &[&str] = &["name"];
/// Keys of `[services.<name>]`.
const SERVICE_KEYS: &[&str] = &[
    "command",
    "build",
    "instances",
    "depends_on",
    "env",
    "grace_period",
    "startup_timeout",
    "health",
    "restart",
    "secrets",
    "callers",
    "autoscale",
    "deploy",
    "bus_api",
];
/// Keys of `[services.<name>.health]`.
const HEALTH_KEYS: &[&str] = &["ready", "live"];
/// Keys of `[services.<name>.restart]`.
const RESTART_KEYS: &[&str] = &[
    "initial_backoff",
    "max_backoff",
    "max_rapid_crashes",
    "rapid_crash_window",
];

/// How a valid DNS label is described in messages.
const DNS_LABEL: &str =
    "a DNS label (1-63 characters of a-z, 0-9 and '-', not starting or ending with '-')";

impl Manifest {
    /// Parses and validates the manifest text `source`; `path` is where it
    /// came from, used in errors and to derive [`Manifest::dir`].
    ///
    /// On failure, returns every problem found, in source order, each with
    /// line, column and field, so all of them can be fixed in one pass.
    pub fn parse(source: &str, path: &Path) -> Result<Manifest, ManifestErrors> {
        let mut reader = Reader::new(source, path);
        let parsed = match DeTable::parse(source) {
            Ok(root) => read_manifest(&mut reader, &root),
            Err(syntax) => {
                let span = syntax.span().unwrap_or(0..0);
                let mut message = syntax.message().to_owned();
                if message == "duplicate key" {
                    let key = reader.text(span.clone()).trim_matches(['"', '\'']);
                    message =
                        format!("duplicate key {key:?}; a key may appear only once per table");
                }
                reader.error(span, "", message);
                None
            }
        };
        let errors = reader.finish();
        match parsed {
            Some((app, services, gateway, bus, secrets)) if errors.is_empty() => Ok(Manifest {
                path: path.to_path_buf(),
                dir: manifest_dir(path),
                app,
                services,
                gateway,
                bus,
                secrets,
            }),
            _ => Err(ManifestErrors {
                path: path.to_path_buf(),
                errors,
            }),
        }
    }

    /// Reads and validates the manifest file at `path`.
    ///
    /// Errors name `path` as given (what the user typed), while the loaded
    /// [`Manifest::path`] and [`Manifest::dir`] are made absolute, so they
    /// stay valid whatever the working directory of whoever uses them.
    pub fn load(path: &Path) -> Result<Manifest, LoadError> {
        let source = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut manifest = Manifest::parse(&source, path)?;
        if let Ok(absolute) = std::path::absolute(path) {
            manifest.dir = manifest_dir(&absolute);
            manifest.path = absolute;
        }
        Ok(manifest)
    }
}

/// Reads the whole document; `None` if a part could not be built (the
/// reason is recorded).
fn read_manifest(
    r: &mut Reader<'_>,
    root: &Spanned<DeTable<'_>>,
) -> Option<(AppSpec, Vec<ServiceSpec>, GatewaySpec, BusSpec, SecretsSpec)> {
    let (span, root) = (root.span(), root.get_ref());
    r.unknown_keys(root, "", ROOT_KEYS);
    let app = required(
        r,
        root,
        &span,
        "",
        "app",
        ROOT_KEYS,
        "add an [app] table with the app's name",
    )
    .and_then(|value| read_app(r, value));
    let services = required(
        r,
        root,
        &span,
        "",
        "services",
        ROOT_KEYS,
        "at least one service is required; add a [services.<name>] table with a command",
    )
    .and_then(|value| {
        let topics = bus_topics(root);
        read_services(r, value, topics.as_deref())
    });
    let names: Vec<&str> = match root.get("services").and_then(|v| v.get_ref().as_table()) {
        Some(table) => table.keys().map(|k| k.get_ref().as_ref()).collect(),
        None => Vec::new(),
    };
    let gateway = match root.get("gateway") {
        Some(value) => crate::gateway::read_gateway(r, value, &names),
        None => Some(GatewaySpec::default()),
    };
    let bus = match root.get("bus") {
        Some(value) => crate::bus::read_bus(r, value),
        None => Some(BusSpec::default()),
    };
    let secrets = match root.get("secrets") {
        Some(value) => crate::secrets::read_secrets(r, value),
        None => Some(SecretsSpec::default()),
    };
    Some((app?, services?, gateway?, bus?, secrets?))
}

/// The topics `[bus]` lists, for checking autoscale subscriptions against
/// them; `None` when `[bus] topics` is not a valid list (already reported).
fn bus_topics(root: &DeTable<'_>) -> Option<Vec<String>> {
    let Some(bus) = root.get("bus") else {
        return Some(Vec::new());
    };
    let table = bus.get_ref().as_table()?;
    let Some(topics) = table.get("topics") else {
        return Some(Vec::new());
    };
    topics
        .get_ref()
        .as_array()?
        .iter()
        .map(|t| t.get_ref().as_str().map(str::to_owned))
        .collect()
}

/// The value of the required `key` of `table` (at `span`), or an error
/// pointing at the table that lacks it. No error is recorded when a key of
/// the table looks like a typo of `key`: the "unknown key" error already
/// says what to fix.
fn required<'t, 'i>(
    r: &mut Reader<'_>,
    table: &'t DeTable<'i>,
    span: &Range<usize>,
    field: &str,
    key: &str,
    allowed: &[&str],
    hint: &str,
) -> Option<&'t Value<'i>> {
    let value = table.get(key);
    let typo = || {
        table.keys().any(|k| {
            let k = k.get_ref().as_ref();
            !allowed.contains(&k) && is_probable_typo(k, key)
        })
    };
    if value.is_none() && !typo() {
        r.error(
            span.clone(),
            &child(field, key),
            format!("missing required key {key:?}; {hint}"),
        );
    }
    value
}

/// `[app]`.
fn read_app(r: &mut Reader<'_>, value: &Value<'_>) -> Option<AppSpec> {
    let table = r.table(value, "app")?;
    r.unknown_keys(table, "app", APP_KEYS);
    let name = required(
        r,
        table,
        &value.span(),
        "app",
        "name",
        APP_KEYS,
        "the app's name, a DNS label",
    )?;
    let text = r.string(name, "app.name", DNS_LABEL)?;
    if !is_dns_label(text) {
        r.error(
            name.span(),
            "app.name",
            format!("expected {DNS_LABEL}, found {text:?}"),
        );
        return None;
    }
    Some(AppSpec {
        name: text.to_owned(),
    })
}

/// `[services]`: every service, then the dependency cycles among them.
fn read_services(
    r: &mut Reader<'_>,
    value: &Value<'_>,
    topics: Option<&[String]>,
) -> Option<Vec<ServiceSpec>> {
    let table = r.table(value, "services")?;
    if table.is_empty() {
        r.error(
            value.span(),
            "services",
            "at least one service is required; add a [services.<name>] table with a command",
        );
        return None;
    }
    let entries = entries(table);
    let names: Vec<&str> = entries
        .iter()
        .map(|(key, _)| key.get_ref().as_ref())
        .collect();
    let mut services = Vec::with_capacity(entries.len());
    let mut edges = Vec::with_capacity(entries.len());
    for (index, (key, value)) in entries.iter().enumerate() {
        let name = key.get_ref().as_ref();
        let field = child("services", name);
        if !is_dns_label(name) {
            r.error(
                key.span(),
                &field,
                format!("expected a service name that is {DNS_LABEL}, found {name:?}"),
            );
        }
        let (service, service_edges) = read_service(r, value, &field, index, &names, topics);
        services.push(service);
        edges.push(service_edges);
    }
    report_cycles(r, &names, &edges);
    services.into_iter().collect()
}

/// One dependency of a service, remembered for reporting cycles.
struct Edge {
    /// Index of the service depended on.
    to: usize,
    /// Where the dependency is written.
    span: Range<usize>,
    /// Its field path, `services.<name>.depends_on[<i>]`.
    field: String,
}

/// Records one error per dependency cycle, at the dependency closing it.
fn report_cycles(r: &mut Reader<'_>, names: &[&str], edges: &[Vec<Edge>]) {
    let deps: Vec<Vec<usize>> = edges
        .iter()
        .map(|e| e.iter().map(|edge| edge.to).collect())
        .collect();
    for cycle in cycles(&deps) {
        let Some(edge) = edges.get(cycle.from).and_then(|e| e.get(cycle.edge)) else {
            continue;
        };
        let mut path: Vec<&str> = cycle
            .services
            .iter()
            .filter_map(|&i| names.get(i).copied())
            .collect();
        path.extend(path.first().copied());
        r.error(
            edge.span.clone(),
            &edge.field,
            format!("dependency cycle: {}", path.join(" -> ")),
        );
    }
}

/// `[services.<name>]`, the service at `index` of `names`: the spec (if it
/// is valid) and its valid dependencies.
fn read_service(
    r: &mut Reader<'_>,
    value: &Value<'_>,
    field: &str,
    index: usize,
    names: &[&str],
    topics: Option<&[String]>,
) -> (Option<ServiceSpec>, Vec<Edge>) {
    let Some(table) = r.table(value, field) else {
        return (None, Vec::new());
    };
    r.unknown_keys(table, field, SERVICE_KEYS);
    let f = |key: &str| child(field, key);

    let command = required(
        r,
        table,
        &value.span(),
        field,
        "command",
        SERVICE_KEYS,
        r#"the program and its arguments, such as ["./target/release/app"]"#,
    )
    .and_then(|v| r.string_array(v, &f("command"), true));
    // `None`: no build; `Some(None)`: an invalid one.
    let build = table.get("build").map(|v| read_build(r, v, &f("build")));
    let instances = match table.get("instances") {
        Some(v) => r.integer(v, &f("instances"), 1..=MAX_INSTANCES),
        None => Some(DEFAULT_INSTANCES),
    };
    let (depends_on, edges) = match table.get("depends_on") {
        Some(v) => read_depends_on(r, v, &f("depends_on"), index, names),
        None => (Some(Vec::new()), Vec::new()),
    };
    let env = match table.get("env") {
        Some(v) => read_env(r, v, &f("env")),
        None => Some(BTreeMap::new()),
    };
    let secrets = match table.get("secrets") {
        Some(v) => crate::secrets::read_service_secrets(r, v, &f("secrets"), env.as_ref()),
        None => Some(Vec::new()),
    };
    let callers = match table.get("callers") {
        Some(v) => read_callers(r, v, &f("callers"), names).map(Some),
        None => Some(None),
    };
    let limited = |r: &mut Reader<'_>, key: &str, default: Duration| match table.get(key) {
        Some(v) => r.duration(v, &f(key), Some(MAX_SERVICE_TIMEOUT)),
        None => Some(default),
    };
    let grace_period = limited(r, "grace_period", DEFAULT_GRACE_PERIOD);
    let startup_timeout = limited(r, "startup_timeout", DEFAULT_STARTUP_TIMEOUT);
    let health = match table.get("health") {
        Some(v) => read_health(r, v, &f("health")),
        None => Some(HealthSpec::default()),
    };
    let restart = match table.get("restart") {
        Some(v) => read_restart(r, v, &f("restart")),
        None => Some(RestartPolicy::default()),
    };
    // `None`: not autoscaled; `Some(None)`: an invalid autoscale table.
    let autoscale = table.get("autoscale").map(|v| {
        let explicit = table
            .get("instances")
            .and_then(|at| instances.map(|n| (at, n)));
        crate::autoscale::read_autoscale(r, v, &f("autoscale"), topics, explicit)
    });
    let deploy = match table.get("deploy") {
        Some(v) => crate::deploy::read_deploy(r, v, &f("deploy")),
        None => Some(DeploySpec::default()),
    };
    let bus_api = match table.get("bus_api") {
        None => Some(BusApi::Native),
        Some(v) => {
            const EXPECTED: &str =
                r#""native" (the SDK's bus client) or "http" (the HTTP bus API)"#;
            let text = r.string(v, &f("bus_api"), EXPECTED);
            let api = text.and_then(BusApi::parse);
            if let (Some(text), None) = (text, api) {
                r.error(
                    v.span(),
                    &f("bus_api"),
                    format!("expected {EXPECTED}, found {text:?}"),
                );
            }
            api
        }
    };
    // An autoscaled service without `instances` starts at its minimum.
    let instances = match (&autoscale, table.get("instances")) {
        (Some(Some(spec)), None) => Some(spec.min),
        _ => instances,
    };

    let spec = (|| {
        Some(ServiceSpec {
            name: names.get(index)?.to_string(),
            command: command?.into_iter().map(Spanned::into_inner).collect(),
            build: match build {
                None => None,
                Some(build) => Some(build?.into_iter().map(Spanned::into_inner).collect()),
            },
            instances: instances?,
            depends_on: depends_on?,
            env: env?,
            secrets: secrets?,
            callers: callers?,
            grace_period: grace_period?,
            startup_timeout: startup_timeout?,
            health: health?,
            restart: restart?,
            autoscale: match autoscale {
                None => None,
                Some(spec) => Some(spec?),
            },
            deploy: deploy?,
            bus_api: bus_api?,
        })
    })();
    (spec, edges)
}

/// `build`: like `command`, but arguments may be empty strings; the program
/// may not.
fn read_build(r: &mut Reader<'_>, value: &Value<'_>, field: &str) -> Option<Vec<Spanned<String>>> {
    let build = r.string_array(value, field, false)?;
    match build.first() {
        Some(program) if program.get_ref().is_empty() => {
            r.error(
                program.span(),
                &format!("{field}[0]"),
                "expected a program name, found an empty string",
            );
            None
        }
        _ => Some(build),
    }
}

/// `depends_on`: names of other services of this manifest. Returns the
/// names (duplicates dropped) and the dependencies that can take part in a
/// cycle.
fn read_depends_on(
    r: &mut Reader<'_>,
    value: &Value<'_>,
    field: &str,
    index: usize,
    names: &[&str],
) -> (Option<Vec<String>>, Vec<Edge>) {
    let Some(array) = value.get_ref().as_array() else {
        r.wrong_type(value, field, "an array of service names");
        return (None, Vec::new());
    };
    let mut depends_on: Vec<String> = Vec::new();
    let mut edges = Vec::new();
    let mut ok = true;
    for (i, item) in array.iter().enumerate() {
        let item_field = format!("{field}[{i}]");
        let Some(name) = r.string(item, &item_field, "a service name") else {
            ok = false;
            continue;
        };
        match names.iter().position(|n| *n == name) {
            Some(to) if to == index => {
                r.error(
                    item.span(),
                    &item_field,
                    format!("service {name:?} cannot depend on itself"),
                );
                ok = false;
            }
            Some(to) => {
                if !depends_on.iter().any(|d| d == name) {
                    depends_on.push(name.to_owned());
                    edges.push(Edge {
                        to,
                        span: item.span(),
                        field: item_field,
                    });
                }
            }
            None => {
                r.error(
                    item.span(),
                    &item_field,
                    format!(
                        "unknown service {name:?}; services in this manifest: {}",
                        names.join(", ")
                    ),
                );
                ok = false;
            }
        }
    }
    (ok.then_some(depends_on), edges)
}

/// `callers`: the services (or `gateway`) allowed to call this one over
/// mTLS. Unknown names are errors, so a typo cannot silently lock a
/// caller out.
fn read_callers(
    r: &mut Reader<'_>,
    value: &Value<'_>,
    field: &str,
    names: &[&str],
) -> Option<Vec<String>> {
    let Some(array) = value.get_ref().as_array() else {
        r.wrong_type(value, field, "an array of service names (or \"gateway\")");
        return None;
    };
    let mut callers: Vec<String> = Vec::new();
    let mut ok = true;
    for (i, item) in array.iter().enumerate() {
        let item_field = format!("{field}[{i}]");
        let Some(name) = r.string(item, &item_field, "a service name") else {
            ok = false;
            continue;
        };
        if name != "gateway" && !names.contains(&name) {
            r.error(
                item.span(),
                &item_field,
                format!(
                    "unknown caller {name:?}; expected \"gateway\" or a service of this manifest: {}",
                    names.join(", ")
                ),
            );
            ok = false;
        } else if !callers.iter().any(|c| c == name) {
            callers.push(name.to_owned());
        }
    }
    ok.then_some(callers)
}

/// `env`: extra variables, which may not collide with what mortar sets.
fn read_env(
    r: &mut Reader<'_>,
    value: &Value<'_>,
    field: &str,
) -> Option<BTreeMap<String, String>> {
    let table = r.table(value, field)?;
    let mut env = BTreeMap::new();
    let mut ok = true;
    for (key, value) in entries(table) {
        let name = key.get_ref().as_ref();
        let key_field = child(field, name);
        if let Some(problem) = env_name_problem(name) {
            r.error(key.span(), &key_field, problem);
            ok = false;
        }
        let Some(text) = value.get_ref().as_str() else {
            let found = value.get_ref();
            let mut message = format!(
                "expected a string, found {}",
                with_article(found.type_str())
            );
            if found.is_integer() || found.is_float() || found.is_bool() {
                message.push_str(&format!(
                    "; quote it: {name} = \"{}\"",
                    r.text(value.span())
                ));
            }
            r.error(value.span(), &key_field, message);
            ok = false;
            continue;
        };
        env.insert(name.to_owned(), text.to_owned());
    }
    ok.then_some(env)
}

/// Why `name` cannot be an `env` key, if it cannot.
pub(crate) fn env_name_problem(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        Some(format!(
            "invalid environment variable name {name:?}; expected upper-case letters, digits and '_', not starting with a digit (^[A-Z_][A-Z0-9_]*$)"
        ))
    } else if name.starts_with(RESERVED_ENV_PREFIX) {
        Some(format!(
            "{name:?} is reserved: mortar sets the {RESERVED_ENV_PREFIX}* variables itself"
        ))
    } else if RESERVED_ENV_KEYS.contains(&name) {
        Some(format!(
            "{name:?} is reserved: mortar sets it for every instance"
        ))
    } else {
        None
    }
}

/// `[services.<name>.health]`.
fn read_health(r: &mut Reader<'_>, value: &Value<'_>, field: &str) -> Option<HealthSpec> {
    let table = r.table(value, field)?;
    r.unknown_keys(table, field, HEALTH_KEYS);
    let defaults = HealthSpec::default();
    let mut path = |key: &str, default: String| {
        let Some(value) = table.get(key) else {
            return Some(default);
        };
        const EXPECTED: &str = "an HTTP path starting with '/'";
        let key_field = child(field, key);
        let text = r.string(value, &key_field, EXPECTED)?;
        if !text.starts_with('/') {
            r.error(
                value.span(),
                &key_field,
                format!("expected {EXPECTED}, found {text:?}"),
            );
            return None;
        }
        Some(text.to_owned())
    };
    let ready = path("ready", defaults.ready);
    let live = path("live", defaults.live);
    Some(HealthSpec {
        ready: ready?,
        live: live?,
    })
}

/// `[services.<name>.restart]`.
fn read_restart(r: &mut Reader<'_>, value: &Value<'_>, field: &str) -> Option<RestartPolicy> {
    let table = r.table(value, field)?;
    r.unknown_keys(table, field, RESTART_KEYS);
    let defaults = RestartPolicy::default();
    let duration = |r: &mut Reader<'_>, key: &str, default: Duration| match table.get(key) {
        Some(v) => r.duration(v, &child(field, key), None),
        None => Some(default),
    };
    let initial_backoff = duration(r, "initial_backoff", defaults.initial_backoff);
    let max_backoff = duration(r, "max_backoff", defaults.max_backoff);
    let rapid_crash_window = duration(r, "rapid_crash_window", defaults.rapid_crash_window);
    let max_rapid_crashes = match table.get("max_rapid_crashes") {
        Some(v) => r.integer(v, &child(field, "max_rapid_crashes"), 1..=MAX_RAPID_CRASHES),
        None => Some(defaults.max_rapid_crashes),
    };
    let (initial_backoff, max_backoff) = (initial_backoff?, max_backoff?);
    if max_backoff < initial_backoff {
        let show = |d: Duration| humantime::format_duration(d).to_string();
        if let Some(max) = table.get("max_backoff") {
            r.error(
                max.span(),
                &child(field, "max_backoff"),
                format!(
                    "expected a duration of at least initial_backoff ({}), found {:?}",
                    show(initial_backoff),
                    show(max_backoff)
                ),
            );
        } else if let Some(initial) = table.get("initial_backoff") {
            r.error(
                initial.span(),
                &child(field, "initial_backoff"),
                format!(
                    "expected a duration of at most max_backoff ({}, the default), found {:?}",
                    show(max_backoff),
                    show(initial_backoff)
                ),
            );
        }
        return None;
    }
    Some(RestartPolicy {
        initial_backoff,
        max_backoff,
        max_rapid_crashes: max_rapid_crashes?,
        rapid_crash_window: rapid_crash_window?,
    })
}

/// Whether `name` is a DNS label: 1-63 characters of `a-z`, `0-9` and `-`,
/// not starting or ending with `-`. App and service names end up in host
/// names and file names, so they must be safe in both.
fn is_dns_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests;
