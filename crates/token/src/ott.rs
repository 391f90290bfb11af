//! One-time tokens for the online CA's `POST /sign` (step-ca's OTT): a JWS signed with ES256
//! by a provisioner key, naming the identity a client may request a certificate for.
//!
//! Claims: `iss` the provisioner, `aud` the CA (its `/sign` URL or its root's SHA-256
//! fingerprint), `sub` the name, `sans` the names allowed besides it, `iat`/`nbf`/`exp`, and a
//! random `jti` that the CA records so the token is used once. This module signs and
//! verifies; the CA records the `jti` and checks the request against the provisioner's
//! profile.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Tokens longer than this are refused unread.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: u64 = 60;

/// The claims of a one-time token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OttClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    #[serde(default)]
    pub sans: Vec<String>,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
}

/// Why a token was refused (answered 401 with this message) or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OttError {
    #[error("the token is not a JWS (header.payload.signature)")]
    Malformed,
    #[error("the token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("the token is signed with {0}; one-time tokens use ES256")]
    Algorithm(String),
    #[error("no provisioner named {0:?}")]
    UnknownProvisioner(String),
    #[error("the token's signature does not verify with provisioner {0:?}'s key")]
    BadSignature(String),
    #[error("the token expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is for another audience ({0:?}), not this CA")]
    Audience(String),
    #[error("the token has no {0:?} claim, or an invalid one")]
    Claim(String),
    #[error("the provisioner key cannot sign: {0}")]
    Key(String),
}

/// Signs `claims` with the provisioner key `key_pem` (EC P-256, PKCS#8 PEM).
pub fn sign(key_pem: &[u8], claims: &OttClaims) -> Result<String, OttError> {
    let key = EncodingKey::from_ec_pem(key_pem).map_err(|e| OttError::Key(e.to_string()))?;
    jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &key)
        .map_err(|e| OttError::Key(e.to_string()))
}

/// A random `jti`: 16 bytes, base64url.
pub fn random_jti() -> Result<String, OttError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| OttError::Key("no randomness".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Verifies `token` at `now` (Unix seconds): the header's algorithm (ES256 only), the key of
/// the provisioner its `iss` names (`key_of` gives its public key, PEM), the signature, `exp`
/// and `nbf` with [`LEEWAY_SECONDS`], a non-empty `sub` and `jti`, and `aud` by
/// `audience_ok`.
pub fn verify(
    token: &str,
    key_of: impl Fn(&str) -> Option<Vec<u8>>,
    audience_ok: impl Fn(&str) -> bool,
    now: u64,
) -> Result<OttClaims, OttError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(OttError::TooLarge);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| OttError::Malformed)?;
    if header.alg != Algorithm::ES256 {
        return Err(OttError::Algorithm(format!("{:?}", header.alg)));
    }
    // The issuer, read before verification only to choose the key that verifies it.
    let iss = unverified_issuer(token)?;
    let pem = key_of(&iss).ok_or_else(|| OttError::UnknownProvisioner(iss.clone()))?;
    let key = DecodingKey::from_ec_pem(&pem).map_err(|e| OttError::Key(e.to_string()))?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_aud = false;
    validation.validate_exp = false;
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf"]);
    let claims = jsonwebtoken::decode::<OttClaims>(token, &key, &validation)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => OttError::BadSignature(iss.clone()),
                K::MissingRequiredClaim(c) => OttError::Claim(c.clone()),
                K::Json(_) | K::InvalidClaimFormat(_) => OttError::Claim("claims".into()),
                _ => OttError::Malformed,
            }
        })?
        .claims;
    if claims.exp.saturating_add(LEEWAY_SECONDS) < now {
        return Err(OttError::Expired);
    }
    if claims.nbf > now.saturating_add(LEEWAY_SECONDS) {
        return Err(OttError::NotYetValid);
    }
    if !audience_ok(&claims.aud) {
        return Err(OttError::Audience(claims.aud.chars().take(200).collect()));
    }
    if claims.sub.trim().is_empty() {
        return Err(OttError::Claim("sub".into()));
    }
    if claims.jti.trim().is_empty() || claims.jti.len() > 256 {
        return Err(OttError::Claim("jti".into()));
    }
    Ok(claims)
}

fn unverified_issuer(token: &str) -> Result<String, OttError> {
    let payload = token.split('.').nth(1).ok_or(OttError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| OttError::Malformed)?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| OttError::Malformed)?;
    match value.get("iss").and_then(|v| v.as_str()) {
        Some(iss) => Ok(iss.to_string()),
        None => Err(OttError::Claim("iss".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> rcgen::KeyPair {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
    }

    fn claims(now: u64) -> OttClaims {
        OttClaims {
            iss: "default".into(),
            aud: "fp".into(),
            sub: "svc".into(),
            sans: vec!["svc.example.com".into()],
            iat: now,
            nbf: now,
            exp: now + 300,
            jti: random_jti().unwrap(),
        }
    }

    /// A token verifies with its provisioner's key and audience; another key, audience,
    /// provisioner or an expired token is refused with its reason.
    #[test]
    fn tokens_verify_only_with_their_key_audience_and_time() {
        let (k, other) = (key(), key());
        let now = 1_800_000_000;
        let token = sign(k.serialize_pem().as_bytes(), &claims(now)).unwrap();
        let pub_of = |key: &rcgen::KeyPair| {
            let pem = key.public_key_pem();
            move |iss: &str| (iss == "default").then(|| pem.clone().into_bytes())
        };
        let ok = verify(&token, pub_of(&k), |aud| aud == "fp", now + 10).unwrap();
        assert_eq!(ok, OttClaims { ..ok.clone() });
        assert_eq!(ok.sub, "svc");
        assert_eq!(
            verify(&token, pub_of(&other), |aud| aud == "fp", now),
            Err(OttError::BadSignature("default".into()))
        );
        assert_eq!(
            verify(&token, pub_of(&k), |aud| aud == "x", now),
            Err(OttError::Audience("fp".into()))
        );
        assert_eq!(verify(&token, pub_of(&k), |_| true, now + 361), Err(OttError::Expired));
        assert!(verify(&token, pub_of(&k), |_| true, now + 359).is_ok(), "within the leeway");
        assert_eq!(
            verify(&token, |_| None, |_| true, now),
            Err(OttError::UnknownProvisioner("default".into()))
        );
        assert_eq!(verify("a.b", pub_of(&k), |_| true, now), Err(OttError::Malformed));
    }
}
