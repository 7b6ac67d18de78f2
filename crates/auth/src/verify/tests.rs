#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use super::*;
use crate::error::FetchError;
use crate::keys::{Jwks, SigningKey};
use crate::source::StaticJwks;
use crate::token::{TokenIssuer, now_secs};

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn parts(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

fn claims_of(token: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts(token)[1]).unwrap()).unwrap()
}

/// A key set whose fetches are counted and can be made to fail.
#[derive(Default)]
struct Counting {
    jwks: StaticJwks,
    fetches: AtomicUsize,
    down: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl JwksSource for Counting {
    async fn fetch(&self) -> Result<Jwks, FetchError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(FetchError::Status {
                path: "/.well-known/jwks.json".into(),
                status: 503,
            });
        }
        self.jwks.fetch().await
    }
    fn describe(&self) -> String {
        "counting".into()
    }
}

struct Fixture {
    key: SigningKey,
    issuer: TokenIssuer,
    source: Arc<Counting>,
    verifier: Verifier,
}

fn fixture() -> Fixture {
    let key = SigningKey::generate().unwrap();
    let source = Arc::new(Counting::default());
    source.jwks.set(Jwks {
        keys: vec![key.public_jwk()],
    });
    let verifier = Verifier::new(VerifierConfig::new("identity", "shop"), source.clone());
    Fixture {
        key,
        issuer: TokenIssuer::new("identity", "shop", Duration::from_secs(900)),
        source,
        verifier,
    }
}

impl Fixture {
    fn token(&self) -> String {
        self.issuer
            .issue(&self.key, "user-1", &["orders"])
            .unwrap()
            .token
    }

    /// `claims` signed with a valid signature under the fixture's key.
    fn signed(&self, claims: &Value) -> String {
        crate::token::sign(&self.key, claims).unwrap()
    }

    /// A token with a hand-made header (and its own valid signature).
    fn with_header(&self, header: jsonwebtoken::Header) -> String {
        install_provider();
        let claims = claims_of(&self.token());
        jsonwebtoken::encode(&header, &claims, self.key.encoding_key()).unwrap()
    }
}

#[tokio::test]
async fn a_valid_token_names_its_subject_and_scopes() {
    let f = fixture();
    let id = f.verifier.verify(&f.token()).await.unwrap();
    assert_eq!(id.subject, "user-1");
    assert_eq!(id.scopes, ["orders"]);
    assert!(id.expires_at > now_secs());
    assert!(id.token_id.is_some());
    assert_eq!(f.verifier.known_kids(), [f.key.kid().to_owned()]);
}

#[tokio::test]
async fn tampered_tokens_are_refused() {
    let f = fixture();
    let token = f.token();
    let p = parts(&token);
    // Claims changed, signature kept.
    let mut claims = claims_of(&token);
    claims["scope"] = json!("orders identity:admin");
    let forged = format!("{}.{}.{}", p[0], b64(&claims), p[2]);
    assert_eq!(
        f.verifier.verify(&forged).await,
        Err(AuthError::BadSignature)
    );
    // Signature changed.
    let mut sig = URL_SAFE_NO_PAD.decode(&p[2]).unwrap();
    sig[0] ^= 1;
    let forged = format!("{}.{}.{}", p[0], p[1], URL_SAFE_NO_PAD.encode(sig));
    assert_eq!(
        f.verifier.verify(&forged).await,
        Err(AuthError::BadSignature)
    );
    // Signed by another key that claims the same kid.
    let other = SigningKey::generate().unwrap();
    let theirs = f.issuer.issue(&other, "user-1", &["orders"]).unwrap().token;
    let q = parts(&theirs);
    let forged = format!("{}.{}.{}", p[0], q[1], q[2]);
    assert_eq!(
        f.verifier.verify(&forged).await,
        Err(AuthError::BadSignature)
    );
}

#[tokio::test]
async fn expiry_and_not_before_allow_only_the_leeway() {
    let f = fixture();
    let now = now_secs();
    let short = TokenIssuer::new("identity", "shop", Duration::from_secs(60));
    let expired = short
        .issue_at(&f.key, "u", &["orders"], now - 120)
        .unwrap()
        .token;
    assert_eq!(f.verifier.verify(&expired).await, Err(AuthError::Expired));
    // Expired 10 s ago: within the 30 s leeway.
    let recent = short
        .issue_at(&f.key, "u", &["orders"], now - 70)
        .unwrap()
        .token;
    assert!(f.verifier.verify(&recent).await.is_ok());
    let future = f
        .issuer
        .issue_at(&f.key, "u", &["orders"], now + 300)
        .unwrap()
        .token;
    assert_eq!(
        f.verifier.verify(&future).await,
        Err(AuthError::NotYetValid)
    );
    let soon = f
        .issuer
        .issue_at(&f.key, "u", &["orders"], now + 10)
        .unwrap()
        .token;
    assert!(f.verifier.verify(&soon).await.is_ok());
}

#[tokio::test]
async fn audience_and_issuer_must_match_exactly() {
    let f = fixture();
    let other_app = TokenIssuer::new("identity", "bank", Duration::from_secs(60));
    let t = other_app.issue(&f.key, "u", &["orders"]).unwrap().token;
    assert_eq!(f.verifier.verify(&t).await, Err(AuthError::WrongAudience));
    let other_issuer = TokenIssuer::new("evil", "shop", Duration::from_secs(60));
    let t = other_issuer.issue(&f.key, "u", &["orders"]).unwrap().token;
    assert_eq!(f.verifier.verify(&t).await, Err(AuthError::WrongIssuer));
    let mut claims = claims_of(&f.token());
    claims["aud"] = json!(["bank", "other"]);
    assert_eq!(
        f.verifier.verify(&f.signed(&claims)).await,
        Err(AuthError::WrongAudience)
    );
}

#[tokio::test]
async fn required_claims_must_be_present() {
    let f = fixture();
    for claim in ["sub", "exp", "nbf", "iss", "aud"] {
        let mut claims = claims_of(&f.token());
        claims.as_object_mut().unwrap().remove(claim);
        let err = f.verifier.verify(&f.signed(&claims)).await.unwrap_err();
        assert!(
            matches!(&err, AuthError::InvalidClaims(m) if m.contains(claim)),
            "{claim}: {err:?}"
        );
    }
    let mut claims = claims_of(&f.token());
    claims["exp"] = json!("tomorrow");
    assert!(matches!(
        f.verifier.verify(&f.signed(&claims)).await,
        Err(AuthError::InvalidClaims(_))
    ));
}

#[tokio::test]
async fn only_eddsa_access_tokens_with_a_kid_are_looked_at() {
    let f = fixture();
    let token = f.token();
    let p = parts(&token);
    // alg: none, no signature.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "at+jwt", "kid": f.key.kid()})),
        p[1]
    );
    assert_eq!(
        f.verifier.verify(&none).await,
        Err(AuthError::AlgorithmNotAllowed("none".into()))
    );
    // Algorithm confusion: HS256 with the public key as the secret.
    let mut hs = jsonwebtoken::Header::new(Algorithm::HS256);
    hs.typ = Some("at+jwt".into());
    hs.kid = Some(f.key.kid().into());
    let x = f.key.public_jwk().x.unwrap();
    let confused = jsonwebtoken::encode(
        &hs,
        &claims_of(&token),
        &jsonwebtoken::EncodingKey::from_secret(x.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        f.verifier.verify(&confused).await,
        Err(AuthError::AlgorithmNotAllowed("HS256".into()))
    );
    // Not an access token.
    let mut jwt = jsonwebtoken::Header::new(Algorithm::EdDSA);
    jwt.kid = Some(f.key.kid().into());
    jwt.typ = Some("JWT".into());
    assert_eq!(
        f.verifier.verify(&f.with_header(jwt)).await,
        Err(AuthError::WrongType)
    );
    // Critical extensions.
    let mut crit = jsonwebtoken::Header::new(Algorithm::EdDSA);
    crit.kid = Some(f.key.kid().into());
    crit.typ = Some("at+jwt".into());
    crit.crit = Some(vec!["exp".into()]);
    assert_eq!(
        f.verifier.verify(&f.with_header(crit)).await,
        Err(AuthError::CriticalHeader)
    );
    // No kid.
    let mut nokid = jsonwebtoken::Header::new(Algorithm::EdDSA);
    nokid.typ = Some("at+jwt".into());
    assert_eq!(
        f.verifier.verify(&f.with_header(nokid)).await,
        Err(AuthError::MissingKid)
    );
    // Not a JWT at all.
    for junk in ["", "abc", "a.b", "a.b.c.d", "!!.e30.x", &"a".repeat(9000)] {
        assert!(
            matches!(f.verifier.verify(junk).await, Err(AuthError::Malformed(_))),
            "{junk:.20}"
        );
    }
    assert_eq!(
        f.source.fetches.load(Ordering::SeqCst),
        0,
        "no key was needed"
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_kids_refresh_at_most_once_per_gap() {
    let f = fixture();
    f.verifier.verify(&f.token()).await.unwrap();
    assert_eq!(f.source.fetches.load(Ordering::SeqCst), 1);
    let stranger = SigningKey::generate().unwrap();
    let forged = f.issuer.issue(&stranger, "u", &["orders"]).unwrap().token;
    // The first gap has not passed since the first fetch.
    assert_eq!(f.verifier.verify(&forged).await, Err(AuthError::UnknownKid));
    tokio::time::advance(Duration::from_secs(6)).await;
    let all = futures_join(&f.verifier, &forged, 20).await;
    assert!(all.iter().all(|r| *r == Err(AuthError::UnknownKid)));
    assert_eq!(
        f.source.fetches.load(Ordering::SeqCst),
        2,
        "20 forged tokens, one fetch"
    );
}

async fn futures_join(v: &Verifier, token: &str, n: usize) -> Vec<Result<Identity, AuthError>> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (v, t) = (v.clone(), token.to_owned());
        set.spawn(async move { v.verify(&t).await });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_rotated_key_is_fetched_when_its_first_token_arrives() {
    let f = fixture();
    f.verifier.verify(&f.token()).await.unwrap();
    let next = SigningKey::generate().unwrap();
    f.source.jwks.set(Jwks {
        keys: vec![next.public_jwk(), f.key.public_jwk()],
    });
    tokio::time::advance(Duration::from_secs(6)).await;
    let token = f.issuer.issue(&next, "user-2", &["orders"]).unwrap().token;
    assert_eq!(f.verifier.verify(&token).await.unwrap().subject, "user-2");
    // The old key still verifies its tokens.
    assert!(f.verifier.verify(&f.token()).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn cached_keys_outlive_an_issuer_outage() {
    let f = fixture();
    let token = f.token();
    f.verifier.verify(&token).await.unwrap();
    f.source.down.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(600)).await;
    assert!(!f.verifier.refresh().await, "the fetch fails");
    assert_eq!(f.verifier.verify(&token).await.unwrap().subject, "user-1");
}

#[tokio::test(start_paused = true)]
async fn without_any_keys_a_token_cannot_be_checked_yet() {
    let f = fixture();
    f.source.down.store(true, Ordering::SeqCst);
    assert_eq!(
        f.verifier.verify(&f.token()).await,
        Err(AuthError::KeysUnavailable)
    );
    // The issuer comes up: the next token waits out the gap and is checked,
    // instead of being refused for a failure a moment ago.
    f.source.down.store(false, Ordering::SeqCst);
    let started = Instant::now();
    assert!(f.verifier.verify(&f.token()).await.is_ok());
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(f.source.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn while_the_issuer_was_never_reached_requests_share_each_try() {
    let f = fixture();
    f.source.down.store(true, Ordering::SeqCst);
    assert_eq!(
        f.verifier.verify(&f.token()).await,
        Err(AuthError::KeysUnavailable)
    );
    // 20 requests at once: one more fetch, not 20 in a row a second apart.
    let started = Instant::now();
    let all = futures_join(&f.verifier, &f.token(), 20).await;
    assert!(all.iter().all(|r| *r == Err(AuthError::KeysUnavailable)));
    assert_eq!(f.source.fetches.load(Ordering::SeqCst), 2);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn the_background_refresh_follows_the_issuer_and_stops_with_the_verifier() {
    let f = fixture();
    let task = f.verifier.spawn_refresh();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(f.source.fetches.load(Ordering::SeqCst), 1);
    let next = SigningKey::generate().unwrap();
    f.source.jwks.set(Jwks {
        keys: vec![next.public_jwk()],
    });
    tokio::time::sleep(Duration::from_secs(301)).await;
    assert_eq!(f.verifier.known_kids(), [next.kid().to_owned()]);
    // Failures are retried sooner than the interval.
    f.source.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(300)).await;
    let during = f.source.fetches.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(f.source.fetches.load(Ordering::SeqCst) > during);
    assert_eq!(f.verifier.known_kids(), [next.kid().to_owned()]);
    drop(f);
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the refresh task ends with the verifier")
        .unwrap();
}

#[test]
fn bearer_headers_are_parsed_strictly() {
    use http::HeaderValue;
    use http::header::AUTHORIZATION;
    let mut h = HeaderMap::new();
    assert_eq!(bearer_token(&h), Err(AuthError::MissingToken));
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_static("Bearer abc.def.ghi"),
    );
    assert_eq!(bearer_token(&h), Ok("abc.def.ghi"));
    h.insert(AUTHORIZATION, HeaderValue::from_static("bearer   abc"));
    assert_eq!(bearer_token(&h), Ok("abc"));
    for bad in [
        "Basic dXNlcjpwdw==",
        "Bearer",
        "Bearer ",
        "Bearer a b",
        "abc",
    ] {
        h.insert(AUTHORIZATION, HeaderValue::from_static(bad));
        assert_eq!(bearer_token(&h), Err(AuthError::MalformedHeader), "{bad}");
    }
    h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer a"));
    h.append(AUTHORIZATION, HeaderValue::from_static("Bearer b"));
    assert_eq!(bearer_token(&h), Err(AuthError::MalformedHeader));
}
