//! [`Verifier`]: strict checks of access tokens against the issuer's
//! published keys, which it caches so an outage of the issuer does not lock
//! out users whose tokens are still valid.
//!
//! What is checked, in order: the header (`alg` must be `EdDSA` — `none`
//! and every other algorithm are refused before any key is looked at —,
//! `typ` must be `at+jwt`, no `crit`, a `kid`), the key (known to the
//! issuer's key set; an unknown `kid` triggers one rate-limited refresh),
//! the signature, then the claims: `exp` and `nbf` within a small leeway,
//! `iss` and `aud` exactly as configured, and `sub` present.
//!
//! Keys: fetched on first use, refreshed in the background every
//! `refresh_interval`, and on an unknown `kid` at most once per
//! `min_refresh_gap` (so forged `kid`s cannot turn into a flood of
//! fetches). A failed fetch keeps the keys already held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use crate::error::AuthError;
use crate::source::{DEFAULT_JWKS_PATH, JwksSource, ServiceJwks};
use crate::token::Identity;

/// The longest token accepted; real ones are well under 1 KiB.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Makes sure the JWT library uses the RustCrypto provider even if another
/// crate in the process enables a second provider feature (the library
/// would otherwise refuse to pick one).
pub(crate) fn install_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means a provider is already installed: that one is used.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    });
}

/// What a verifier accepts and how it keeps its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierConfig {
    /// The only accepted `iss`.
    pub issuer: String,
    /// The `aud` a token must name: this application.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`; keep it small (seconds).
    pub leeway: Duration,
    /// How often the key set is fetched again in the background.
    pub refresh_interval: Duration,
    /// The least time between two fetches triggered by unknown `kid`s.
    pub min_refresh_gap: Duration,
}

impl VerifierConfig {
    /// Defaults: 30 s leeway, refresh every 5 minutes, unknown-`kid`
    /// refreshes at most once a second (a rotated key is picked up within
    /// a second; a flood of forged `kid`s costs the issuer one fetch a
    /// second per verifier).
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        VerifierConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: Duration::from_secs(30),
            refresh_interval: Duration::from_secs(300),
            min_refresh_gap: Duration::from_secs(1),
        }
    }
}

/// The keys held, by id.
#[derive(Default)]
struct KeySet {
    keys: HashMap<String, DecodingKey>,
    /// Whether any fetch has succeeded yet.
    fetched: bool,
}

/// Verifies access tokens. Cheap to clone; clones share the key cache.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    config: VerifierConfig,
    validation: Validation,
    source: Arc<dyn JwksSource>,
    keys: ArcSwap<KeySet>,
    /// Held while fetching (one fetch at a time); the time of the last try.
    last_fetch: Mutex<Option<Instant>>,
    /// Fetches tried so far: a caller that waited for the lock while
    /// another fetched takes that fetch's result instead of queueing its own.
    attempts: AtomicU64,
    /// Dropped with the last clone, which ends the background refresh.
    alive: watch::Sender<()>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.inner.config)
            .field("source", &self.inner.source.describe())
            .finish()
    }
}

/// The claims a verifier reads; everything is optional here because the
/// JWT library reads before it validates, and a missing claim must be
/// reported as missing, not as bad JSON.
#[derive(Deserialize)]
struct VerifiedClaims {
    sub: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    exp: Option<u64>,
    #[serde(default)]
    jti: Option<String>,
}

/// The parts of the header checked before any key is looked at.
#[derive(Deserialize)]
struct RawHeader {
    alg: Option<serde_json::Value>,
    typ: Option<String>,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

/// Reads the header and refuses anything but an EdDSA access token with a
/// key id; returns the key id.
fn check_header(token: &str) -> Result<String, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed("it is too long"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed(
            "it must have three dot-separated parts",
        ));
    };
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed("its header is not base64url"))?;
    let header: RawHeader = serde_json::from_slice(&header)
        .map_err(|_| AuthError::Malformed("its header is not a JSON object"))?;
    match header.alg {
        Some(serde_json::Value::String(alg)) if alg == "EdDSA" => {}
        Some(serde_json::Value::String(alg)) => {
            // Echo a bounded, printable form only.
            let shown: String = alg
                .chars()
                .filter(char::is_ascii_graphic)
                .take(16)
                .collect();
            return Err(AuthError::AlgorithmNotAllowed(shown));
        }
        _ => return Err(AuthError::Malformed("its header names no algorithm")),
    }
    let typ_ok = header.typ.as_deref().is_some_and(|t| {
        t.eq_ignore_ascii_case(crate::token::ACCESS_TOKEN_TYPE)
            || t.eq_ignore_ascii_case("application/at+jwt")
    });
    if !typ_ok {
        return Err(AuthError::WrongType);
    }
    if header.crit.is_some() {
        return Err(AuthError::CriticalHeader);
    }
    if signature.is_empty() {
        return Err(AuthError::BadSignature);
    }
    match header.kid {
        Some(kid) if !kid.is_empty() => Ok(kid),
        _ => Err(AuthError::MissingKid),
    }
}

/// The token of an `Authorization: Bearer <token>` header (RFC 6750 §2.1).
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::MissingToken);
    };
    if values.next().is_some() {
        return Err(AuthError::MalformedHeader);
    }
    let value = value.to_str().map_err(|_| AuthError::MalformedHeader)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::MalformedHeader)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(AuthError::MalformedHeader);
    }
    Ok(token)
}

fn claims_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) => {
            AuthError::InvalidClaims(format!("the `{claim}` claim is missing"))
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            AuthError::InvalidClaims(format!("the `{claim}` claim has the wrong type"))
        }
        ErrorKind::InvalidToken => AuthError::InvalidClaims("the expiry is out of range".into()),
        ErrorKind::Json(_) => {
            AuthError::InvalidClaims("the claims are not a valid JSON object".into())
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::AlgorithmNotAllowed("?".into())
        }
        ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            AuthError::Malformed("a part is not valid base64url JSON")
        }
        _ => AuthError::Malformed("it cannot be decoded"),
    }
}

impl Verifier {
    /// A verifier with keys from `source`. Nothing is fetched until the
    /// first token arrives or [`Verifier::spawn_refresh`] starts the
    /// background refresh.
    pub fn new(config: VerifierConfig, source: Arc<dyn JwksSource>) -> Verifier {
        install_provider();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let (alive, _) = watch::channel(());
        Verifier {
            inner: Arc::new(Inner {
                config,
                validation,
                source,
                keys: ArcSwap::from_pointee(KeySet::default()),
                last_fetch: Mutex::new(None),
                attempts: AtomicU64::new(0),
                alive,
            }),
        }
    }

    /// A verifier fetching the key set of the issuer *service* `service`
    /// by name, at the conventional path (`/.well-known/jwks.json`).
    pub fn for_service(
        config: VerifierConfig,
        client: mortar_resilience::Client,
        service: &str,
    ) -> Verifier {
        Verifier::new(
            config,
            Arc::new(ServiceJwks::new(client, service, DEFAULT_JWKS_PATH)),
        )
    }

    /// The settings.
    pub fn config(&self) -> &VerifierConfig {
        &self.inner.config
    }

    /// The key ids held now.
    pub fn known_kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.inner.keys.load().keys.keys().cloned().collect();
        kids.sort();
        kids
    }

    /// Verifies the bearer token of a request's headers.
    pub async fn verify_headers(&self, headers: &HeaderMap) -> Result<Identity, AuthError> {
        self.verify(bearer_token(headers)?).await
    }

    /// Verifies a compact JWT; on success, who the caller is.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let kid = check_header(token)?;
        {
            let keys = self.inner.keys.load();
            if let Some(key) = keys.keys.get(&kid) {
                return self.decode(token, key);
            }
        }
        // Not held: the issuer may have rotated (or the token is forged).
        self.refresh().await;
        let keys = self.inner.keys.load();
        match keys.keys.get(&kid) {
            Some(key) => self.decode(token, key),
            None if !keys.fetched => Err(AuthError::KeysUnavailable),
            None => Err(AuthError::UnknownKid),
        }
    }

    fn decode(&self, token: &str, key: &DecodingKey) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<VerifiedClaims>(token, key, &self.inner.validation)
            .map_err(|e| claims_error(e.kind()))?;
        let claims = data.claims;
        let subject = claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::InvalidClaims("the `sub` claim is empty".into()))?;
        Ok(Identity {
            subject,
            scopes: claims
                .scope
                .unwrap_or_default()
                .split_ascii_whitespace()
                .map(str::to_owned)
                .collect(),
            expires_at: claims.exp.unwrap_or_default(),
            token_id: claims.jti,
        })
    }

    /// Fetches the key set now unless a fetch was tried within
    /// `min_refresh_gap`; concurrent callers share one fetch. Returns
    /// whether a fetch was made and succeeded. A failed fetch keeps the
    /// keys held.
    pub async fn refresh(&self) -> bool {
        self.inner.refresh(false).await == Fetch::Fetched
    }

    /// Fetches the key set now, even within `min_refresh_gap`. For the
    /// issuer itself right after it rotated its key: its own new tokens must
    /// verify at once, and the gap that protects a remote issuer from
    /// forged kids would otherwise hold the new key back.
    pub async fn reload(&self) -> bool {
        self.inner.refresh(true).await == Fetch::Fetched
    }

    /// Starts refreshing the key set in the background: at once, then
    /// every `refresh_interval`, sooner (with backoff) after a failure.
    /// The task ends when the last clone of this verifier is dropped.
    pub fn spawn_refresh(&self) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let mut alive = self.inner.alive.subscribe();
        tokio::spawn(async move {
            let mut backoff = None::<Duration>;
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let wait = match inner.refresh(false).await {
                    Fetch::Failed => {
                        let gap = inner.config.min_refresh_gap.max(Duration::from_millis(100));
                        let next = backoff.map_or(gap, |b| (b * 2).min(Duration::from_secs(60)));
                        backoff = Some(next);
                        next.min(inner.config.refresh_interval)
                    }
                    Fetch::Fetched | Fetch::Skipped => {
                        backoff = None;
                        inner.config.refresh_interval
                    }
                };
                drop(inner);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = alive.changed() => return,
                }
            }
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Fetch {
    Fetched,
    Failed,
    Skipped,
}

impl Inner {
    async fn refresh(&self, force: bool) -> Fetch {
        let before = self.attempts.load(Ordering::Acquire);
        let mut last = self.last_fetch.lock().await;
        if !force && self.attempts.load(Ordering::Acquire) != before {
            return Fetch::Skipped;
        }
        if !force
            && let Some(t) = *last
            && t.elapsed() < self.config.min_refresh_gap
        {
            if self.keys.load().fetched {
                return Fetch::Skipped;
            }
            // Never had keys (the issuer was not up yet when the last try
            // was made): rather than refuse, wait for the gap to pass and
            // try again; concurrent callers wait on this one fetch.
            tokio::time::sleep_until(t + self.config.min_refresh_gap).await;
        }
        *last = Some(Instant::now());
        let result = self.source.fetch().await;
        self.attempts.fetch_add(1, Ordering::Release);
        match result {
            Ok(jwks) => {
                let (keys, skipped) = jwks.decoding_keys();
                let old = self.keys.load();
                let added = keys.keys().filter(|k| !old.keys.contains_key(*k)).count();
                let removed = old.keys.keys().filter(|k| !keys.contains_key(*k)).count();
                if added > 0 || removed > 0 || !old.fetched {
                    tracing::info!(
                        source = %self.source.describe(),
                        keys = keys.len(),
                        added,
                        removed,
                        skipped,
                        "issuer keys updated"
                    );
                }
                self.keys.store(Arc::new(KeySet {
                    keys,
                    fetched: true,
                }));
                Fetch::Fetched
            }
            Err(error) => {
                tracing::warn!(
                    source = %self.source.describe(),
                    %error,
                    cached_keys = self.keys.load().keys.len(),
                    "cannot fetch the issuer's keys; tokens are checked against the cached ones"
                );
                Fetch::Failed
            }
        }
    }
}

#[cfg(test)]
mod tests;
