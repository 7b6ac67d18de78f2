//! End-user authentication for mortar: signed access tokens that any
//! service (and the gateway) can check on its own.
//!
//! - An issuer (the shop's `identity` service) signs short-lived access
//!   tokens with Ed25519 ([`TokenIssuer`], [`SigningKey`]): JWTs with `alg`
//!   `EdDSA`, `typ` `at+jwt` and the signing key's id in `kid`, so keys can
//!   rotate while older tokens stay verifiable.
//! - It publishes the public keys as a JWK Set ([`Jwks`], RFC 7517).
//! - A [`Verifier`] checks tokens strictly (algorithm pinned, `exp`/`nbf`
//!   within a small leeway, issuer and audience) against those keys, which
//!   it fetches from the issuer *by service name* ([`ServiceJwks`]) and
//!   caches: while the issuer is down, tokens it issued earlier keep
//!   working until they expire.
//!
//! Every refusal is an [`AuthError`] whose message is safe to show the
//! caller and which maps to 401, 403 or 503 (the SDK and the gateway turn
//! it into problem+json).
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::{sync::Arc, time::Duration};
//! use mortar_auth::{Jwks, SigningKey, StaticJwks, TokenIssuer, Verifier, VerifierConfig};
//!
//! let key = SigningKey::generate()?;
//! let issuer = TokenIssuer::new("identity", "shop", Duration::from_secs(900));
//! let token = issuer.issue(&key, "user-1", &["orders"])?.token;
//!
//! let keys = StaticJwks::new(Jwks { keys: vec![key.public_jwk()] });
//! let verifier = Verifier::new(VerifierConfig::new("identity", "shop"), Arc::new(keys));
//! let caller = verifier.verify(&token).await?;
//! assert_eq!(caller.subject, "user-1");
//! assert!(caller.has_scope("orders"));
//! # Ok(()) }
//! ```

mod error;
mod keys;
mod source;
mod token;
mod verify;

pub use error::{AuthError, FetchError, KeyError};
pub use keys::{Jwk, Jwks, SigningKey, random_token};
pub use source::{DEFAULT_JWKS_PATH, JwksSource, ServiceJwks, StaticJwks};
pub use token::{
    ACCESS_TOKEN_TYPE, Claims, Identity, IssuedToken, TokenIssuer, is_scope_token, now_secs, sign,
};
pub use verify::{Verifier, VerifierConfig, bearer_token};

pub(crate) use verify::install_provider;

/// The header the gateway sets to the verified caller's subject; stripped
/// from every incoming request so a client cannot claim an identity.
pub const SUBJECT_HEADER: &str = "x-mortar-subject";

/// The header the gateway sets to the verified caller's scopes, separated
/// by spaces; stripped from every incoming request like [`SUBJECT_HEADER`].
pub const SCOPES_HEADER: &str = "x-mortar-scopes";
