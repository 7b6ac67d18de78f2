//! Access tokens: what they claim, how an issuer signs them, and what a
//! verified one tells a service about its caller.
//!
//! An access token is a JWT (RFC 7519) in the JWT access-token profile
//! (RFC 9068): header `{"alg":"EdDSA","typ":"at+jwt","kid":…}`, claims
//! `iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti` and `scope` (scopes
//! separated by spaces).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};

use crate::error::KeyError;
use crate::keys::{SigningKey, random_token};

/// The `typ` header of an access token (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// The claims mortar puts in an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: who signed it.
    pub iss: String,
    /// Subject: the user's stable id.
    pub sub: String,
    /// Audience: the application it is for.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    pub nbf: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Token id, unique per token.
    pub jti: String,
    /// Granted scopes, separated by spaces.
    #[serde(default)]
    pub scope: String,
}

/// A verified caller: what a service may rely on once a token passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The user's stable id (`sub`).
    pub subject: String,
    /// The scopes the token grants.
    pub scopes: Vec<String>,
    /// When the token expires, seconds since the epoch.
    pub expires_at: u64,
    /// The token's id (`jti`), for logs and revocation lists.
    pub token_id: Option<String>,
}

impl Identity {
    /// Whether the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// `Ok` when every scope in `required` is granted; otherwise the
    /// [`AuthError::InsufficientScope`](crate::AuthError::InsufficientScope)
    /// naming the missing ones (403).
    pub fn require_scopes<S: AsRef<str>>(&self, required: &[S]) -> Result<(), crate::AuthError> {
        let missing: Vec<String> = required
            .iter()
            .map(AsRef::as_ref)
            .filter(|s| !self.has_scope(s))
            .map(str::to_owned)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(crate::AuthError::InsufficientScope { missing })
        }
    }
}

/// Whether `s` is a valid scope token (RFC 6749 §3.3): printable ASCII
/// without spaces, `"` or `\`.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// A signed access token and what the client is told about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// Its claims.
    pub claims: Claims,
}

/// Signs access tokens for one issuer and audience.
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    issuer: String,
    audience: String,
    ttl: Duration,
}

/// Seconds since the epoch now (0 if the clock is before 1970).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenIssuer {
    /// Tokens with `iss = issuer`, `aud = audience`, valid for `ttl`. Keep
    /// `ttl` short (minutes): a stolen access token is good until it
    /// expires, and clients refresh cheaply.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>, ttl: Duration) -> Self {
        TokenIssuer {
            issuer: issuer.into(),
            audience: audience.into(),
            ttl,
        }
    }

    /// How long tokens are valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for `subject` with `scopes`, valid from now.
    pub fn issue<S: AsRef<str>>(
        &self,
        key: &SigningKey,
        subject: &str,
        scopes: &[S],
    ) -> Result<IssuedToken, KeyError> {
        self.issue_at(key, subject, scopes, now_secs())
    }

    /// A token valid from `now` (seconds since the epoch); tests use it to
    /// make expired and not-yet-valid tokens.
    pub fn issue_at<S: AsRef<str>>(
        &self,
        key: &SigningKey,
        subject: &str,
        scopes: &[S],
        now: u64,
    ) -> Result<IssuedToken, KeyError> {
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: subject.to_owned(),
            aud: self.audience.clone(),
            exp: now.saturating_add(self.ttl.as_secs()),
            nbf: now,
            iat: now,
            jti: random_token(16)?,
            scope: scopes
                .iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>()
                .join(" "),
        };
        let token = sign(key, &claims)?;
        Ok(IssuedToken { token, claims })
    }
}

/// Signs any claims with `key` as an access token (EdDSA, `at+jwt`, the
/// key's `kid`).
pub fn sign<T: Serialize>(key: &SigningKey, claims: &T) -> Result<String, KeyError> {
    crate::install_provider();
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
    header.kid = Some(key.kid().to_owned());
    jsonwebtoken::encode(&header, claims, key.encoding_key())
        .map_err(|e| KeyError::Sign(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_tokens_follow_rfc_6749() {
        assert!(is_scope_token("orders"));
        assert!(is_scope_token("identity:admin"));
        assert!(!is_scope_token(""));
        assert!(!is_scope_token("two words"));
        assert!(!is_scope_token("quote\""));
        assert!(!is_scope_token("é"));
    }

    #[test]
    fn missing_scopes_are_named() {
        let id = Identity {
            subject: "u1".into(),
            scopes: vec!["orders".into()],
            expires_at: 0,
            token_id: None,
        };
        assert!(id.require_scopes(&["orders"]).is_ok());
        assert!(id.require_scopes::<&str>(&[]).is_ok());
        assert_eq!(
            id.require_scopes(&["orders", "admin"]),
            Err(crate::AuthError::InsufficientScope {
                missing: vec!["admin".into()]
            })
        );
    }

    #[test]
    fn issued_tokens_carry_the_profile_header_and_claims() {
        let key = SigningKey::generate().unwrap();
        let issuer = TokenIssuer::new("identity", "shop", Duration::from_secs(900));
        let t = issuer.issue_at(&key, "u1", &["a", "b"], 1000).unwrap();
        assert_eq!(t.claims.exp, 1900);
        assert_eq!(t.claims.scope, "a b");
        let header = jsonwebtoken::decode_header(&t.token).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        let other = issuer.issue_at(&key, "u1", &["a"], 1000).unwrap();
        assert_ne!(t.claims.jti, other.claims.jti);
    }
}
