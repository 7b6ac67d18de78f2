//! The token check of authenticated routes, and the identity headers.
//!
//! Every request loses any `x-mortar-subject`/`x-mortar-scopes` it came
//! with (two header removals), so a client can never claim an identity. On
//! an authenticated route the bearer token is verified against the
//! issuer's cached keys (one Ed25519 signature check, no network call in
//! the steady state) and the verified subject and scopes are set in those
//! headers for the service. Public and open routes do nothing more.

use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use mortar_auth::{AuthError, ServiceJwks, Verifier};
use mortar_resilience::Client;

use crate::AuthConfig;

const SUBJECT: HeaderName = HeaderName::from_static(mortar_auth::SUBJECT_HEADER);
const SCOPES: HeaderName = HeaderName::from_static(mortar_auth::SCOPES_HEADER);

/// The gateway's verifier, fetching the issuer's keys through the
/// gateway's own client (so its breaker and retries apply).
pub(crate) fn verifier(config: &AuthConfig, client: Client) -> Verifier {
    let source = ServiceJwks::new(client, &config.issuer_service, &config.jwks_path);
    let verifier = Verifier::new(config.verifier.clone(), std::sync::Arc::new(source));
    // Fetches the keys now, so the first signed-in request does not wait.
    verifier.spawn_refresh();
    verifier
}

/// Removes identity headers a client may have sent.
///
/// One pass of name comparisons first: almost no request carries them, and
/// removing each by name would hash both names on every request.
pub(crate) fn strip_identity(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| *k == SUBJECT || *k == SCOPES) {
        return;
    }
    headers.remove(SUBJECT);
    headers.remove(SCOPES);
}

/// Verifies the request's token and its scopes; on success the verified
/// identity is in the identity headers, otherwise the problem+json answer.
pub(crate) async fn authenticate(
    verifier: Option<&Verifier>,
    scopes: &[String],
    req: &mut Request<Bytes>,
) -> Result<(), Response> {
    let path = req.uri().path();
    let Some(verifier) = verifier else {
        tracing::error!(
            path,
            "an authenticated route has no token issuer configured; refusing"
        );
        return Err(mortar_sdk::auth::rejection(
            &AuthError::KeysUnavailable,
            path,
        ));
    };
    let identity = match verifier.verify_headers(req.headers()).await {
        Ok(identity) => identity,
        Err(error) => return Err(refused(&error, path)),
    };
    if let Err(error) = identity.require_scopes(scopes) {
        return Err(refused(&error, path));
    }
    let (Ok(subject), Ok(granted)) = (
        HeaderValue::from_str(&identity.subject),
        HeaderValue::from_str(&identity.scopes.join(" ")),
    ) else {
        let error = AuthError::InvalidClaims("its subject or scopes cannot be passed on".into());
        return Err(refused(&error, path));
    };
    let headers = req.headers_mut();
    headers.insert(SUBJECT, subject);
    headers.insert(SCOPES, granted);
    Ok(())
}

fn refused(error: &AuthError, path: &str) -> Response {
    tracing::debug!(
        path,
        reason = error.code(),
        "request refused at the gateway"
    );
    mortar_sdk::auth::rejection(error, path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn identity_headers_from_clients_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("x-mortar-subject", HeaderValue::from_static("admin"));
        h.append("x-mortar-subject", HeaderValue::from_static("root"));
        h.insert(
            "x-mortar-scopes",
            HeaderValue::from_static("identity:admin"),
        );
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_identity(&mut h);
        assert_eq!(h.len(), 1);
    }

    #[tokio::test]
    async fn without_an_issuer_authenticated_routes_refuse() {
        let mut req = Request::get("/v1/orders").body(Bytes::new()).unwrap();
        let resp = authenticate(None, &[], &mut req).await.unwrap_err();
        assert_eq!(resp.status(), 503);
    }
}
