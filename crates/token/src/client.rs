//! Registered clients and mTLS client authentication (RFC 8705 section 2).
//!
//! - `tls_client_auth`: the certificate chains to the CA(s) registered for *this* client (the
//!   CA certificate file is the anchor, so the client is pinned to the CA's key: another CA
//!   with the same name fails the signature check), and exactly one registered subject value
//!   matches: the subject DN compared structurally, or a SAN (DNS case-insensitively, URI
//!   byte for byte, IP in binary, email with a case-insensitive domain).
//! - `self_signed_tls_client_auth`: no chain; the certificate's `x5t#S256` must equal one
//!   registered for the client (from its JWKS `x5c` or a certificate file).

use std::net::IpAddr;

use certgate_pki::dn_match::{DnMatch, DnPattern};
use certgate_pki::identity::PeerIdentity;
use certgate_pki::verify::{TrustStore, VerifyPolicy};
use rustls_pki_types::{CertificateDer, UnixTime};

/// What kind of token a client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFormat {
    /// A signed JWT (RFC 9068) the resource server verifies itself.
    Jwt,
    /// A random reference (phantom token): only introspection says what it means.
    Opaque,
}

/// The subject value a `tls_client_auth` client registers (exactly one).
#[derive(Debug, Clone)]
pub enum SubjectValue {
    Dn(DnPattern),
    Dns(String),
    Uri(String),
    Ip(IpAddr),
    Email(String),
}

/// How a client proves who it is.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    Pki { anchors: TrustStore, subject: SubjectValue },
    SelfSigned { thumbprints: Vec<String> },
}

impl ClientAuth {
    pub fn method(&self) -> &'static str {
        match self {
            ClientAuth::Pki { .. } => "tls_client_auth",
            ClientAuth::SelfSigned { .. } => "self_signed_tls_client_auth",
        }
    }
}

/// A registered client.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub auth: ClientAuth,
    /// Scopes it may ask for.
    pub scopes: Vec<String>,
    /// Scopes granted when it asks for none (default: all of `scopes`).
    pub default_scopes: Vec<String>,
    pub format: TokenFormat,
    /// The `aud` of its tokens.
    pub audience: Vec<String>,
    /// Token lifetime in seconds (never past the certificate's notAfter).
    pub lifetime: u64,
    /// It may call the introspection endpoint (for any client's tokens).
    pub introspect: bool,
}

/// The certificate a connection presented: the leaf (which proved possession of its key in
/// the handshake) and the intermediates it sent or the listener's verification kept.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    pub leaf: &'a PeerIdentity,
    pub intermediates: &'a [CertificateDer<'static>],
}

/// Why client authentication failed. `Display` is the `error_description`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("client certificate was not provided")]
    NoCertificate,
    #[error("unknown client")]
    UnknownClient,
    #[error("the client certificate does not chain to the CA registered for this client: {0}")]
    WrongCa(String),
    #[error("certificate subject value does not match the registered one")]
    SubjectMismatch {
        /// The configured DN matches in reverse order (a hint for the log, not the client).
        reversed: bool,
    },
    #[error("unregistered client certificate provided")]
    UnregisteredCertificate,
}

impl Client {
    /// Authenticates the connection's certificate as this client at `now`.
    pub fn authenticate(
        &self,
        presented: Option<Presented<'_>>,
        now: UnixTime,
    ) -> Result<(), AuthFailure> {
        let presented = presented.ok_or(AuthFailure::NoCertificate)?;
        match &self.auth {
            ClientAuth::Pki { anchors, subject } => {
                let mut chain = Vec::with_capacity(1 + presented.intermediates.len());
                chain.push(CertificateDer::from(presented.leaf.der.as_slice()));
                chain.extend(presented.intermediates.iter().cloned());
                anchors
                    .verify(&chain, &VerifyPolicy::client(), now)
                    .map_err(|e| AuthFailure::WrongCa(e.to_string()))?;
                subject_matches(subject, presented.leaf)
            }
            ClientAuth::SelfSigned { thumbprints } => {
                let x5t = presented.leaf.x5t_s256.as_bytes();
                let known = thumbprints.iter().any(|t| {
                    aws_lc_rs::constant_time::verify_slices_are_equal(t.as_bytes(), x5t).is_ok()
                });
                if known { Ok(()) } else { Err(AuthFailure::UnregisteredCertificate) }
            }
        }
    }
}

fn subject_matches(subject: &SubjectValue, leaf: &PeerIdentity) -> Result<(), AuthFailure> {
    let sans = &leaf.sans;
    let matched = match subject {
        SubjectValue::Dn(pattern) => match pattern.compare_cert(&leaf.der) {
            DnMatch::Equal => true,
            DnMatch::Reversed => return Err(AuthFailure::SubjectMismatch { reversed: true }),
            DnMatch::Different => false,
        },
        SubjectValue::Dns(name) => sans.dns.iter().any(|d| d.eq_ignore_ascii_case(name)),
        SubjectValue::Uri(uri) => sans.uri.iter().any(|u| u == uri),
        SubjectValue::Ip(ip) => sans.ip.iter().any(|i| canonical(*i) == canonical(*ip)),
        SubjectValue::Email(email) => sans.email.iter().any(|e| email_eq(e, email)),
    };
    if matched { Ok(()) } else { Err(AuthFailure::SubjectMismatch { reversed: false }) }
}

/// An IPv4-mapped IPv6 address compares as its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Local parts compare exactly, domains case-insensitively (RFC 5280 section 7.5).
fn email_eq(a: &str, b: &str) -> bool {
    match (a.rsplit_once('@'), b.rsplit_once('@')) {
        (Some((la, da)), Some((lb, db))) => la == lb && da.eq_ignore_ascii_case(db),
        _ => a == b,
    }
}

/// Reads a client's registered JWKS for `self_signed_tls_client_auth`: each key's `x5c[0]`
/// certificate gives an `x5t#S256`, and the key's own members must be that certificate's
/// public key (RFC 7517 section 4.7). Returns the thumbprints.
pub fn self_signed_thumbprints(jwks: &[u8]) -> Result<Vec<String>, String> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let doc: serde_json::Value =
        serde_json::from_slice(jwks).map_err(|e| format!("not JSON: {e}"))?;
    let keys = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("not a JWKS document: no \"keys\" array")?;
    let mut out = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let n = i + 1;
        let first = key
            .get("x5c")
            .and_then(|x| x.as_array())
            .and_then(|x| x.first())
            .and_then(|c| c.as_str())
            .ok_or_else(|| format!("key #{n} has no x5c certificate"))?;
        let der = STANDARD.decode(first).map_err(|_| format!("key #{n}: x5c[0] is not base64"))?;
        let identity = PeerIdentity::from_der(&der)
            .map_err(|_| format!("key #{n}: x5c[0] is not an X.509 certificate"))?;
        let spki = spki_key_bytes(&der).ok_or_else(|| format!("key #{n}: unreadable x5c[0]"))?;
        let member = |name: &str| {
            key.get(name)
                .and_then(|v| v.as_str())
                .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
                .ok_or_else(|| format!("key #{n} lacks its {name} member"))
        };
        let kty = key.get("kty").and_then(|k| k.as_str()).unwrap_or_default();
        let fits = match kty {
            "EC" => {
                let mut point = vec![4u8];
                point.extend(member("x")?);
                point.extend(member("y")?);
                point == spki
            }
            "OKP" => member("x")? == spki,
            "RSA" => rsa_matches(&der, &member("n")?, &member("e")?),
            other => return Err(format!("key #{n} has unsupported kty {other:?}")),
        };
        if !fits {
            return Err(format!(
                "key #{n}: its key members do not match its x5c[0] certificate (RFC 7517 4.7)"
            ));
        }
        out.push(identity.x5t_s256);
    }
    Ok(out)
}

/// The subjectPublicKey bit string of a certificate.
fn spki_key_bytes(der: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.public_key().subject_public_key.data.to_vec())
}

/// Whether the certificate's RSA key has modulus `n` and exponent `e` (leading zeros
/// ignored).
fn rsa_matches(der: &[u8], n: &[u8], e: &[u8]) -> bool {
    use x509_parser::prelude::*;
    use x509_parser::public_key::PublicKey;
    let Ok((_, cert)) = X509Certificate::from_der(der) else { return false };
    let Ok(PublicKey::RSA(rsa)) = cert.public_key().parsed() else { return false };
    let strip = |b: &[u8]| b.iter().skip_while(|&&x| x == 0).copied().collect::<Vec<u8>>();
    strip(rsa.modulus) == strip(n) && strip(rsa.exponent) == strip(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use certgate_pki::testkit::TestPki;

    #[test]
    fn subject_values_compare_by_kind() {
        let pki = TestPki::new();
        let leaf = pki.client("payments", &["spiffe://example.org/payments", "joe@Example.com"]);
        let leaf = PeerIdentity::from_der(&leaf.der).unwrap();
        let ok = |s: SubjectValue| subject_matches(&s, &leaf).is_ok();
        assert!(ok(SubjectValue::Dn(DnPattern::parse(&leaf.subject).unwrap())));
        assert!(!ok(SubjectValue::Dn(DnPattern::parse("CN=someone-else").unwrap())));
        assert!(ok(SubjectValue::Uri("spiffe://example.org/payments".into())));
        assert!(!ok(SubjectValue::Uri("spiffe://example.org/PAYMENTS".into())));
        assert!(ok(SubjectValue::Email("joe@example.COM".into())));
        assert!(!ok(SubjectValue::Email("JOE@example.com".into())));
        assert_eq!(
            canonical("::ffff:10.0.0.7".parse().unwrap()),
            "10.0.0.7".parse::<IpAddr>().unwrap()
        );
    }

    /// A CA with the same name but another key issues a certificate with the same subject:
    /// it does not authenticate as the client pinned to the real CA.
    #[test]
    fn clients_are_pinned_to_their_ca_by_key() {
        let real = TestPki::new();
        let twin = TestPki::new();
        let client = |anchors: &TestPki| Client {
            id: "payments".into(),
            auth: ClientAuth::Pki {
                anchors: TrustStore::from_der(vec![anchors.root_der()], vec![]).unwrap(),
                subject: SubjectValue::Dn(DnPattern::parse("CN=payments").unwrap()),
            },
            scopes: vec![],
            default_scopes: vec![],
            format: TokenFormat::Jwt,
            audience: vec![],
            lifetime: 300,
            introspect: false,
        };
        let leaf = real.client("payments", &[]);
        let chain = leaf.chain_der();
        let identity = PeerIdentity::from_der(&leaf.der).unwrap();
        let presented = Presented { leaf: &identity, intermediates: &chain[1..] };
        assert_eq!(client(&real).authenticate(Some(presented), UnixTime::now()), Ok(()));
        let err = client(&twin).authenticate(Some(presented), UnixTime::now()).unwrap_err();
        assert!(matches!(err, AuthFailure::WrongCa(_)), "{err}");
        assert_eq!(
            client(&real).authenticate(None, UnixTime::now()),
            Err(AuthFailure::NoCertificate)
        );
        let other = real.client("payments-2", &[]);
        let other_id = PeerIdentity::from_der(&other.der).unwrap();
        let other_chain = other.chain_der();
        let presented = Presented { leaf: &other_id, intermediates: &other_chain[1..] };
        assert_eq!(
            client(&real).authenticate(Some(presented), UnixTime::now()),
            Err(AuthFailure::SubjectMismatch { reversed: false })
        );
    }

    /// A registered JWKS key whose members are not its x5c certificate's key is refused.
    #[test]
    fn self_signed_registrations_must_be_consistent() {
        use base64::Engine;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["device".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let point = key.public_key_raw();
        let jwk = |x: &[u8], y: &[u8]| {
            serde_json::json!({"keys": [{
                "kty": "EC", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
                "x5c": [STANDARD.encode(cert.der())],
            }]})
            .to_string()
        };
        let thumbprints =
            self_signed_thumbprints(jwk(&point[1..33], &point[33..]).as_bytes()).unwrap();
        let identity = PeerIdentity::from_der(cert.der()).unwrap();
        assert_eq!(thumbprints, vec![identity.x5t_s256.clone()]);
        let other = rcgen::KeyPair::generate().unwrap();
        let other = other.public_key_raw();
        let err = self_signed_thumbprints(jwk(&other[1..33], &other[33..]).as_bytes()).unwrap_err();
        assert!(err.contains("do not match"), "{err}");
    }
}
