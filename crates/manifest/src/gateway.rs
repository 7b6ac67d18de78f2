//! The `[gateway]` table: listen address and routes.

use std::collections::BTreeMap;

use crate::model::{GatewaySpec, RouteSpec};
use crate::reader::{Reader, Value, child};

const GATEWAY_KEYS: &[&str] = &["listen", "routes"];
const ROUTE_KEYS: &[&str] = &["prefix", "service", "public"];

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
    let routes = match table.get("routes") {
        None => Some(Vec::new()),
        Some(v) => read_routes(r, v, services),
    };
    Some(GatewaySpec {
        listen: listen?,
        routes: routes?,
    })
}

fn read_routes(r: &mut Reader<'_>, value: &Value<'_>, services: &[&str]) -> Option<Vec<RouteSpec>> {
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
        let public = match table.get("public") {
            Some(v) => {
                let b = v.get_ref().as_bool();
                if b.is_none() {
                    r.wrong_type(v, &child(&field, "public"), "true or false");
                }
                b
            }
            None => Some(false),
        };
        match (prefix, service, public) {
            (Some(prefix), Some(service), Some(public)) => routes.push(RouteSpec {
                prefix,
                service,
                public,
            }),
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
}
