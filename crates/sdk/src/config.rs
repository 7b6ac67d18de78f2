//! Typed configuration from environment variables (twelve-factor III).
//!
//! Configuration is read once, at start, from a snapshot of the environment.
//! Every problem names the variable, the form that was expected and what was
//! wrong with the value, because the person reading it is usually staring at
//! a deployment manifest, not at this code.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// A configuration variable that is missing or malformed.
///
/// Its `Display` is one line meant for a human: the variable, the expected
/// form and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("config error: {name} is not set; expected {expected}")]
    Missing {
        /// The variable's name.
        name: String,
        /// What a valid value looks like.
        expected: String,
    },
    /// A variable is set but its value cannot be used.
    #[error("config error: {name}={value:?} is invalid; expected {expected}: {problem}")]
    Invalid {
        /// The variable's name.
        name: String,
        /// The value as found (lossily decoded when it was not UTF-8).
        value: String,
        /// What a valid value looks like.
        expected: String,
        /// What is wrong with the value.
        problem: String,
    },
}

impl ConfigError {
    /// The name of the offending variable.
    pub fn variable(&self) -> &str {
        match self {
            ConfigError::Missing { name, .. } | ConfigError::Invalid { name, .. } => name,
        }
    }
}

/// One variable's raw value: text, or bytes that were not UTF-8.
#[derive(Debug, Clone)]
enum Raw {
    Text(String),
    NotUtf8(String),
}

/// A snapshot of environment variables, read once so that configuration
/// cannot change under a running service.
///
/// The variables named in `MORTAR_SECRET_NAMES` (the service's secrets, set
/// by the supervisor) show as `<redacted>` in `Debug` and in
/// [`ConfigError`]s, so a bad secret never reaches a log line.
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, Raw>,
}

/// What a secret's value is shown as.
const REDACTED: &str = "<redacted>";

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_map();
        for (name, raw) in &self.vars {
            if self.is_secret(name) {
                map.entry(name, &format_args!("{REDACTED}"));
            } else {
                map.entry(name, raw);
            }
        }
        map.finish()
    }
}

impl Env {
    /// Snapshots the current process environment.
    pub fn from_process() -> Self {
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| {
                let key = k.into_string().ok()?;
                let raw = match v.into_string() {
                    Ok(text) => Raw::Text(text),
                    Err(bytes) => Raw::NotUtf8(bytes.to_string_lossy().into_owned()),
                };
                Some((key, raw))
            })
            .collect();
        Env { vars }
    }

    /// Builds an environment from pairs; for tests and embedding.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        let vars = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), Raw::Text(v.into())))
            .collect();
        Env { vars }
    }

    /// Whether `name` holds one of the service's secrets (it is listed in
    /// `MORTAR_SECRET_NAMES`), whose value must never be shown.
    pub fn is_secret(&self, name: &str) -> bool {
        self.raw("MORTAR_SECRET_NAMES")
            .is_some_and(|names| names.split(',').any(|n| n.trim() == name))
    }

    /// The raw text of a variable, if set and UTF-8. Empty counts as set.
    pub fn raw(&self, name: &str) -> Option<&str> {
        match self.vars.get(name) {
            Some(Raw::Text(text)) => Some(text),
            _ => None,
        }
    }

    /// Reads a required variable and parses it with `FromStr`.
    ///
    /// `expected` describes the valid form for the error message, e.g.
    /// `"a TCP port number (0-65535)"`.
    pub fn required<T>(&self, name: &str, expected: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.parse_with(name, expected, |s| {
            s.parse::<T>().map_err(|e| e.to_string())
        })?
        .ok_or_else(|| ConfigError::Missing {
            name: name.to_owned(),
            expected: expected.to_owned(),
        })
    }

    /// Reads an optional variable; `None` when unset.
    pub fn optional<T>(&self, name: &str, expected: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.parse_with(name, expected, |s| {
            s.parse::<T>().map_err(|e| e.to_string())
        })
    }

    /// Reads a variable, falling back to `default` when unset.
    pub fn or_default<T>(&self, name: &str, expected: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        Ok(self.optional(name, expected)?.unwrap_or(default))
    }

    /// Reads a human-readable duration such as `10s`, `250ms` or `1m 30s`.
    pub fn duration(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        let expected = "a duration such as 250ms, 10s or 1m";
        Ok(self
            .parse_with(name, expected, |s| {
                humantime::parse_duration(s).map_err(|e| e.to_string())
            })?
            .unwrap_or(default))
    }

    /// Reads a variable with a custom parser that returns a problem text.
    ///
    /// Empty and non-UTF-8 values are rejected before `parse` runs: an empty
    /// value is almost always a templating mistake, not an intent.
    pub fn parse_with<T>(
        &self,
        name: &str,
        expected: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let secret = self.is_secret(name);
        let invalid = |value: &str, problem: String| {
            let (value, problem) = if secret {
                // The parser's message may quote the value too.
                let mut problem = problem;
                for shown in [value, value.trim()] {
                    if !shown.is_empty() {
                        problem = problem.replace(shown, REDACTED);
                    }
                }
                (REDACTED.to_owned(), problem)
            } else {
                (value.to_owned(), problem)
            };
            ConfigError::Invalid {
                name: name.to_owned(),
                value,
                expected: expected.to_owned(),
                problem,
            }
        };
        match self.vars.get(name) {
            None => Ok(None),
            Some(Raw::NotUtf8(lossy)) => Err(invalid(lossy, "the value is not valid UTF-8".into())),
            Some(Raw::Text(text)) if text.trim().is_empty() => {
                Err(invalid(text, "the value is empty".into()))
            }
            Some(Raw::Text(text)) => parse(text.trim()).map(Some).map_err(|p| invalid(text, p)),
        }
    }
}

/// Reads a service's own typed configuration from the environment.
///
/// Implement it for a struct of settings and call [`crate::Context::config`].
pub trait FromEnv: Sized {
    /// Builds the configuration, returning the first bad variable.
    fn from_env(env: &Env) -> Result<Self, ConfigError>;
}

/// The settings every mortar service has, set by the supervisor (or by hand).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// `MORTAR_SERVICE`: the service's name; defaults to the name the code passes.
    pub service: String,
    /// `MORTAR_INSTANCE`: this process's instance id; defaults to `<service>-<pid>`.
    pub instance: String,
    /// `PORT`: the TCP port to bind; 0 asks the OS for a free one.
    pub port: u16,
    /// `MORTAR_BIND_ADDR`: the address to bind; loopback by default.
    pub bind_addr: IpAddr,
    /// `MORTAR_SHUTDOWN_GRACE`: how long in-flight requests may take to finish
    /// after SIGTERM before the process gives up on them.
    pub shutdown_grace: Duration,
    /// `MORTAR_LOG_LEVEL`: a tracing filter such as `info` or `debug,hyper=warn`.
    pub log_level: String,
    /// `MORTAR_NODE_URL`: the node's admin API, to which the bound port is reported.
    pub node_url: Option<String>,
    /// `MORTAR_EXIT_WITH_NODE=stdin`: drain and exit when stdin reaches
    /// end-of-file, which happens when the supervising node dies; so a node
    /// killed with SIGKILL leaves no orphaned instances holding ports.
    pub exit_with_node: bool,
}

/// The default grace period for draining in-flight requests.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl ServiceConfig {
    /// Reads the common settings; `default_service` is used when
    /// `MORTAR_SERVICE` is unset.
    pub fn from_env(env: &Env, default_service: &str) -> Result<Self, ConfigError> {
        let service = env
            .parse_with(
                "MORTAR_SERVICE",
                "a service name of lowercase letters, digits and '-'",
                |s| {
                    if is_dns_label(s) {
                        Ok(s.to_owned())
                    } else {
                        Err("use 1-63 characters of a-z, 0-9 and '-'".to_owned())
                    }
                },
            )?
            .unwrap_or_else(|| default_service.to_owned());
        let instance = env
            .optional::<String>("MORTAR_INSTANCE", "an instance id such as catalog-1")?
            .unwrap_or_else(|| format!("{service}-{}", std::process::id()));
        let port = env.or_default(
            "PORT",
            "a TCP port number (0-65535; 0 = any free port)",
            0u16,
        )?;
        let bind_addr = env.or_default(
            "MORTAR_BIND_ADDR",
            "an IP address such as 127.0.0.1 or ::",
            IpAddr::from([127, 0, 0, 1]),
        )?;
        let shutdown_grace = env.duration("MORTAR_SHUTDOWN_GRACE", DEFAULT_SHUTDOWN_GRACE)?;
        let log_level = env
            .parse_with(
                "MORTAR_LOG_LEVEL",
                "a level (error, warn, info, debug, trace) or filter such as info,hyper=warn",
                |s| {
                    tracing_subscriber::EnvFilter::try_new(s)
                        .map(|_| s.to_owned())
                        .map_err(|e| e.to_string())
                },
            )?
            .unwrap_or_else(|| "info".to_owned());
        let node_url = env.parse_with(
            "MORTAR_NODE_URL",
            "an http:// URL of the mortar node such as http://127.0.0.1:4300",
            |s| match reqwest::Url::parse(s) {
                Ok(url) if url.scheme() == "http" || url.scheme() == "https" => {
                    Ok(s.trim_end_matches('/').to_owned())
                }
                Ok(url) => Err(format!("scheme {:?} is not http or https", url.scheme())),
                Err(e) => Err(e.to_string()),
            },
        )?;
        let exit_with_node = env
            .parse_with(
                "MORTAR_EXIT_WITH_NODE",
                "stdin (drain when stdin closes) or never",
                |s| match s {
                    "stdin" => Ok(true),
                    "never" => Ok(false),
                    other => Err(format!("unknown mode {other:?}")),
                },
            )?
            .unwrap_or(false);
        Ok(ServiceConfig {
            service,
            instance,
            port,
            bind_addr,
            shutdown_grace,
            log_level,
            node_url,
            exit_with_node,
        })
    }
}

/// Whether `s` is a DNS label: the rule for service names everywhere.
pub fn is_dns_label(s: &str) -> bool {
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
    fn defaults_apply_when_nothing_is_set() {
        let cfg = ServiceConfig::from_env(&Env::default(), "catalog").unwrap();
        assert_eq!(cfg.service, "catalog");
        assert!(cfg.instance.starts_with("catalog-"));
        assert_eq!(cfg.port, 0);
        assert_eq!(cfg.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        assert_eq!(cfg.log_level, "info");
        assert_eq!(cfg.node_url, None);
        assert!(!cfg.exit_with_node);
        let env = Env::from_pairs([("MORTAR_EXIT_WITH_NODE", "sometimes")]);
        let err = ServiceConfig::from_env(&env, "x").unwrap_err();
        assert_eq!(err.variable(), "MORTAR_EXIT_WITH_NODE");
    }

    #[test]
    fn malformed_port_names_variable_form_and_problem() {
        let env = Env::from_pairs([("PORT", "80a")]);
        let err = ServiceConfig::from_env(&env, "catalog").unwrap_err();
        assert_eq!(err.variable(), "PORT");
        let line = err.to_string();
        assert!(line.contains("PORT=\"80a\""), "{line}");
        assert!(line.contains("a TCP port number"), "{line}");
        assert!(line.contains("invalid digit"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn port_out_of_range_is_rejected() {
        let env = Env::from_pairs([("PORT", "70000")]);
        let err = ServiceConfig::from_env(&env, "x").unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }

    #[test]
    fn missing_required_variable_is_named() {
        let err = Env::default()
            .required::<String>("CATALOG_DB", "a sqlite:// URL")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "config error: CATALOG_DB is not set; expected a sqlite:// URL"
        );
    }

    #[test]
    fn empty_value_is_an_error_not_a_default() {
        let env = Env::from_pairs([("MORTAR_SHUTDOWN_GRACE", " ")]);
        let err = ServiceConfig::from_env(&env, "x").unwrap_err();
        assert!(err.to_string().contains("the value is empty"), "{err}");
    }

    #[test]
    fn durations_and_filters_are_validated() {
        let env = Env::from_pairs([("MORTAR_SHUTDOWN_GRACE", "3 parsecs")]);
        assert_eq!(
            ServiceConfig::from_env(&env, "x").unwrap_err().variable(),
            "MORTAR_SHUTDOWN_GRACE"
        );
        let env = Env::from_pairs([("MORTAR_SHUTDOWN_GRACE", "1500ms")]);
        let cfg = ServiceConfig::from_env(&env, "x").unwrap();
        assert_eq!(cfg.shutdown_grace, Duration::from_millis(1500));

        let env = Env::from_pairs([("MORTAR_LOG_LEVEL", "info,[[[")]);
        assert_eq!(
            ServiceConfig::from_env(&env, "x").unwrap_err().variable(),
            "MORTAR_LOG_LEVEL"
        );
    }

    #[test]
    fn node_url_must_be_http() {
        let env = Env::from_pairs([("MORTAR_NODE_URL", "ftp://127.0.0.1:1")]);
        let err = ServiceConfig::from_env(&env, "x").unwrap_err();
        assert!(err.to_string().contains("not http"), "{err}");
        let env = Env::from_pairs([("MORTAR_NODE_URL", "http://127.0.0.1:4300/")]);
        let cfg = ServiceConfig::from_env(&env, "x").unwrap();
        assert_eq!(cfg.node_url.as_deref(), Some("http://127.0.0.1:4300"));
    }

    #[test]
    fn service_names_are_dns_labels() {
        assert!(is_dns_label("order-history"));
        assert!(!is_dns_label("Order"));
        assert!(!is_dns_label("-x"));
        assert!(!is_dns_label(""));
        let env = Env::from_pairs([("MORTAR_SERVICE", "Bad_Name")]);
        assert!(ServiceConfig::from_env(&env, "x").is_err());
    }

    #[test]
    fn secrets_are_redacted_in_errors_and_debug() {
        let env = Env::from_pairs([
            ("MORTAR_SECRET_NAMES", "DB_PORT,API_KEY"),
            ("DB_PORT", "hunter2"),
            ("API_KEY", "k-123"),
            ("PLAIN", "seen"),
        ]);
        assert!(env.is_secret("DB_PORT") && !env.is_secret("PLAIN"));
        let e = env
            .parse_with("DB_PORT", "a port", |s| {
                Err::<u16, _>(format!("{s} is no port"))
            })
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(
            e.contains("DB_PORT=\"<redacted>\"") && e.contains("<redacted> is no port"),
            "{e}"
        );
        let shown = format!("{env:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("k-123"),
            "{shown}"
        );
        assert!(
            shown.contains("seen") && shown.contains("API_KEY"),
            "{shown}"
        );
    }
}
