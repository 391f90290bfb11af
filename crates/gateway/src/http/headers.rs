//! Identity headers: removed from every inbound request, then written by the gateway alone
//! from the verified handshake.
//!
//! - Stripping covers every name any format could carry (the nginx-style defaults, every name
//!   configured on any route, `x-forwarded-client-cert`, `client-cert`, `client-cert-chain`),
//!   compared case-insensitively with `_` equal to `-`, whatever the route's own format.
//! - Values are computed once per connection and format ([`ConnIdentity`]); a request only
//!   clones them.

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use certgate_pki::identity::PeerIdentity;
use certgate_pki::validity::rfc3339;
use http::{HeaderMap, HeaderName, HeaderValue};
use rustls_pki_types::CertificateDer;

use crate::tls::server::ClientCert;

/// The keys of the nginx-style headers and their default names.
pub const NGINX_DEFAULTS: [(&str, &str); 13] = [
    ("verify", "x-client-verify"),
    ("subject", "x-client-subject"),
    ("issuer", "x-client-issuer"),
    ("san_uri", "x-client-san-uri"),
    ("san_dns", "x-client-san-dns"),
    ("san_email", "x-client-san-email"),
    ("san_ip", "x-client-san-ip"),
    ("cert", "x-client-cert"),
    ("fingerprint", "x-client-fingerprint"),
    ("serial", "x-client-serial"),
    ("not_before", "x-client-not-before"),
    ("not_after", "x-client-not-after"),
    ("thumbprint", "x-client-thumbprint"),
];

const OTHER_FORMATS: [&str; 3] = ["x-forwarded-client-cert", "client-cert", "client-cert-chain"];

/// How a route forwards the identity.
#[derive(Debug, Clone)]
pub enum HeaderFormat {
    /// `X-Client-*` headers (names configurable), like nginx's `$ssl_client_*` variables.
    Nginx(Box<IdentityHeaderNames>),
    /// Envoy's `x-forwarded-client-cert`.
    Xfcc,
    /// RFC 9440 `Client-Cert` and `Client-Cert-Chain`.
    Rfc9440,
    /// Nothing (inbound copies are still removed).
    None,
}

impl HeaderFormat {
    /// Every header name this format writes (for the strip set).
    pub fn names(&self) -> Vec<String> {
        match self {
            HeaderFormat::Nginx(n) => n.all().iter().map(|h| h.as_str().to_string()).collect(),
            HeaderFormat::Xfcc | HeaderFormat::Rfc9440 | HeaderFormat::None => vec![],
        }
    }
}

/// The nginx-style header names of one route, parsed once.
#[derive(Debug, Clone)]
pub struct IdentityHeaderNames {
    names: [HeaderName; 13],
}

impl Default for IdentityHeaderNames {
    fn default() -> Self {
        IdentityHeaderNames { names: NGINX_DEFAULTS.map(|(_, n)| HeaderName::from_static(n)) }
    }
}

impl IdentityHeaderNames {
    /// Applies `header_names` overrides (`subject = "SSL_Client"`); errors name the key.
    pub fn new(overrides: &BTreeMap<String, String>) -> Result<Self, (String, String)> {
        let mut names = IdentityHeaderNames::default();
        for (key, value) in overrides {
            let Some(i) = NGINX_DEFAULTS.iter().position(|(k, _)| k == key) else {
                let keys: Vec<&str> = NGINX_DEFAULTS.iter().map(|(k, _)| *k).collect();
                return Err((key.clone(), format!("unknown key; use one of {}", keys.join(", "))));
            };
            names.names[i] = HeaderName::from_bytes(value.as_bytes())
                .map_err(|_| (key.clone(), format!("{value:?} is not a valid header name")))?;
        }
        Ok(names)
    }

    fn all(&self) -> &[HeaderName] {
        &self.names
    }
}

/// Header names removed from every inbound request: every identity header name and the
/// forwarding headers the gateway writes ([`crate::http::forward::FORWARDING_NAMES`]).
#[derive(Debug, Default)]
pub struct StripSet {
    /// Lowercase, with `_` written as `-`.
    names: HashSet<String>,
}

impl StripSet {
    /// The defaults plus `configured` names.
    pub fn new(configured: Vec<String>) -> StripSet {
        let names = NGINX_DEFAULTS
            .iter()
            .map(|(_, n)| n.to_string())
            .chain(OTHER_FORMATS.iter().map(|n| n.to_string()))
            .chain(crate::oauth::check::TOKEN_HEADERS.iter().map(|n| n.to_string()))
            .chain(crate::http::forward::FORWARDING_NAMES.iter().map(|n| n.to_string()))
            .chain(configured)
            .map(|n| normalize(&n))
            .collect();
        StripSet { names }
    }

    /// Removes every header whose name is in the set, in any case and with `_` for `-`.
    /// Returns whether an identity header (not just a forwarding one such as
    /// `X-Forwarded-For`, which proxies add routinely) was among them.
    pub fn strip(&self, headers: &mut HeaderMap) -> bool {
        let doomed: Vec<HeaderName> =
            headers.keys().filter(|name| self.contains(name.as_str())).cloned().collect();
        let identity =
            doomed.iter().any(|n| !crate::http::forward::FORWARDING_NAMES.contains(&n.as_str()));
        for name in doomed {
            headers.remove(&name);
        }
        identity
    }

    /// Whether `name` (any case, `_` for `-`) is an identity header name.
    pub fn contains(&self, name: &str) -> bool {
        if name.bytes().any(|b| b == b'_' || b.is_ascii_uppercase()) {
            self.names.contains(&normalize(name))
        } else {
            self.names.contains(name)
        }
    }
}

fn normalize(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// The client identity of one connection and its header values, each format made once, when
/// a route first asks for it (most connections only ever use one format).
#[derive(Debug)]
pub struct ConnIdentity {
    pub client: ClientCert,
    /// Forward the details of a certificate that failed verification
    /// (`dangerous_optional_no_ca`).
    forward_failed: bool,
    verify: OnceLock<HeaderValue>,
    /// Values for `NGINX_DEFAULTS[1..]`, in order; `None`: no identity to forward.
    nginx: OnceLock<Option<[Option<HeaderValue>; 12]>>,
    xfcc: OnceLock<Option<HeaderValue>>,
    /// `Client-Cert` and `Client-Cert-Chain`.
    rfc9440: OnceLock<(Option<HeaderValue>, Option<HeaderValue>)>,
}

impl ConnIdentity {
    pub fn new(client: ClientCert, forward_failed: bool) -> Self {
        ConnIdentity {
            client,
            forward_failed,
            verify: OnceLock::new(),
            nginx: OnceLock::new(),
            xfcc: OnceLock::new(),
            rfc9440: OnceLock::new(),
        }
    }

    /// `SUCCESS`, `FAILED:reason` or `NONE`, as nginx's `$ssl_client_verify`.
    pub fn verify_status(&self) -> String {
        match &self.client {
            ClientCert::None => "NONE".into(),
            ClientCert::Verified { .. } => "SUCCESS".into(),
            ClientCert::Failed { reason, .. } => format!("FAILED:{}", reason.code()),
        }
    }

    /// The identity whose details are forwarded, if any.
    pub fn forwarded_identity(&self) -> Option<&PeerIdentity> {
        match &self.client {
            ClientCert::Verified { identity, .. } => Some(identity),
            ClientCert::Failed { identity: Some(id), .. } if self.forward_failed => Some(id),
            ClientCert::Failed { .. } | ClientCert::None => None,
        }
    }

    /// Writes the route's identity headers into `headers` (after inbound copies were removed).
    pub fn write(&self, format: &HeaderFormat, headers: &mut HeaderMap) {
        match format {
            HeaderFormat::Nginx(names) => {
                let verify = self.verify.get_or_init(|| {
                    value(&self.verify_status()).unwrap_or(HeaderValue::from_static("NONE"))
                });
                headers.insert(names.names[0].clone(), verify.clone());
                let details =
                    self.nginx.get_or_init(|| self.forwarded_identity().map(nginx_values));
                if let Some(details) = details {
                    for (name, value) in names.names[1..].iter().zip(details) {
                        if let Some(v) = value {
                            headers.insert(name.clone(), v.clone());
                        }
                    }
                }
            }
            HeaderFormat::Xfcc => {
                let xfcc = self
                    .xfcc
                    .get_or_init(|| self.forwarded_identity().and_then(|id| value(&xfcc(id))));
                if let Some(v) = xfcc {
                    headers.insert(HeaderName::from_static("x-forwarded-client-cert"), v.clone());
                }
            }
            HeaderFormat::Rfc9440 => {
                let (cert, chain) = self.rfc9440.get_or_init(|| self.rfc9440_values());
                if let Some(v) = cert {
                    headers.insert(HeaderName::from_static("client-cert"), v.clone());
                }
                if let Some(v) = chain {
                    headers.insert(HeaderName::from_static("client-cert-chain"), v.clone());
                }
            }
            HeaderFormat::None => {}
        }
    }

    /// `Client-Cert`, and `Client-Cert-Chain` with the verified path's intermediates only
    /// (never other certificates the client sent; none for a certificate that failed).
    fn rfc9440_values(&self) -> (Option<HeaderValue>, Option<HeaderValue>) {
        let Some(id) = self.forwarded_identity() else { return (None, None) };
        let intermediates: &[CertificateDer<'static>] = match &self.client {
            ClientCert::Verified { intermediates, .. } => intermediates,
            ClientCert::Failed { .. } | ClientCert::None => &[],
        };
        let chain: Vec<String> =
            intermediates.iter().map(|c| format!(":{}:", STANDARD.encode(c))).collect();
        (
            value(&format!(":{}:", STANDARD.encode(&id.der))),
            (!chain.is_empty()).then(|| value(&chain.join(", "))).flatten(),
        )
    }
}

/// The nginx-style values after `verify`, in `NGINX_DEFAULTS` order.
fn nginx_values(id: &PeerIdentity) -> [Option<HeaderValue>; 12] {
    // JSON leaves DEL (0x7f) raw, which no header value may hold: escaped, a SAN list with
    // one is still forwarded whole instead of being left out.
    let json = |items: Vec<String>| {
        (!items.is_empty())
            .then(|| serde_json::to_string(&items).unwrap_or_default().replace('\u{7f}', "\\u007f"))
    };
    let ips = id.sans.ip.iter().map(ToString::to_string).collect();
    [
        Some(id.subject.clone()),
        Some(id.issuer.clone()),
        json(id.sans.uri.clone()),
        json(id.sans.dns.clone()),
        json(id.sans.email.clone()),
        json(ips),
        Some(id.escaped_pem()),
        Some(id.fingerprint_sha256.clone()),
        Some(id.serial_hex.clone()),
        Some(rfc3339(id.not_before)),
        Some(rfc3339(id.not_after)),
        Some(id.x5t_s256.clone()),
    ]
    .map(|v| v.and_then(|s| value(&s)))
}

/// Envoy's x-forwarded-client-cert element for one certificate: `Hash`, `Cert`, `Subject`,
/// then one `URI=` and `DNS=` pair per SAN. Every value goes through [`xfcc_value`], so no
/// certificate field can end a value or add a key.
pub fn xfcc(id: &PeerIdentity) -> String {
    let mut out = format!("Hash={};Cert=", id.fingerprint_sha256);
    out.push_str(&xfcc_quoted(&id.escaped_pem()));
    out.push_str(";Subject=");
    out.push_str(&xfcc_quoted(&id.subject));
    for uri in &id.sans.uri {
        out.push_str(";URI=");
        out.push_str(&xfcc_value(uri));
    }
    for dns in &id.sans.dns {
        out.push_str(";DNS=");
        out.push_str(&xfcc_value(dns));
    }
    out
}

/// An XFCC value as Envoy's grammar wants it: quoted when it contains `,`, `;`, `=`, `"` or
/// `\`, with `"` and `\` escaped by a backslash inside the quotes.
pub fn xfcc_value(v: &str) -> String {
    if v.contains([',', ';', '=', '"', '\\']) { xfcc_quoted(v) } else { v.to_string() }
}

/// An XFCC value always quoted (Envoy quotes `Cert` and `Subject`).
fn xfcc_quoted(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A header value from text; `None` (the header is left out) for text that cannot be a
/// header value, such as a DN containing a control character.
fn value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_bytes(s.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use certgate_pki::testkit::TestPki;
    use std::sync::Arc;

    /// Inbound identity headers go, in any case and with underscores; others stay.
    #[test]
    fn strip_removes_all_spellings() {
        let set = StripSet::new(vec!["SSL_Client".into()]);
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("x-client-subject", "CN=evil"),
            ("X_Client_Subject", "CN=evil"),
            ("x-CLIENT-verify", "SUCCESS"),
            ("X-Forwarded-Client-Cert", "Hash=00"),
            ("client-cert", ":AA==:"),
            ("ssl-client", "CN=evil"),
            ("accept", "*/*"),
            ("x-client-version", "1.2"),
        ] {
            h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_static(v));
        }
        set.strip(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["accept", "x-client-version"]);
    }

    /// The nginx-style values are exact: DN, SAN JSON list, escaped PEM, thumbprint.
    #[test]
    fn nginx_values_are_exact() {
        let pki = TestPki::new();
        let leaf = pki.client("joe", &["spiffe://example.test/joe"]);
        let id = Arc::new(PeerIdentity::from_der(&leaf.der).unwrap());
        let intermediates = leaf.chain_der()[1..].to_vec();
        let conn =
            ConnIdentity::new(ClientCert::Verified { identity: id.clone(), intermediates }, false);
        let mut h = HeaderMap::new();
        conn.write(&HeaderFormat::Nginx(Box::default()), &mut h);
        assert_eq!(h["x-client-verify"], "SUCCESS");
        assert_eq!(h["x-client-subject"], "CN=joe");
        assert_eq!(h["x-client-san-uri"], r#"["spiffe://example.test/joe"]"#);
        assert!(h.get("x-client-san-dns").is_none());
        assert_eq!(h["x-client-cert"], id.escaped_pem().as_str());
        assert_eq!(h["x-client-thumbprint"], id.x5t_s256.as_str());
        let mut r = HeaderMap::new();
        conn.write(&HeaderFormat::Rfc9440, &mut r);
        assert_eq!(r["client-cert"], format!(":{}:", STANDARD.encode(&leaf.der)).as_str());
        assert!(r["client-cert-chain"].to_str().unwrap().starts_with(':'));
        let mut x = HeaderMap::new();
        conn.write(&HeaderFormat::Xfcc, &mut x);
        let xfcc = x["x-forwarded-client-cert"].to_str().unwrap();
        assert!(xfcc.starts_with(&format!("Hash={};Cert=\"", id.fingerprint_sha256)), "{xfcc}");
        assert!(xfcc.ends_with(";Subject=\"CN=joe\";URI=spiffe://example.test/joe"), "{xfcc}");
    }

    /// A SAN holding DEL, which JSON leaves raw, is escaped so the SAN list is still written.
    #[test]
    fn nginx_san_list_with_del_is_escaped_not_dropped() {
        let issuer_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::default();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::CertifiedIssuer::self_signed(ca, issuer_key).unwrap();
        let mut params = rcgen::CertificateParams::default();
        let uri = rcgen::string::Ia5String::try_from("spiffe://x/a\u{7f}b").unwrap();
        params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
        let cert = params.signed_by(&rcgen::KeyPair::generate().unwrap(), &issuer).unwrap();
        let id = Arc::new(PeerIdentity::from_der(cert.der()).unwrap());
        let conn =
            ConnIdentity::new(ClientCert::Verified { identity: id, intermediates: vec![] }, false);
        let mut h = HeaderMap::new();
        conn.write(&HeaderFormat::Nginx(Box::default()), &mut h);
        assert_eq!(h["x-client-san-uri"], r#"["spiffe://x/a\u007fb"]"#);
        let list: Vec<String> = serde_json::from_slice(h["x-client-san-uri"].as_bytes()).unwrap();
        assert_eq!(list, vec!["spiffe://x/a\u{7f}b".to_string()]);
    }

    /// A failed certificate forwards only FAILED:reason unless explicitly dangerous.
    #[test]
    fn failed_certificate_forwards_only_status() {
        let pki = TestPki::new();
        let leaf = pki.client("joe", &[]);
        let id = Arc::new(PeerIdentity::from_der(&leaf.der).unwrap());
        let failed = || ClientCert::Failed {
            reason: certgate_pki::verify::VerifyError::Empty,
            identity: Some(id.clone()),
        };
        let mut h = HeaderMap::new();
        ConnIdentity::new(failed(), false).write(&HeaderFormat::Nginx(Box::default()), &mut h);
        assert_eq!(h["x-client-verify"], "FAILED:no_certificate");
        assert!(h.get("x-client-subject").is_none());
        let mut d = HeaderMap::new();
        ConnIdentity::new(failed(), true).write(&HeaderFormat::Nginx(Box::default()), &mut d);
        assert_eq!(d["x-client-subject"], "CN=joe");
    }
}
