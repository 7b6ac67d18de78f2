//! The gateway's settings from the manifest: routes, and whose access
//! tokens authenticated routes accept.

use mortar_gateway::{AuthConfig, Route};
use mortar_manifest::Manifest;
use mortar_sdk::auth::VerifierConfig;

/// The manifest's `[[gateway.routes]]` as gateway routes.
pub(crate) fn routes(manifest: &Manifest) -> Vec<Route> {
    manifest
        .gateway
        .routes
        .iter()
        .map(|r| {
            if r.authenticated {
                Route::authenticated(&r.prefix, &r.service, r.scopes.iter().cloned())
            } else {
                Route::new(&r.prefix, &r.service, r.public)
            }
        })
        .collect()
}

/// The manifest's `[gateway.auth]`: tokens must name the app as audience
/// unless it says otherwise.
pub(crate) fn auth(manifest: &Manifest) -> Option<AuthConfig> {
    let spec = manifest.gateway.auth.as_ref()?;
    let audience = spec
        .audience
        .clone()
        .unwrap_or_else(|| manifest.app.name.clone());
    let mut verifier = VerifierConfig::new(&spec.issuer, audience);
    verifier.leeway = spec.leeway;
    Some(AuthConfig {
        issuer_service: spec.issuer_service.clone(),
        jwks_path: spec.jwks_path.clone(),
        verifier,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::Path;

    use mortar_gateway::Access;

    use super::*;

    #[test]
    fn routes_and_auth_come_from_the_manifest() {
        let m = Manifest::parse(
            "[app]\nname = \"shop\"\n[services.identity]\ncommand = [\"x\"]\n[gateway.auth]\nissuer_service = \"identity\"\nleeway = \"10s\"\n[[gateway.routes]]\nprefix = \"/v1/orders\"\nservice = \"identity\"\nauthenticated = true\nscopes = [\"orders\"]\n[[gateway.routes]]\nprefix = \"/v1/products\"\nservice = \"identity\"\npublic = true\n",
            Path::new("mortar.toml"),
        )
        .unwrap();
        let r = routes(&m);
        assert_eq!(
            r[0].access,
            Access::Authenticated {
                scopes: vec!["orders".into()]
            }
        );
        assert!(!r[0].public);
        assert_eq!(r[1].access, Access::Open);
        assert!(r[1].public);
        let a = auth(&m).unwrap();
        assert_eq!(a.issuer_service, "identity");
        assert_eq!(a.verifier.issuer, "identity");
        assert_eq!(a.verifier.audience, "shop");
        assert_eq!(a.verifier.leeway, std::time::Duration::from_secs(10));
        assert_eq!(a.jwks_path, "/.well-known/jwks.json");
    }
}
