//! RFC 9068 access tokens: the claims certgate issues, and [`Verifier`], the resource-server
//! check, in the order that closes jsonwebtoken's gaps: the header's `alg` is checked against
//! the allow-list before a key is looked up, the JWK's own `alg` and type must fit the
//! header's, `typ` is checked by hand (the library never looks), `crit` is refused, and `iss`,
//! `aud`, `exp` and `sub` are required, not merely checked when present.

use std::collections::HashSet;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::keys::{Keyring, algorithm_name};

/// The largest token read: larger ones are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The most keys a JWKS may hold.
pub const MAX_JWKS_KEYS: usize = 64;

/// Keys that verify tokens, from a JWKS document or from the service's own keyring.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

#[derive(Clone)]
struct VerifyKey {
    kid: Option<String>,
    /// The algorithms this key may verify: its JWK `alg`, or those its type allows.
    algs: Vec<Algorithm>,
    key: DecodingKey,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_deref().unwrap_or("-")).collect();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

/// Why a JWKS document cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("not a JWKS document ({0})")]
    NotJwks(String),
    #[error("it has more than {MAX_JWKS_KEYS} keys")]
    TooManyKeys,
    #[error("it has no public signing key certgate can use (EC P-256/P-384, Ed25519 or RSA)")]
    NoUsableKey,
}

impl KeySet {
    /// Reads a JWKS (`{"keys": [...]}`). Keys of unknown types, symmetric keys, encryption
    /// keys and keys with private members are skipped (RFC 7517 section 5: consumers ignore
    /// what they do not understand); a set with no usable key is an error.
    pub fn from_jwks(json: &[u8]) -> Result<KeySet, JwksError> {
        let doc: Value =
            serde_json::from_slice(json).map_err(|e| JwksError::NotJwks(e.to_string()))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| JwksError::NotJwks("no \"keys\" array".into()))?;
        if keys.len() > MAX_JWKS_KEYS {
            return Err(JwksError::TooManyKeys);
        }
        let mut set = KeySet::default();
        for key in keys {
            let private = ["d", "p", "q", "k"].iter().any(|m| key.get(m).is_some());
            if private {
                continue;
            }
            let Ok(jwk) = serde_json::from_value::<Jwk>(key.clone()) else { continue };
            if let Some(k) = VerifyKey::from_jwk(&jwk) {
                set.keys.push(k);
            }
        }
        if set.keys.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        Ok(set)
    }

    /// The keys `ring` publishes at unix time `now`.
    pub fn from_keyring(ring: &Keyring, now: u64) -> KeySet {
        KeySet {
            keys: ring.published(now).filter_map(|k| VerifyKey::from_jwk(k.public_jwk())).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl VerifyKey {
    fn from_jwk(jwk: &Jwk) -> Option<VerifyKey> {
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            return None;
        }
        let by_type: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                vec![Algorithm::EdDSA]
            }
            AlgorithmParameters::RSA(_) => vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
            // Symmetric (`oct`) keys never verify access tokens here: whoever can verify
            // could also mint.
            _ => return None,
        };
        let algs = match jwk.common.key_algorithm {
            Some(named) => {
                let named = Algorithm::from_str_opt(&format!("{named}"))?;
                if !by_type.contains(&named) {
                    return None;
                }
                vec![named]
            }
            None => by_type,
        };
        let key = DecodingKey::from_jwk(jwk).ok()?;
        Some(VerifyKey { kid: jwk.common.key_id.clone(), algs, key })
    }
}

/// `Algorithm` from its JOSE name, without the library's error type.
trait FromStrOpt: Sized {
    fn from_str_opt(name: &str) -> Option<Self>;
}

impl FromStrOpt for Algorithm {
    fn from_str_opt(name: &str) -> Option<Algorithm> {
        name.parse().ok()
    }
}

/// Why a token is refused. `Display` is a reason the client's developer can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the access token is not a JWT")]
    Malformed,
    #[error("the access token is larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("the access token's algorithm {0} is not accepted here")]
    AlgorithmNotAllowed(String),
    #[error("the access token was signed by an unknown key (kid {0})")]
    UnknownKey(String),
    #[error("the access token names no key (kid) and several keys could have signed it")]
    NoKeyId,
    #[error("the access token's signature does not verify")]
    BadSignature,
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is not valid yet")]
    NotYetValid,
    #[error("the access token was issued by another issuer")]
    WrongIssuer,
    #[error("the access token is meant for another audience")]
    WrongAudience,
    #[error("the access token has type {0:?}, not an access token (at+jwt)")]
    WrongType(String),
    #[error("the access token lacks the {0} claim")]
    MissingClaim(String),
    #[error("the access token's {0} claim is malformed")]
    BadClaim(String),
    #[error("the access token has critical header parameters certgate does not understand")]
    Critical,
}

/// The route's rules for tokens.
#[derive(Debug, Clone)]
pub struct Verifier {
    pub issuer: String,
    /// The token's `aud` must include one of these (empty: any audience, for the service's
    /// own introspection; `aud` is still required).
    pub audience: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway: u64,
    /// Require `typ: at+jwt` (RFC 9068 section 4). On by default; some authorization servers
    /// issue plain `JWT` access tokens.
    pub require_at_jwt: bool,
}

/// A token that verified, with the claims the gateway uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub claims: Map<String, Value>,
    pub sub: String,
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
    /// `cnf.x5t#S256`, if the token is bound to a certificate.
    pub cnf_x5t: Option<String>,
    pub exp: u64,
    pub nbf: Option<u64>,
    pub jti: Option<String>,
}

impl Verified {
    /// Reads the claims of a token whose signature and standard claims were checked.
    pub fn from_claims(claims: Map<String, Value>) -> Result<Verified, TokenError> {
        let text = |name: &str| -> Result<Option<String>, TokenError> {
            match claims.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(TokenError::BadClaim(name.into())),
            }
        };
        let sub = text("sub")?.ok_or_else(|| TokenError::MissingClaim("sub".into()))?;
        let number = |name: &str| claims.get(name).and_then(Value::as_u64);
        let exp = number("exp").ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
        let scopes = text("scope")?
            .map(|s| s.split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        let cnf_x5t = match claims.get("cnf") {
            None => None,
            Some(Value::Object(cnf)) => match cnf.get("x5t#S256") {
                None => None,
                Some(Value::String(t)) => Some(t.clone()),
                Some(_) => return Err(TokenError::BadClaim("cnf".into())),
            },
            Some(_) => return Err(TokenError::BadClaim("cnf".into())),
        };
        Ok(Verified {
            client_id: text("client_id")?,
            jti: text("jti")?,
            nbf: number("nbf"),
            sub,
            scopes,
            cnf_x5t,
            exp,
            claims,
        })
    }

    /// Whether the token is within its lifetime at unix time `now`, with `leeway` seconds.
    pub fn current(&self, now: u64, leeway: u64) -> Result<(), TokenError> {
        if self.exp.saturating_add(leeway) <= now {
            return Err(TokenError::Expired);
        }
        if self.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(TokenError::NotYetValid);
        }
        Ok(())
    }
}

impl Verifier {
    /// Verifies `token` with `keys`: signature, header, standard claims. Binding and scopes
    /// are the caller's next steps.
    pub fn verify(&self, token: &str, keys: &KeySet) -> Result<Verified, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        // 1. The algorithm, before any key is looked up.
        if !self.algorithms.contains(&header.alg) {
            return Err(TokenError::AlgorithmNotAllowed(algorithm_name(header.alg)));
        }
        if header.crit.is_some() {
            return Err(TokenError::Critical);
        }
        // 2. `typ`, which the library never checks.
        if self.require_at_jwt {
            let typ = header.typ.clone().unwrap_or_default();
            let lower = typ.to_ascii_lowercase();
            if lower != "at+jwt" && lower != "application/at+jwt" {
                return Err(TokenError::WrongType(typ));
            }
        }
        // 3. The key: by kid, and only one whose own algorithm fits the header's.
        let fits = |k: &&VerifyKey| k.algs.contains(&header.alg);
        let key = match &header.kid {
            Some(kid) => keys
                .keys
                .iter()
                .filter(fits)
                .find(|k| k.kid.as_deref() == Some(kid.as_str()))
                .ok_or_else(|| TokenError::UnknownKey(kid.clone()))?,
            None => {
                let mut candidates = keys.keys.iter().filter(fits);
                match (candidates.next(), candidates.next()) {
                    (Some(only), None) => only,
                    (None, _) => return Err(TokenError::UnknownKey("none given".into())),
                    (Some(_), Some(_)) => return Err(TokenError::NoKeyId),
                }
            }
        };
        // 4. Signature and the standard claims, all required.
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.set_issuer(&[&self.issuer]);
        if self.audience.is_empty() {
            // Only the service itself, introspecting its own tokens for any audience.
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audience);
        }
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::InvalidSignature => TokenError::BadSignature,
                    K::ExpiredSignature => TokenError::Expired,
                    K::ImmatureSignature => TokenError::NotYetValid,
                    K::InvalidIssuer => TokenError::WrongIssuer,
                    K::InvalidAudience => TokenError::WrongAudience,
                    K::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
                    K::InvalidClaimFormat(c) => TokenError::BadClaim(c.clone()),
                    _ => TokenError::Malformed,
                }
            })?;
        Verified::from_claims(data.claims)
    }
}

/// Parses a route's algorithm allow-list; `none` and the HMAC family are never accepted.
pub fn allowed_algorithms(names: &[String]) -> Result<Vec<Algorithm>, String> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for name in names {
        let alg = match name.as_str() {
            "ES256" | "ES384" | "EdDSA" | "PS256" | "PS384" | "PS512" | "RS256" | "RS384"
            | "RS512" => Algorithm::from_str_opt(name),
            _ => None,
        }
        .ok_or_else(|| {
            format!(
                "algorithm {name:?} is not accepted; use ES256, ES384, EdDSA, PS256, PS384, \
                 PS512, RS256, RS384 or RS512 (symmetric HS* and none never are)"
            )
        })?;
        if seen.insert(name.clone()) {
            out.push(alg);
        }
    }
    Ok(out)
}

/// The claims of an access token certgate issues (RFC 9068 section 2.2).
pub struct AccessClaims<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub audience: &'a [String],
    pub scopes: &'a [String],
    pub issued_at: u64,
    pub expires_at: u64,
    pub jti: &'a str,
    /// `x5t#S256` of the client certificate the token is bound to.
    pub x5t_s256: &'a str,
}

impl AccessClaims<'_> {
    pub fn to_json(&self) -> Value {
        let aud = match self.audience {
            [one] => Value::String(one.clone()),
            many => Value::Array(many.iter().cloned().map(Value::String).collect()),
        };
        let mut claims = serde_json::json!({
            "iss": self.issuer,
            "sub": self.client_id,
            "aud": aud,
            "client_id": self.client_id,
            "iat": self.issued_at,
            "exp": self.expires_at,
            "jti": self.jti,
            "cnf": { "x5t#S256": self.x5t_s256 },
        });
        if !self.scopes.is_empty()
            && let Some(map) = claims.as_object_mut()
        {
            map.insert("scope".into(), Value::String(self.scopes.join(" ")));
        }
        claims
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyState, SigningKey, tests::ec_pem};

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn verifier() -> Verifier {
        Verifier {
            issuer: "https://auth.example.com".into(),
            audience: vec!["https://api.example.com".into()],
            algorithms: vec![Algorithm::ES256],
            leeway: 5,
            require_at_jwt: true,
        }
    }

    fn claims(exp: u64) -> Value {
        AccessClaims {
            issuer: "https://auth.example.com",
            client_id: "payments",
            audience: &["https://api.example.com".into()],
            scopes: &["accounts:read".into()],
            issued_at: now(),
            expires_at: exp,
            jti: "j1",
            x5t_s256: "abc",
        }
        .to_json()
    }

    #[test]
    fn issued_tokens_verify_and_carry_their_binding() {
        let key = SigningKey::from_pem(&ec_pem(), None, KeyState::Active).unwrap();
        let ring = Keyring::new(vec![key], 300, None, now()).unwrap();
        let keys = KeySet::from_keyring(&ring, now());
        let token = ring.active().sign(&claims(now() + 60), "at+jwt").unwrap();
        let v = verifier().verify(&token, &keys).unwrap();
        assert_eq!(v.sub, "payments");
        assert_eq!(v.client_id.as_deref(), Some("payments"));
        assert_eq!(v.scopes, vec!["accounts:read"]);
        assert_eq!(v.cnf_x5t.as_deref(), Some("abc"));
        // The same keys from the published JWKS.
        let from_jwks = KeySet::from_jwks(ring.jwks_json(now()).as_bytes()).unwrap();
        assert!(verifier().verify(&token, &from_jwks).is_ok());
    }

    #[test]
    fn each_check_refuses_with_its_own_reason() {
        let key = SigningKey::from_pem(&ec_pem(), None, KeyState::Active).unwrap();
        let ring = Keyring::new(vec![key], 300, None, now()).unwrap();
        let keys = KeySet::from_keyring(&ring, now());
        let sign = |c: &Value, typ: &str| ring.active().sign(c, typ).unwrap();
        let v = verifier();
        assert_eq!(v.verify(&sign(&claims(now() - 60), "at+jwt"), &keys), Err(TokenError::Expired));
        assert_eq!(
            v.verify(&sign(&claims(now() + 60), "JWT"), &keys),
            Err(TokenError::WrongType("JWT".into()))
        );
        assert!(v.verify(&sign(&claims(now() + 60), "application/AT+JWT"), &keys).is_ok());
        let mut other_iss = claims(now() + 60);
        other_iss["iss"] = "https://evil.example".into();
        assert_eq!(v.verify(&sign(&other_iss, "at+jwt"), &keys), Err(TokenError::WrongIssuer));
        let mut other_aud = claims(now() + 60);
        other_aud["aud"] = serde_json::json!(["https://other.example"]);
        assert_eq!(v.verify(&sign(&other_aud, "at+jwt"), &keys), Err(TokenError::WrongAudience));
        let mut no_aud = claims(now() + 60);
        no_aud.as_object_mut().unwrap().remove("aud");
        assert_eq!(
            v.verify(&sign(&no_aud, "at+jwt"), &keys),
            Err(TokenError::MissingClaim("aud".into()))
        );
        // Another key with the same kid claim: the signature fails.
        let stranger = SigningKey::from_pem(&ec_pem(), None, KeyState::Active).unwrap();
        let forged = {
            let mut h = jsonwebtoken::Header::new(Algorithm::ES256);
            h.typ = Some("at+jwt".into());
            h.kid = Some(ring.active().kid.clone());
            let pem = ec_pem();
            let enc = jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap();
            jsonwebtoken::encode(&h, &claims(now() + 60), &enc).unwrap()
        };
        assert_eq!(v.verify(&forged, &keys), Err(TokenError::BadSignature));
        let unknown = stranger.sign(&claims(now() + 60), "at+jwt").unwrap();
        assert!(matches!(v.verify(&unknown, &keys), Err(TokenError::UnknownKey(_))));
        // An HMAC token signed with the public key as secret (the classic confusion).
        let hs = {
            let mut h = jsonwebtoken::Header::new(Algorithm::HS256);
            h.typ = Some("at+jwt".into());
            let secret = serde_json::to_vec(ring.active().public_jwk()).unwrap();
            let enc = jsonwebtoken::EncodingKey::from_secret(&secret);
            jsonwebtoken::encode(&h, &claims(now() + 60), &enc).unwrap()
        };
        assert_eq!(v.verify(&hs, &keys), Err(TokenError::AlgorithmNotAllowed("HS256".into())));
        assert_eq!(v.verify("a.b", &keys), Err(TokenError::Malformed));
        assert_eq!(v.verify(&"a".repeat(MAX_TOKEN_BYTES + 1), &keys), Err(TokenError::TooLarge));
    }

    #[test]
    fn jwks_documents_skip_what_cannot_verify() {
        let key = SigningKey::from_pem(&ec_pem(), None, KeyState::Active).unwrap();
        let mut public = serde_json::to_value(key.public_jwk()).unwrap();
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "unknown-type", "kid": "x"},
            {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "d": "AA", "kid": "private"},
            public.clone(),
        ]});
        assert_eq!(KeySet::from_jwks(doc.to_string().as_bytes()).unwrap().len(), 1);
        // A JWK whose alg does not fit its type is skipped.
        public["alg"] = "RS256".into();
        let doc = serde_json::json!({"keys": [public]});
        assert_eq!(
            KeySet::from_jwks(doc.to_string().as_bytes()).unwrap_err(),
            JwksError::NoUsableKey
        );
        assert!(matches!(KeySet::from_jwks(b"[]"), Err(JwksError::NotJwks(_))));
        assert!(allowed_algorithms(&["HS256".into()]).unwrap_err().contains("never are"));
    }
}
