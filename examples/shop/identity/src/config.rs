//! The identity service's settings, from the environment.

use std::time::Duration;

use mortar_eventstore::StoreUrl;
use mortar_sdk::{ConfigError, Env, FromEnv};

/// The longest access-token lifetime allowed: access tokens cannot be
/// revoked, so they must stay short.
const MAX_ACCESS_TTL: Duration = Duration::from_secs(24 * 3600);

/// The most clock skew any verifier may allow (the manifest's
/// `gateway.auth.leeway` is capped at this too): a retired key stays
/// published this long past the last token it signed.
pub(crate) const VERIFIER_LEEWAY_BOUND: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub(crate) struct IdentityConfig {
    /// The store, from `MORTAR_STORE_URL`: `sqlite:///path/to/file.db`, or
    /// `postgres://user@host/db?schema=identity` (identity's own schema).
    pub(crate) store: StoreUrl,
    /// `IDENTITY_ISSUER`: the `iss` of issued tokens; default the service's
    /// name (`MORTAR_SERVICE`, else `identity`), which is also what
    /// verifiers expect by default.
    pub(crate) issuer: String,
    /// `IDENTITY_AUDIENCE`: the `aud` of issued tokens; default the
    /// application's name (`MORTAR_APP`).
    pub(crate) audience: String,
    /// `IDENTITY_ACCESS_TTL`: how long an access token is valid (15m).
    pub(crate) access_ttl: Duration,
    /// `IDENTITY_REFRESH_TTL`: how long a refresh token is valid (7d).
    pub(crate) refresh_ttl: Duration,
    /// `IDENTITY_KEY_ROTATION`: the signing key's age at which a new one
    /// takes over (24h); `off` rotates only on request.
    pub(crate) key_rotation: Option<Duration>,
    /// `IDENTITY_DEFAULT_SCOPES`: scopes every new user gets (`orders`).
    pub(crate) default_scopes: Vec<String>,
    /// `IDENTITY_ADMINS`: usernames that also get `identity:admin`.
    pub(crate) admins: Vec<String>,
}

impl IdentityConfig {
    /// How long a retired key stays published: until every token it
    /// signed has expired, with room for any verifier's leeway.
    pub(crate) fn key_retention(&self) -> Duration {
        self.access_ttl + VERIFIER_LEEWAY_BOUND
    }
}

fn list(raw: &str) -> Vec<String> {
    raw.split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn ttl(env: &Env, name: &str, default: Duration, max: Duration) -> Result<Duration, ConfigError> {
    let value = env.duration(name, default)?;
    if value.is_zero() || value > max {
        return Err(ConfigError::Invalid {
            name: name.into(),
            value: humantime::format_duration(value).to_string(),
            expected: format!(
                "a duration greater than 0 and at most {}",
                humantime::format_duration(max)
            ),
            problem: "out of range".into(),
        });
    }
    Ok(value)
}

impl FromEnv for IdentityConfig {
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        const STORE: &str = "a SQLite or PostgreSQL URL such as sqlite:///var/lib/shop/identity.db or postgres://user@host/shop?schema=identity";
        let store = env
            .parse_with("MORTAR_STORE_URL", STORE, |s| {
                StoreUrl::parse(s).map_err(|e| e.to_string())
            })?
            .ok_or_else(|| ConfigError::Missing {
                name: "MORTAR_STORE_URL".into(),
                expected: STORE.into(),
            })?;
        let issuer = match env.optional::<String>("IDENTITY_ISSUER", "the tokens' issuer name")? {
            Some(i) => i,
            None => env
                .raw("MORTAR_SERVICE")
                .filter(|s| !s.is_empty())
                .unwrap_or("identity")
                .to_owned(),
        };
        let audience = match env.optional::<String>("IDENTITY_AUDIENCE", "the tokens' audience")? {
            Some(a) => a,
            None => env
                .raw("MORTAR_APP")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| ConfigError::Missing {
                    name: "MORTAR_APP".into(),
                    expected: "the application's name, the audience of issued tokens (mortar up sets it; or set IDENTITY_AUDIENCE)".into(),
                })?,
        };
        let access_ttl = ttl(
            env,
            "IDENTITY_ACCESS_TTL",
            Duration::from_secs(15 * 60),
            MAX_ACCESS_TTL,
        )?;
        let refresh_ttl = ttl(
            env,
            "IDENTITY_REFRESH_TTL",
            Duration::from_secs(7 * 24 * 3600),
            Duration::from_secs(365 * 24 * 3600),
        )?;
        let key_rotation = match env.raw("IDENTITY_KEY_ROTATION") {
            Some("off") => None,
            _ => Some(ttl(
                env,
                "IDENTITY_KEY_ROTATION",
                Duration::from_secs(24 * 3600),
                Duration::from_secs(365 * 24 * 3600),
            )?),
        };
        let default_scopes = match env.raw("IDENTITY_DEFAULT_SCOPES") {
            None => vec!["orders".to_owned()],
            Some(raw) => {
                let scopes = list(raw);
                if let Some(bad) = scopes.iter().find(|s| !mortar_auth::is_scope_token(s)) {
                    return Err(ConfigError::Invalid {
                        name: "IDENTITY_DEFAULT_SCOPES".into(),
                        value: raw.into(),
                        expected: "scopes separated by commas or spaces, such as orders,reviews"
                            .into(),
                        problem: format!("{bad:?} is not a scope"),
                    });
                }
                scopes
            }
        };
        let admins = env
            .raw("IDENTITY_ADMINS")
            .map(list)
            .unwrap_or_default()
            .into_iter()
            .map(|a| a.to_lowercase())
            .collect();
        Ok(IdentityConfig {
            store,
            issuer,
            audience,
            access_ttl,
            refresh_ttl,
            key_rotation,
            default_scopes,
            admins,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn env(extra: &[(&str, &str)]) -> Env {
        let mut pairs = vec![
            ("MORTAR_STORE_URL", "sqlite:///tmp/i.db"),
            ("MORTAR_APP", "shop"),
        ];
        pairs.extend_from_slice(extra);
        Env::from_pairs(pairs)
    }

    #[test]
    fn defaults_follow_the_service_and_the_app() {
        let c = IdentityConfig::from_env(&env(&[])).unwrap();
        assert_eq!(c.issuer, "identity");
        assert_eq!(c.audience, "shop");
        assert_eq!(c.access_ttl, Duration::from_secs(900));
        assert_eq!(c.key_rotation, Some(Duration::from_secs(86400)));
        assert_eq!(c.default_scopes, ["orders"]);
        assert!(c.admins.is_empty());
        let c = IdentityConfig::from_env(&env(&[
            ("MORTAR_SERVICE", "accounts"),
            ("IDENTITY_KEY_ROTATION", "off"),
            ("IDENTITY_ADMINS", "Ann, bob"),
            ("IDENTITY_DEFAULT_SCOPES", "orders reviews"),
        ]))
        .unwrap();
        assert_eq!(c.issuer, "accounts");
        assert_eq!(c.key_rotation, None);
        assert_eq!(c.admins, ["ann", "bob"]);
        assert_eq!(c.default_scopes, ["orders", "reviews"]);
        let c = IdentityConfig::from_env(&env(&[(
            "MORTAR_STORE_URL",
            "postgres://shop@db/shop?schema=identity",
        )]))
        .unwrap();
        assert_eq!(
            c.store,
            StoreUrl::Postgres {
                conninfo: "postgres://shop@db/shop".into(),
                schema: "identity".into()
            }
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("IDENTITY_ACCESS_TTL", "2d"),
            ("IDENTITY_ACCESS_TTL", "0s"),
            ("IDENTITY_REFRESH_TTL", "soon"),
            ("IDENTITY_KEY_ROTATION", "never"),
            ("IDENTITY_DEFAULT_SCOPES", "a\"b"),
            ("MORTAR_STORE_URL", "mysql://x"),
        ] {
            let err = IdentityConfig::from_env(&env(&[(name, value)])).unwrap_err();
            assert_eq!(err.variable(), name, "{value}: {err}");
        }
        let err = IdentityConfig::from_env(&Env::from_pairs([(
            "MORTAR_STORE_URL",
            "sqlite:///tmp/i.db",
        )]))
        .unwrap_err();
        assert_eq!(err.variable(), "MORTAR_APP");
    }
}
