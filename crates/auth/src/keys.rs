//! Ed25519 signing keys and their public halves as a JWK Set (RFC 7517,
//! with the OKP key type of RFC 8037).
//!
//! Each key is named by its RFC 7638 thumbprint, used as the token header's
//! `kid`: the name follows from the key itself, so two instances of an
//! issuer can never give one name to two keys.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::KeyError;

/// The PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410 §7): the
/// DER encoding is this, then the 32-byte seed. The JWT library takes
/// private keys as PKCS#8 DER.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Fills `buf` from the operating system's random source.
pub(crate) fn random(buf: &mut [u8]) -> Result<(), KeyError> {
    getrandom::fill(buf).map_err(|e| KeyError::Random(e.to_string()))
}

/// `n` random bytes, base64url without padding: token ids, opaque tokens.
pub fn random_token(n: usize) -> Result<String, KeyError> {
    let mut buf = vec![0u8; n];
    random(&mut buf)?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// An Ed25519 private key with its key id; what an issuer signs with.
///
/// `Debug` shows only the key id, so the private half never reaches a log.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    seed: [u8; 32],
    public: [u8; 32],
    encoding: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<SigningKey, KeyError> {
        let mut seed = [0u8; 32];
        random(&mut seed)?;
        Ok(SigningKey::from_seed(seed))
    }

    /// The key whose 32-byte private seed is `seed` (as stored by
    /// [`SigningKey::seed`]).
    pub fn from_seed(seed: [u8; 32]) -> SigningKey {
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        let mut der = Vec::with_capacity(48);
        der.extend_from_slice(&PKCS8_ED25519_PREFIX);
        der.extend_from_slice(&seed);
        SigningKey {
            kid: thumbprint(&public),
            seed,
            public,
            encoding: EncodingKey::from_ed_der(&der),
        }
    }

    /// Like [`SigningKey::from_seed`], from a stored slice of any length.
    pub fn from_seed_slice(seed: &[u8]) -> Result<SigningKey, KeyError> {
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| KeyError::SeedLength(seed.len()))?;
        Ok(SigningKey::from_seed(seed))
    }

    /// The key id: the RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The private seed, to store the key. Keep it secret.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The public half as a JWK, for the issuer's key set.
    pub fn public_jwk(&self) -> Jwk {
        Jwk::ed25519(&self.kid, &self.public)
    }

    pub(crate) fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }
}

/// The RFC 7638 thumbprint of an Ed25519 public key: SHA-256 over the
/// required members in lexicographic order, base64url.
fn thumbprint(public: &[u8; 32]) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(public)
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// One public key of a JWK Set. Only the members mortar reads or writes;
/// other members are ignored when reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type; mortar issues `OKP` (RFC 8037).
    pub kty: String,
    /// Curve; `Ed25519`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// The public key, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// Key id, matched against a token's `kid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Intended algorithm; `EdDSA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Intended use; `sig`.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

impl Jwk {
    /// The JWK of an Ed25519 public key.
    pub fn ed25519(kid: &str, public: &[u8; 32]) -> Jwk {
        Jwk {
            kty: "OKP".to_owned(),
            crv: Some("Ed25519".to_owned()),
            x: Some(URL_SAFE_NO_PAD.encode(public)),
            kid: Some(kid.to_owned()),
            alg: Some("EdDSA".to_owned()),
            use_: Some("sig".to_owned()),
        }
    }

    /// The key a verifier can use, when this is an Ed25519 signing key with
    /// an id and a valid point; `None` otherwise (RFC 7517 §5: keys a
    /// verifier does not understand are ignored, not an error).
    fn usable(&self) -> Option<(String, DecodingKey)> {
        if self.kty != "OKP"
            || self.crv.as_deref() != Some("Ed25519")
            || self.alg.as_deref().is_some_and(|a| a != "EdDSA")
            || self.use_.as_deref().is_some_and(|u| u != "sig")
        {
            return None;
        }
        let kid = self.kid.clone().filter(|k| !k.is_empty())?;
        let x = URL_SAFE_NO_PAD.decode(self.x.as_deref()?).ok()?;
        let x: [u8; 32] = x.try_into().ok()?;
        // The JWT library would only find a bad point when verifying.
        ed25519_dalek::VerifyingKey::from_bytes(&x).ok()?;
        Some((kid, DecodingKey::from_ed_der(&x)))
    }
}

/// A JWK Set: the issuer's public keys, published for verifiers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys, current signing key and the ones still honoured.
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// The usable keys by id; unusable entries are skipped and counted.
    pub(crate) fn decoding_keys(&self) -> (HashMap<String, DecodingKey>, usize) {
        let mut keys = HashMap::new();
        let mut skipped = 0;
        for jwk in &self.keys {
            match jwk.usable() {
                Some((kid, key)) => {
                    keys.insert(kid, key);
                }
                None => skipped += 1,
            }
        }
        (keys, skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_key_and_kid_again() {
        let key = SigningKey::generate().unwrap();
        let again = SigningKey::from_seed_slice(key.seed()).unwrap();
        assert_eq!(key.kid(), again.kid());
        assert_eq!(key.public_jwk(), again.public_jwk());
        assert_ne!(key.kid(), SigningKey::generate().unwrap().kid());
        assert!(SigningKey::from_seed_slice(&[0; 31]).is_err());
        assert!(!format!("{key:?}").contains(&format!("{:?}", key.seed())));
    }

    #[test]
    fn thumbprint_matches_rfc_8037_example() {
        // RFC 8037 appendix A.3: the thumbprint of the A.2 public key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        assert_eq!(
            thumbprint(&x.try_into().unwrap()),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn only_ed25519_signing_keys_with_an_id_are_used() {
        let key = SigningKey::generate().unwrap();
        let mut no_kid = key.public_jwk();
        no_kid.kid = None;
        let mut rsa = key.public_jwk();
        rsa.kty = "RSA".into();
        let mut enc = key.public_jwk();
        enc.use_ = Some("enc".into());
        let mut short = key.public_jwk();
        short.x = Some("AAAA".into());
        let set = Jwks {
            keys: vec![key.public_jwk(), no_kid, rsa, enc, short],
        };
        let (keys, skipped) = set.decoding_keys();
        assert_eq!(keys.len(), 1);
        assert!(keys.contains_key(key.kid()));
        assert_eq!(skipped, 4);
    }

    #[test]
    fn jwks_round_trips_as_rfc_7517_json() {
        let key = SigningKey::generate().unwrap();
        let set = Jwks {
            keys: vec![key.public_jwk()],
        };
        let json = serde_json::to_value(&set).unwrap();
        assert_eq!(json["keys"][0]["kty"], "OKP");
        assert_eq!(json["keys"][0]["crv"], "Ed25519");
        assert_eq!(json["keys"][0]["use"], "sig");
        assert_eq!(json["keys"][0]["alg"], "EdDSA");
        let back: Jwks = serde_json::from_value(json).unwrap();
        assert_eq!(back, set);
    }
}
