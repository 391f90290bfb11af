//! Signing keys and their rotation. Each key has a state: `next` keys are published in the
//! JWKS before they sign anything (so caches hold them when they become active), the one
//! `active` key signs, and `retired` keys stay published until every token they signed has
//! expired: a key seen retired (at start, or at the reload that retired it) is published for
//! one maximum token lifetime more, then drops out of the JWKS.
//!
//! The `kid` is the key's RFC 7638 thumbprint, so it names the key itself and a rotation
//! never reuses one.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::jwk::{Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// Where a key is in its rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    Next,
    Active,
    Retired,
}

impl KeyState {
    pub fn parse(text: &str) -> Option<KeyState> {
        match text {
            "next" => Some(KeyState::Next),
            "active" => Some(KeyState::Active),
            "retired" => Some(KeyState::Retired),
            _ => None,
        }
    }
}

/// Why a signing key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "not a private key certgate can sign with (PKCS#8 or PKCS#1 PEM: EC P-256/P-384, Ed25519 or RSA)"
    )]
    Unreadable,
    #[error("algorithm {alg} does not fit this {kind} key; use {fits}")]
    WrongAlgorithm { alg: String, kind: &'static str, fits: &'static str },
    #[error("unknown algorithm {0:?}; use ES256, ES384, EdDSA, PS256 or RS256")]
    UnknownAlgorithm(String),
    #[error("the key failed a test signature: {0}")]
    SelfTest(String),
}

/// One signing key, loaded and checked once.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    pub state: KeyState,
    encoding: EncodingKey,
    /// The public JWK as published (`kty`, key members, `kid`, `use`, `alg`).
    public: Jwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).field("alg", &self.alg).finish()
    }
}

/// The algorithms a signing key may be configured with.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, KeyError> {
    match name {
        "ES256" => Ok(Algorithm::ES256),
        "ES384" => Ok(Algorithm::ES384),
        "EdDSA" => Ok(Algorithm::EdDSA),
        "PS256" => Ok(Algorithm::PS256),
        "PS384" => Ok(Algorithm::PS384),
        "PS512" => Ok(Algorithm::PS512),
        "RS256" => Ok(Algorithm::RS256),
        "RS384" => Ok(Algorithm::RS384),
        "RS512" => Ok(Algorithm::RS512),
        other => Err(KeyError::UnknownAlgorithm(other.to_string())),
    }
}

/// The name JOSE uses for `alg` (`ES256`, `EdDSA`).
pub fn algorithm_name(alg: Algorithm) -> String {
    serde_json::to_value(alg).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

impl SigningKey {
    /// Reads a PEM private key. `alg` defaults from the key: ES256 (P-256), ES384 (P-384),
    /// EdDSA (Ed25519), PS256 (RSA).
    pub fn from_pem(
        pem: &[u8],
        alg: Option<Algorithm>,
        state: KeyState,
    ) -> Result<SigningKey, KeyError> {
        let (encoding, alg, public) = if let Ok(key) = EncodingKey::from_ec_pem(pem) {
            let candidates = match alg {
                Some(a @ (Algorithm::ES256 | Algorithm::ES384)) => vec![a],
                Some(other) => {
                    return Err(wrong(other, "EC", "ES256 (P-256) or ES384 (P-384)"));
                }
                None => vec![Algorithm::ES256, Algorithm::ES384],
            };
            let mut found = None;
            for a in candidates {
                if let Ok(jwk) = Jwk::from_encoding_key(&key, a) {
                    found = Some((a, jwk));
                    break;
                }
            }
            let (alg, public) = found
                .ok_or_else(|| wrong(alg.unwrap_or(Algorithm::ES256), "EC", "the key's curve"))?;
            (key, alg, public)
        } else if let Ok(key) = EncodingKey::from_ed_pem(pem) {
            let alg = match alg {
                None | Some(Algorithm::EdDSA) => Algorithm::EdDSA,
                Some(other) => return Err(wrong(other, "Ed25519", "EdDSA")),
            };
            let public = Jwk::from_encoding_key(&key, alg).map_err(|_| KeyError::Unreadable)?;
            (key, alg, public)
        } else if let Ok(key) = EncodingKey::from_rsa_pem(pem) {
            let alg = match alg {
                None => Algorithm::PS256,
                Some(
                    a @ (Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
                    | Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512),
                ) => a,
                Some(other) => return Err(wrong(other, "RSA", "PS256 or RS256")),
            };
            let public = Jwk::from_encoding_key(&key, alg).map_err(|_| KeyError::Unreadable)?;
            (key, alg, public)
        } else {
            return Err(KeyError::Unreadable);
        };
        let kid = public
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| KeyError::SelfTest(e.to_string()))?;
        let mut public = public;
        public.common.key_id = Some(kid.clone());
        public.common.public_key_use = Some(PublicKeyUse::Signature);
        let key = SigningKey { kid, alg, state, encoding, public };
        key.self_test()?;
        Ok(key)
    }

    /// Signs a test token and verifies it with the public key, so a key that cannot do both
    /// (a too-short RSA key, a damaged file) is refused at load, not at the first request.
    fn self_test(&self) -> Result<(), KeyError> {
        let test = |e: jsonwebtoken::errors::Error| KeyError::SelfTest(e.to_string());
        let token = self.sign(&serde_json::json!({"exp": u32::MAX}), "JWT").map_err(test)?;
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&self.public).map_err(test)?;
        let mut validation = jsonwebtoken::Validation::new(self.alg);
        validation.required_spec_claims.clear();
        validation.validate_aud = false;
        jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).map_err(test)?;
        Ok(())
    }

    /// Signs `claims` as a compact JWS with this key's `alg` and `kid`, and header `typ`.
    pub fn sign(
        &self,
        claims: &serde_json::Value,
        typ: &str,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(self.alg);
        header.typ = Some(typ.to_string());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }

    pub fn public_jwk(&self) -> &Jwk {
        &self.public
    }
}

fn wrong(alg: Algorithm, kind: &'static str, fits: &'static str) -> KeyError {
    KeyError::WrongAlgorithm { alg: algorithm_name(alg), kind, fits }
}

/// The service's keys: exactly one active, any number next or retired.
#[derive(Debug)]
pub struct Keyring {
    keys: Vec<Arc<SigningKey>>,
    active: usize,
    /// Unix time until which each retired key is published.
    retired_until: HashMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("no signing key is active; mark exactly one `state = \"active\"`")]
    NoActive,
    #[error("{0} signing keys are active; mark exactly one `state = \"active\"`")]
    SeveralActive(usize),
    #[error("the same key is listed twice (kid {0})")]
    Duplicate(String),
}

impl Keyring {
    /// Builds the ring at unix time `now`. A retired key keeps the publication deadline it had
    /// in `previous` (the [`Keyring::retired_until`] of the ring before a reload); a key newly
    /// seen retired is published until `now + max_token_lifetime`.
    pub fn new(
        keys: Vec<SigningKey>,
        max_token_lifetime: u64,
        previous: Option<&HashMap<String, u64>>,
        now: u64,
    ) -> Result<Keyring, KeyringError> {
        let active: Vec<usize> =
            (0..keys.len()).filter(|&i| keys[i].state == KeyState::Active).collect();
        let active = match active.as_slice() {
            [] => return Err(KeyringError::NoActive),
            [one] => *one,
            many => return Err(KeyringError::SeveralActive(many.len())),
        };
        let mut retired_until = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|k| k.kid == key.kid) {
                return Err(KeyringError::Duplicate(key.kid.clone()));
            }
            if key.state == KeyState::Retired {
                let kept = previous.and_then(|p| p.get(&key.kid).copied());
                retired_until.insert(
                    key.kid.clone(),
                    kept.unwrap_or(now.saturating_add(max_token_lifetime)),
                );
            }
        }
        Ok(Keyring { keys: keys.into_iter().map(Arc::new).collect(), active, retired_until })
    }

    /// Until when (unix seconds) each retired key is published, by kid: what the next ring
    /// (after a reload) needs to keep the same deadlines.
    pub fn retired_until(&self) -> &HashMap<String, u64> {
        &self.retired_until
    }

    /// The key that signs.
    pub fn active(&self) -> &Arc<SigningKey> {
        // `new` checked that `active` indexes `keys`.
        &self.keys[self.active]
    }

    /// The keys a verifier should accept at unix time `now`: next, active, and retired ones
    /// still within their publication window.
    pub fn published(&self, now: u64) -> impl Iterator<Item = &Arc<SigningKey>> {
        self.keys.iter().filter(move |k| match k.state {
            KeyState::Next | KeyState::Active => true,
            KeyState::Retired => self.retired_until.get(&k.kid).is_some_and(|&until| now < until),
        })
    }

    /// The JWKS document (RFC 7517 section 5) at unix time `now`.
    pub fn jwks_json(&self, now: u64) -> String {
        let keys: Vec<serde_json::Value> =
            self.published(now).filter_map(|k| serde_json::to_value(k.public_jwk()).ok()).collect();
        serde_json::json!({ "keys": keys }).to_string()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn ec_pem() -> Vec<u8> {
        rcgen::KeyPair::generate().unwrap().serialize_pem().into_bytes()
    }

    #[test]
    fn keys_get_their_algorithm_and_a_thumbprint_kid() {
        let p256 = SigningKey::from_pem(&ec_pem(), None, KeyState::Active).unwrap();
        assert_eq!(p256.alg, Algorithm::ES256);
        assert_eq!(p256.kid.len(), 43);
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let p384 =
            SigningKey::from_pem(p384.serialize_pem().as_bytes(), None, KeyState::Next).unwrap();
        assert_eq!(p384.alg, Algorithm::ES384);
        let ed = certgate_pki::keys::KeyType::Ed25519.generate().unwrap();
        let ed =
            SigningKey::from_pem(certgate_pki::keys::to_pem(&ed).as_bytes(), None, KeyState::Next)
                .unwrap();
        assert_eq!(ed.alg, Algorithm::EdDSA);
        let err =
            SigningKey::from_pem(&ec_pem(), Some(Algorithm::PS256), KeyState::Active).unwrap_err();
        assert!(err.to_string().contains("does not fit this EC key"), "{err}");
        assert_eq!(
            SigningKey::from_pem(b"not a key", None, KeyState::Active).unwrap_err(),
            KeyError::Unreadable
        );
    }

    #[test]
    fn retired_keys_are_published_for_one_token_lifetime_then_dropped() {
        let make = |state| SigningKey::from_pem(&ec_pem(), None, state).unwrap();
        let (old_pem, new_pem) = (ec_pem(), ec_pem());
        let old = || SigningKey::from_pem(&old_pem, None, KeyState::Active).unwrap();
        let ring = Keyring::new(vec![old(), make(KeyState::Next)], 300, None, 1000).unwrap();
        assert_eq!(ring.published(1000).count(), 2);
        // Rotation at t=2000: old retired, published until 2300, whatever later reloads say.
        let retired = SigningKey::from_pem(&old_pem, None, KeyState::Retired).unwrap();
        let new = SigningKey::from_pem(&new_pem, None, KeyState::Active).unwrap();
        let ring2 =
            Keyring::new(vec![retired, new], 300, Some(ring.retired_until()), 2000).unwrap();
        let retired = SigningKey::from_pem(&old_pem, None, KeyState::Retired).unwrap();
        let new = SigningKey::from_pem(&new_pem, None, KeyState::Active).unwrap();
        let ring3 =
            Keyring::new(vec![retired, new], 300, Some(ring2.retired_until()), 2200).unwrap();
        assert_eq!(ring3.published(2299).count(), 2);
        assert_eq!(ring3.published(2300).count(), 1);
        let jwks: serde_json::Value = serde_json::from_str(&ring3.jwks_json(2300)).unwrap();
        assert_eq!(jwks["keys"][0]["kid"], ring3.active().kid.as_str());
        assert_eq!(jwks["keys"][0]["use"], "sig");
        assert_eq!(jwks["keys"][0]["alg"], "ES256");
        assert!(jwks["keys"][0].get("d").is_none(), "private part published");

        assert_eq!(
            Keyring::new(vec![make(KeyState::Next)], 300, None, 0).unwrap_err(),
            KeyringError::NoActive
        );
        assert_eq!(
            Keyring::new(vec![old(), old()], 300, None, 0).unwrap_err(),
            KeyringError::SeveralActive(2)
        );
    }
}
