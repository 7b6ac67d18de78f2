//! Why a request was not let in, phrased for the caller.
//!
//! Every variant's `Display` is safe to send to the client: it says what was
//! wrong with the token (expired, wrong audience, …) and what to do, never
//! which keys, audiences or issuers the verifier holds. Internals (why the
//! issuer's keys could not be fetched) are logged by the verifier instead.

use http::StatusCode;

/// Why a token was refused, or could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("this resource needs an access token; send `Authorization: Bearer <access token>`")]
    MissingToken,
    /// An `Authorization` header that is not `Bearer <token>`.
    #[error("the Authorization header must be `Bearer <access token>`")]
    MalformedHeader,
    /// Not three base64url parts, bad JSON, or too long.
    #[error("the access token is not a well-formed JWT: {0}")]
    Malformed(&'static str),
    /// The header names an algorithm other than EdDSA (`none` included).
    #[error("tokens signed with `{0}` are not accepted; access tokens must be signed with EdDSA")]
    AlgorithmNotAllowed(String),
    /// The header's `typ` is not `at+jwt` (RFC 9068): e.g. an ID token.
    #[error("the token is not an access token (its type must be `at+jwt`)")]
    WrongType,
    /// The header lists extensions that must be understood (`crit`).
    #[error("the token's header has critical extensions this verifier does not support")]
    CriticalHeader,
    /// The header names no key.
    #[error("the token's header names no signing key (`kid`)")]
    MissingKid,
    /// The issuer does not publish the named key (forged, or very old).
    #[error("the token was signed with a key the issuer does not publish; log in again")]
    UnknownKid,
    /// The signature does not match header and claims: tampered with.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("the access token has expired; refresh it or log in again")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("the access token is not valid yet")]
    NotYetValid,
    /// `aud` does not name this application.
    #[error("the access token was issued for another audience")]
    WrongAudience,
    /// `iss` is not the trusted issuer.
    #[error("the access token was issued by an issuer this application does not trust")]
    WrongIssuer,
    /// A required claim is missing or has the wrong type.
    #[error("the access token's claims are invalid: {0}")]
    InvalidClaims(String),
    /// Valid token, but without every scope the resource needs.
    #[error("the access token lacks the scope(s) this resource needs: {}", .missing.join(" "))]
    InsufficientScope {
        /// The scopes that were needed and not granted.
        missing: Vec<String>,
    },
    /// The issuer's keys were never fetched (it has been unreachable since
    /// start), so no token can be checked yet.
    #[error(
        "access tokens cannot be checked right now (the issuer's keys are not available); try again shortly"
    )]
    KeysUnavailable,
}

impl AuthError {
    /// 401 for a missing or bad token, 403 for a missing scope, 503 when the
    /// keys are not available (the token may well be good).
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            AuthError::KeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// A stable, machine-readable name of the reason, e.g. `token-expired`.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "token-missing",
            AuthError::MalformedHeader | AuthError::Malformed(_) => "token-malformed",
            AuthError::AlgorithmNotAllowed(_) => "token-algorithm",
            AuthError::WrongType => "token-type",
            AuthError::CriticalHeader => "token-critical-header",
            AuthError::MissingKid | AuthError::UnknownKid => "token-unknown-key",
            AuthError::BadSignature => "token-signature",
            AuthError::Expired => "token-expired",
            AuthError::NotYetValid => "token-not-yet-valid",
            AuthError::WrongAudience => "token-audience",
            AuthError::WrongIssuer => "token-issuer",
            AuthError::InvalidClaims(_) => "token-claims",
            AuthError::InsufficientScope { .. } => "insufficient-scope",
            AuthError::KeysUnavailable => "keys-unavailable",
        }
    }

    /// The problem type URI (RFC 9457), `urn:mortar:problem:<code>`.
    pub fn problem_type(&self) -> String {
        format!("urn:mortar:problem:{}", self.code())
    }

    /// A short title for the problem document.
    pub fn title(&self) -> &'static str {
        match self {
            AuthError::InsufficientScope { .. } => "Insufficient scope",
            AuthError::KeysUnavailable => "Token verification unavailable",
            AuthError::MissingToken => "Authentication required",
            _ => "Invalid access token",
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 §3) for this refusal.
    pub fn www_authenticate(&self) -> String {
        match self {
            AuthError::MissingToken => "Bearer".to_owned(),
            AuthError::InsufficientScope { missing } => format!(
                "Bearer error=\"insufficient_scope\", scope=\"{}\"",
                missing.join(" ")
            ),
            AuthError::KeysUnavailable => "Bearer".to_owned(),
            AuthError::MalformedHeader => "Bearer error=\"invalid_request\"".to_owned(),
            other => format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                {
                    // Quoted-string: no quotes or backslashes inside.
                    other.to_string().replace(['"', '\\'], "'")
                }
            ),
        }
    }
}

/// Why the issuer's key set could not be fetched. Logged, never sent to a
/// client.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The call to the issuer failed (no instance, breaker open, timeout…).
    #[error("{0}")]
    Call(#[from] mortar_resilience::CallError),
    /// The issuer answered with a status other than 200.
    #[error("the issuer answered {status} for {path}")]
    Status {
        /// The path asked.
        path: String,
        /// The status it answered.
        status: u16,
    },
    /// The body could not be read or is larger than allowed.
    #[error("the key set body could not be read: {0}")]
    Body(String),
    /// The body is not a JWKS document.
    #[error("the key set is not a JWKS document: {0}")]
    Json(#[from] serde_json::Error),
    /// Any other source (e.g. an issuer's own database) failed.
    #[error("the key source failed: {0}")]
    Source(String),
}

/// Why a key could not be made or a token could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The operating system's random source failed.
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    /// A stored private key has the wrong length.
    #[error("an Ed25519 private key is 32 bytes, this one is {0}")]
    SeedLength(usize),
    /// Signing failed inside the JWT library.
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_challenges_follow_rfc_6750() {
        assert_eq!(AuthError::Expired.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            AuthError::InsufficientScope {
                missing: vec!["orders".into()]
            }
            .status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            AuthError::KeysUnavailable.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(
            AuthError::Expired
                .www_authenticate()
                .starts_with("Bearer error=\"invalid_token\"")
        );
        assert_eq!(
            AuthError::InsufficientScope {
                missing: vec!["a".into(), "b".into()]
            }
            .www_authenticate(),
            "Bearer error=\"insufficient_scope\", scope=\"a b\""
        );
        assert_eq!(
            AuthError::AlgorithmNotAllowed("none".into()).problem_type(),
            "urn:mortar:problem:token-algorithm"
        );
    }
}
