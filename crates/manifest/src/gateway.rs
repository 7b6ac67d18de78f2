//! The `[gateway]` table: listen address, routes and whose tokens
//! authenticated routes accept.

use std::collections::BTreeMap;

use crate::model::{
    DEFAULT_AUTH_LEEWAY, DEFAULT_JWKS_PATH, GatewayAuthSpec, GatewaySpec, MAX_AUTH_LEEWAY,
    RouteSpec,
};
use crate::reader::{Reader, Value, child};

const GATEWAY_KEYS: &[&str] = &["listen", "routes", "auth"];
const ROUTE_KEYS: &[&str] = &["prefix", "service", "public", "authenticated", "scopes"];
const AUTH_KEYS: &[&str] = &[
    "issuer_service",
    "issuer",
    "audience",
    "jwks_path",
    "leeway",
];

/// Reads `[gateway]`; `services` are the names the routes may point at.
pub(crate) fn read_gateway(
    r: &mut Reader<'_>,
    value: &Value<'_>,
    services: &[&str],
) -> Option<GatewaySpec> {
    let table = r.table(value, "gateway")?;
    r.unknown_keys(table, "gateway", GATEWAY_KEYS);
    let listen = match table.get("listen") {
        None => Some(None),
        Some(v) => {
            const EXPECTED: &str = "an address such as 127.0.0.1:8080";
            let text = r.string(v, "gateway.listen", EXPECTED)?;
            match text.parse::<std::net::SocketAddr>() {
                Ok(addr) => Some(Some(addr)),
                Err(_) => {
                    r.error(
                        v.span(),
                        "gateway.listen",
                        format!("expected {EXPECTED}, found {text:?}"),
                    );
                    None
                }
            }
        }
    };
    let auth = match table.get("auth") {
        None => Some(None),
        Some(v) => read_auth(r, v, services).map(Some),
    };
    // Routes are checked against `[gateway.auth]` being there, even when it
    // has errors of its own (those are reported already).
    let has_auth = table.contains_key("auth");
    let routes = match table.get("routes") {
        None => Some(Vec::new()),
        Some(v) => read_routes(r, v, services, has_auth),
    };
    Some(GatewaySpec {
        listen: listen?,
        routes: routes?,
        auth: auth?,
    })
}

/// Reads `[gateway.auth]`.
fn read_auth(r: &mut Reader<'_>, value: &Value<'_>, services: &[&str]) -> Option<GatewayAuthSpec> {
    const FIELD: &str = "gateway.auth";
    let table = r.table(value, FIELD)?;
    r.unknown_keys(table, FIELD, AUTH_KEYS);
    let issuer_service = match table.get("issuer_service") {
        Some(v) => {
            let f = child(FIELD, "issuer_service");
            match r.string(v, &f, "a service name") {
                Some(name) if services.contains(&name) => Some(name.to_owned()),
                Some(name) => {
                    r.error(
                        v.span(),
                        &f,
                        format!(
                            "unknown service {name:?}; services in this manifest: {}",
                            services.join(", ")
                        ),
                    );
                    None
                }
                None => None,
            }
        }
        None => {
            r.error(
                value.span(),
                FIELD,
                "missing required key \"issuer_service\"; the service that issues access tokens and publishes their keys, such as \"identity\"",
            );
            None
        }
    };
    let text = |r: &mut Reader<'_>, key: &str, expected: &str| match table.get(key) {
        None => Some(None),
        Some(v) => {
            let f = child(FIELD, key);
            match r.string(v, &f, expected) {
                Some("") => {
                    r.error(
                        v.span(),
                        &f,
                        format!("expected {expected}, found an empty string"),
                    );
                    None
                }
                Some(t) => Some(Some(t.to_owned())),
                None => None,
            }
        }
    };
    let issuer = text(r, "issuer", "the `iss` of accepted tokens");
    let audience = text(r, "audience", "the `aud` of accepted tokens");
    let jwks_path = match text(r, "jwks_path", "a path starting with '/'") {
        Some(Some(p)) if !p.starts_with('/') => {
            if let Some(v) = table.get("jwks_path") {
                r.error(
                    v.span(),
                    &child(FIELD, "jwks_path"),
                    format!("expected a path starting with '/', found {p:?}"),
                );
            }
            None
        }
        other => other,
    };
    let leeway = match table.get("leeway") {
        None => Some(DEFAULT_AUTH_LEEWAY),
        Some(v) => r.duration(v, &child(FIELD, "leeway"), Some(MAX_AUTH_LEEWAY)),
    };
    let issuer_service = issuer_service?;
    Some(GatewayAuthSpec {
        issuer: issuer?.unwrap_or_else(|| issuer_service.clone()),
        issuer_service,
        audience: audience?,
        jwks_path: jwks_path?.unwrap_or_else(|| DEFAULT_JWKS_PATH.to_owned()),
        leeway: leeway?,
    })
}

/// Whether `s` is a scope token (RFC 6749 §3.3): printable ASCII without
/// spaces, `"` or `\`.
fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// Reads a boolean key of a route; `false` when absent.
fn flag(r: &mut Reader<'_>, table: &toml::de::DeTable<'_>, field: &str, key: &str) -> Option<bool> {
    match table.get(key) {
        Some(v) => {
            let b = v.get_ref().as_bool();
            if b.is_none() {
                r.wrong_type(v, &child(field, key), "true or false");
            }
            b
        }
        None => Some(false),
    }
}

fn read_routes(
    r: &mut Reader<'_>,
    value: &Value<'_>,
    services: &[&str],
    has_auth: bool,
) -> Option<Vec<RouteSpec>> {
    let Some(array) = value.get_ref().as_array() else {
        r.wrong_type(
            value,
            "gateway.routes",
            "an array of tables ([[gateway.routes]])",
        );
        return None;
    };
    let mut routes = Vec::with_capacity(array.len());
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut ok = true;
    for (i, item) in array.iter().enumerate() {
        let field = format!("gateway.routes[{i}]");
        let Some(table) = r.table(item, &field) else {
            ok = false;
            continue;
        };
        r.unknown_keys(table, &field, ROUTE_KEYS);
        let prefix = match table.get("prefix") {
            Some(v) => {
                let f = child(&field, "prefix");
                match r.string(v, &f, "a path prefix starting with '/'") {
                    Some(p) if p.starts_with('/') => {
                        if let Some(first) = seen.insert(p.to_owned(), i) {
                            r.error(
                                v.span(),
                                &f,
                                format!(
                                    "prefix {p:?} is already routed by gateway.routes[{first}]"
                                ),
                            );
                            None
                        } else {
                            Some(p.to_owned())
                        }
                    }
                    Some(p) => {
                        r.error(
                            v.span(),
                            &f,
                            format!("expected a path prefix starting with '/', found {p:?}"),
                        );
                        None
                    }
                    None => None,
                }
            }
            None => {
                r.error(item.span(), &field, "missing required key \"prefix\"; the path prefix to route, such as \"/v1/products\"");
                None
            }
        };
        let service = match table.get("service") {
            Some(v) => {
                let f = child(&field, "service");
                match r.string(v, &f, "a service name") {
                    Some(name) if services.contains(&name) => Some(name.to_owned()),
                    Some(name) => {
                        r.error(
                            v.span(),
                            &f,
                            format!(
                                "unknown service {name:?}; services in this manifest: {}",
                                services.join(", ")
                            ),
                        );
                        None
                    }
                    None => None,
                }
            }
            None => {
                r.error(
                    item.span(),
                    &field,
                    "missing required key \"service\"; the service that answers this prefix",
                );
                None
            }
        };
        let public = flag(r, table, &field, "public");
        let authenticated = flag(r, table, &field, "authenticated");
        if let (Some(true), Some(true)) = (public, authenticated)
            && let Some(v) = table.get("authenticated")
        {
            r.error(
                v.span(),
                &child(&field, "authenticated"),
                "a route is either public or authenticated, not both; remove one",
            );
            ok = false;
        }
        if authenticated == Some(true)
            && !has_auth
            && let Some(v) = table.get("authenticated")
        {
            r.error(
                v.span(),
                &child(&field, "authenticated"),
                "authenticated routes need a [gateway.auth] table naming the issuer_service whose tokens they accept",
            );
            ok = false;
        }
        let scopes = match table.get("scopes") {
            None => Some(Vec::new()),
            Some(v) => {
                let f = child(&field, "scopes");
                match r.string_array(v, &f, true) {
                    Some(items) => {
                        let mut scopes = Vec::with_capacity(items.len());
                        for (i, item) in items.iter().enumerate() {
                            if is_scope_token(item.get_ref()) {
                                scopes.push(item.get_ref().clone());
                            } else {
                                r.error(
                                    item.span(),
                                    &format!("{f}[{i}]"),
                                    format!(
                                        "{:?} is not a scope; scopes are printable ASCII without spaces, '\"' or '\\'",
                                        item.get_ref()
                                    ),
                                );
                            }
                        }
                        (scopes.len() == items.len()).then_some(scopes)
                    }
                    None => None,
                }
            }
        };
        if authenticated == Some(false)
            && let (Some(v), Some(s)) = (table.get("scopes"), &scopes)
            && !s.is_empty()
        {
            r.error(
                v.span(),
                &child(&field, "scopes"),
                "scopes apply to authenticated routes only; add authenticated = true",
            );
            ok = false;
        }
        match (prefix, service, public, authenticated, scopes) {
            (Some(prefix), Some(service), Some(public), Some(authenticated), Some(scopes)) => {
                routes.push(RouteSpec {
                    prefix,
                    service,
                    public,
                    authenticated,
                    scopes,
                })
            }
            _ => ok = false,
        }
    }
    ok.then_some(routes)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::Manifest;

    const HEAD: &str = "[app]\nname = \"shop\"\n\n[services.catalog]\ncommand = [\"x\"]\n\n";

    #[test]
    fn routes_are_read_in_order_with_defaults() {
        let src = format!(
            "{HEAD}[gateway]\nlisten = \"127.0.0.1:8080\"\n\n[[gateway.routes]]\nprefix = \"/v1/products\"\nservice = \"catalog\"\npublic = true\n\n[[gateway.routes]]\nprefix = \"/v1/admin\"\nservice = \"catalog\"\n"
        );
        let m = Manifest::parse(&src, Path::new("mortar.toml")).unwrap();
        assert_eq!(m.gateway.listen, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(m.gateway.routes.len(), 2);
        assert!(m.gateway.routes[0].public);
        assert!(!m.gateway.routes[1].public);
    }

    #[test]
    fn no_gateway_table_means_no_routes() {
        let m = Manifest::parse(HEAD, Path::new("mortar.toml")).unwrap();
        assert_eq!(m.gateway, crate::GatewaySpec::default());
    }

    #[test]
    fn bad_routes_are_all_reported_with_lines() {
        let src = format!(
            "{HEAD}[gateway]\nlisten = \"localhost\"\n\n[[gateway.routes]]\nprefix = \"v1\"\nservice = \"inventory\"\n\n[[gateway.routes]]\nprefix = \"/a\"\nservice = \"catalog\"\npublic = \"yes\"\n"
        );
        let errors = Manifest::parse(&src, Path::new("mortar.toml"))
            .unwrap_err()
            .errors;
        let fields: Vec<(usize, &str)> =
            errors.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(
            fields,
            [
                (8, "gateway.listen"),
                (11, "gateway.routes[0].prefix"),
                (12, "gateway.routes[0].service"),
                (17, "gateway.routes[1].public"),
            ]
        );
    }

    const AUTH_HEAD: &str = "[app]\nname = \"shop\"\n\n[services.catalog]\ncommand = [\"x\"]\n\n[services.identity]\ncommand = [\"x\"]\n\n";

    #[test]
    fn auth_and_authenticated_routes_are_read_with_defaults() {
        let src = format!(
            "{AUTH_HEAD}[gateway.auth]\nissuer_service = \"identity\"\n\n[[gateway.routes]]\nprefix = \"/v1/orders\"\nservice = \"catalog\"\nauthenticated = true\nscopes = [\"orders\", \"identity:admin\"]\n\n[[gateway.routes]]\nprefix = \"/v1/me\"\nservice = \"identity\"\nauthenticated = true\n"
        );
        let m = Manifest::parse(&src, Path::new("mortar.toml")).unwrap();
        let auth = m.gateway.auth.unwrap();
        assert_eq!(auth.issuer_service, "identity");
        assert_eq!(auth.issuer, "identity");
        assert_eq!(auth.audience, None);
        assert_eq!(auth.jwks_path, "/.well-known/jwks.json");
        assert_eq!(auth.leeway, crate::DEFAULT_AUTH_LEEWAY);
        let r = &m.gateway.routes;
        assert!(r[0].authenticated && !r[0].public);
        assert_eq!(r[0].scopes, ["orders", "identity:admin"]);
        assert!(r[1].authenticated && r[1].scopes.is_empty());

        let src = format!(
            "{AUTH_HEAD}[gateway.auth]\nissuer_service = \"identity\"\nissuer = \"https://id.example\"\naudience = \"web\"\njwks_path = \"/v1/jwks\"\nleeway = \"5s\"\n"
        );
        let auth = Manifest::parse(&src, Path::new("mortar.toml"))
            .unwrap()
            .gateway
            .auth
            .unwrap();
        assert_eq!(auth.issuer, "https://id.example");
        assert_eq!(auth.audience.as_deref(), Some("web"));
        assert_eq!(auth.jwks_path, "/v1/jwks");
        assert_eq!(auth.leeway, std::time::Duration::from_secs(5));
    }

    #[test]
    fn bad_auth_settings_are_all_reported_with_lines() {
        let src = format!(
            "{AUTH_HEAD}[gateway.auth]\nissuer_service = \"keys\"\njwks_path = \"jwks\"\nleeway = \"1h\"\naudiences = \"x\"\n\n[[gateway.routes]]\nprefix = \"/a\"\nservice = \"catalog\"\npublic = true\nauthenticated = true\n\n[[gateway.routes]]\nprefix = \"/b\"\nservice = \"catalog\"\nscopes = [\"orders\"]\n\n[[gateway.routes]]\nprefix = \"/c\"\nservice = \"catalog\"\nauthenticated = true\nscopes = [\"two words\"]\n"
        );
        let errors = Manifest::parse(&src, Path::new("mortar.toml"))
            .unwrap_err()
            .errors;
        let fields: Vec<(usize, &str)> =
            errors.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(
            fields,
            [
                (11, "gateway.auth.issuer_service"),
                (12, "gateway.auth.jwks_path"),
                (13, "gateway.auth.leeway"),
                (14, "gateway.auth.audiences"),
                (20, "gateway.routes[0].authenticated"),
                (25, "gateway.routes[1].scopes"),
                (31, "gateway.routes[2].scopes[0]"),
            ],
            "{errors:#?}"
        );
    }

    #[test]
    fn authenticated_routes_need_an_issuer() {
        let src = format!(
            "{AUTH_HEAD}[[gateway.routes]]\nprefix = \"/v1/orders\"\nservice = \"catalog\"\nauthenticated = true\n"
        );
        let errors = Manifest::parse(&src, Path::new("mortar.toml"))
            .unwrap_err()
            .errors;
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "gateway.routes[0].authenticated");
        assert!(
            errors[0].message.contains("[gateway.auth]"),
            "{}",
            errors[0].message
        );
    }
}
