//! What a certificate says about its holder, extracted once: the value the gateway carries with
//! a connection after the handshake verified it, and from which every identity header is made.

use std::net::IpAddr;

use ::time::OffsetDateTime;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use x509_parser::prelude::*;

use crate::{PkiError, dn};

/// Subject alternative names, by kind, in certificate order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sans {
    pub dns: Vec<String>,
    pub uri: Vec<String>,
    pub email: Vec<String>,
    pub ip: Vec<IpAddr>,
}

impl Sans {
    /// Reads the SAN extension of a parsed certificate (empty when there is none).
    pub(crate) fn of(cert: &X509Certificate<'_>) -> Sans {
        let mut sans = Sans::default();
        let Ok(Some(ext)) = cert.subject_alternative_name() else {
            return sans;
        };
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => sans.dns.push((*d).to_string()),
                GeneralName::URI(u) => sans.uri.push((*u).to_string()),
                GeneralName::RFC822Name(e) => sans.email.push((*e).to_string()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        sans.ip.push(ip);
                    }
                }
                _ => {}
            }
        }
        sans
    }

    /// Every SAN as `KIND:value`, in the order DNS, IP, URI, email.
    pub fn labelled(&self) -> Vec<String> {
        let dns = self.dns.iter().map(|v| format!("DNS:{v}"));
        let ip = self.ip.iter().map(|v| format!("IP:{v}"));
        let uri = self.uri.iter().map(|v| format!("URI:{v}"));
        let email = self.email.iter().map(|v| format!("email:{v}"));
        dns.chain(ip).chain(uri).chain(email).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.uri.is_empty() && self.email.is_empty() && self.ip.is_empty()
    }
}

/// The identity in a (verified) leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Subject DN, RFC 4514 (`CN=joe,O=Example`).
    pub subject: String,
    /// Issuer DN, RFC 4514.
    pub issuer: String,
    pub common_name: Option<String>,
    pub organizations: Vec<String>,
    pub org_units: Vec<String>,
    pub sans: Sans,
    /// Serial number, lowercase hex without separators.
    pub serial_hex: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// SHA-256 of the DER certificate, lowercase hex without separators.
    pub fingerprint_sha256: String,
    /// RFC 8705 `x5t#S256`: SHA-256 of the DER, base64url without padding.
    pub x5t_s256: String,
    pub der: Vec<u8>,
}

impl PeerIdentity {
    /// Extracts the identity from a DER certificate. Fails only on a certificate that is not
    /// valid X.509 (a verified certificate always parses).
    pub fn from_der(der: &[u8]) -> Result<PeerIdentity, PkiError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::BadFile {
            path: "<peer certificate>".into(),
            reason: format!("not valid X.509: {e}"),
        })?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
        let cn = dn::attribute_values(cert.subject(), dn::OID_CN).into_iter().next();
        Ok(PeerIdentity {
            subject: dn::rfc4514(cert.subject()),
            issuer: dn::rfc4514(cert.issuer()),
            common_name: cn,
            organizations: dn::attribute_values(cert.subject(), dn::OID_O),
            org_units: dn::attribute_values(cert.subject(), dn::OID_OU),
            sans: Sans::of(&cert),
            serial_hex: hex(cert.raw_serial()),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            fingerprint_sha256: hex(digest.as_ref()),
            x5t_s256: URL_SAFE_NO_PAD.encode(digest.as_ref()),
            der: der.to_vec(),
        })
    }

    /// The certificate as PEM.
    pub fn pem(&self) -> String {
        crate::pem::encode("CERTIFICATE", &self.der)
    }

    /// The PEM, percent-encoded like JavaScript's `encodeURIComponent`: what nginx's
    /// `$ssl_client_escaped_cert` gives and what `decodeURIComponent` undoes.
    pub fn escaped_pem(&self) -> String {
        percent_encode_component(&self.pem())
    }

    /// The first URI SAN with the `spiffe` scheme, if any.
    pub fn spiffe_id(&self) -> Option<&str> {
        self.sans.uri.iter().map(String::as_str).find(|u| u.starts_with("spiffe://"))
    }
}

/// Percent-encodes everything but `A-Z a-z 0-9 - _ . ! ~ * ' ( )`.
pub fn percent_encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Lowercase hex without separators.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

/// The extended key usages of a certificate, by their RFC 5280 names (unknown ones as OIDs).
pub fn eku_names(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(eku)) = cert.extended_key_usage() else {
        return vec![];
    };
    let e = eku.value;
    let mut names = Vec::new();
    for (present, name) in [
        (e.any, "anyExtendedKeyUsage"),
        (e.server_auth, "serverAuth"),
        (e.client_auth, "clientAuth"),
        (e.code_signing, "codeSigning"),
        (e.email_protection, "emailProtection"),
        (e.time_stamping, "timeStamping"),
        (e.ocsp_signing, "OCSPSigning"),
    ] {
        if present {
            names.push(name.to_string());
        }
    }
    names.extend(e.other.iter().map(|oid| oid.to_id_string()));
    names
}

pub(crate) fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{LeafSpec, TestPki};

    /// The identity carries every SAN kind, the RFC 4514 subject and the RFC 8705 thumbprint.
    #[test]
    fn identity_reads_sans_subject_and_thumbprint() {
        let pki = TestPki::new();
        let leaf = pki.leaf(LeafSpec {
            cn: "joe".into(),
            sans: vec![
                "spiffe://example.test/joe".into(),
                "joe.example.test".into(),
                "10.0.0.1".into(),
                "joe@example.test".into(),
            ],
            subject_o: Some("Example".into()),
            subject_ou: Some("payments".into()),
            ..LeafSpec::default()
        });
        let id = PeerIdentity::from_der(&leaf.der).unwrap();
        assert_eq!(id.subject, "CN=joe,OU=payments,O=Example");
        assert_eq!(id.issuer, "CN=certgate test intermediate CA,O=certgate tests");
        assert_eq!(id.spiffe_id(), Some("spiffe://example.test/joe"));
        assert_eq!(id.sans.dns, vec!["joe.example.test"]);
        assert_eq!(id.sans.ip, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(id.sans.email, vec!["joe@example.test"]);
        assert_eq!(id.common_name.as_deref(), Some("joe"));
        assert_eq!(id.serial_hex, leaf.serial_hex);
        assert_eq!(id.x5t_s256.len(), 43);
        assert_eq!(id.fingerprint_sha256.len(), 64);
        let escaped = id.escaped_pem();
        assert!(escaped.starts_with("-----BEGIN%20CERTIFICATE-----%0A"), "{escaped}");
        assert!(!escaped.contains('+') && !escaped.contains('/') && !escaped.contains('\n'));
    }
}
