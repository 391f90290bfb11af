//! Distinguished names compared structurally, as RFC 8705 `tls_client_auth_subject_dn` needs:
//! the configured RFC 4514 string and the certificate's subject are both read into RDNs of
//! (OID, value) pairs and compared RDN by RDN, never as strings (two renderings of one name
//! differ in spacing, escaping, attribute names and OID spelling).
//!
//! Values compare as X.500 distinguishedNameMatch does for the usual string types (RFC 4517
//! section 4.2.15 with caseIgnoreMatch): case-insensitively, with leading and trailing spaces
//! dropped and inner runs of spaces counted as one. A multi-valued RDN (`CN=a+UID=b`) matches
//! the same set of attributes in any order.

use std::fmt;

use x509_parser::prelude::*;

use crate::dn::{self, Attribute};

/// A distinguished name to match subjects against, parsed once at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnPattern {
    /// RDNs in certificate order (the root-most RDN, usually `C` or `DC`, first); each RDN's
    /// attributes sorted by OID, values normalised.
    rdns: Vec<Vec<(String, String)>>,
    /// The name as configured, for messages.
    written: String,
}

/// Why a configured distinguished name cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("distinguished name {written:?}: {reason}")]
pub struct DnPatternError {
    pub written: String,
    pub reason: String,
}

/// The result of comparing a subject with a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnMatch {
    Equal,
    Different,
    /// The same RDNs in the opposite order: the name was likely copied from `openssl x509
    /// -subject`, which prints the certificate's order, while RFC 4514 writes the most
    /// specific RDN first. Not a match; worth a hint in the log.
    Reversed,
}

impl DnPattern {
    /// Reads an RFC 4514 string (`CN=payments,O=Example Corp,C=US`: most specific RDN first,
    /// `+` joining the attributes of one RDN) or the slash form openssl takes
    /// (`/C=US/O=Example Corp/CN=payments`, certificate order). Attribute types are short or
    /// long names in any case (`CN`, `commonName`, `organizationIdentifier`) or dotted OIDs
    /// (`2.5.4.97`, `OID.2.5.4.97`).
    pub fn parse(text: &str) -> Result<DnPattern, DnPatternError> {
        let bad = |reason: String| DnPatternError { written: text.to_string(), reason };
        let body = dn::trim_unescaped_end(text.trim_start());
        if body.is_empty() {
            return Err(bad("it is empty".into()));
        }
        let slash = body.starts_with('/');
        let rdn_texts =
            if slash { split(&body[1..], &['/'], true) } else { split(body, &[',', ';'], false) }
                .map_err(&bad)?;
        let mut rdns = Vec::with_capacity(rdn_texts.len());
        for rdn_text in &rdn_texts {
            let mut attributes = Vec::new();
            for piece in split(rdn_text, &['+'], slash).map_err(&bad)? {
                let (name, raw) = dn::split_name(&piece).map_err(&bad)?;
                let oid = oid_of(name).ok_or_else(|| {
                    bad(format!(
                        "unknown attribute type {name:?}; use a name such as CN, O, OU, C, DC, \
                         UID, serialNumber, organizationIdentifier, or a dotted OID"
                    ))
                })?;
                let value = if slash { dn::unescape_slash(raw) } else { dn::unescape_rfc4514(raw) }
                    .map_err(|reason| bad(format!("{name}: {reason}")))?;
                if value.trim().is_empty() {
                    return Err(bad(format!("{name} has an empty value")));
                }
                attributes.push((oid, normalise(&value)));
            }
            attributes.sort();
            rdns.push(attributes);
        }
        if !slash {
            // RFC 4514 writes the last RDN of the encoding first.
            rdns.reverse();
        }
        Ok(DnPattern { rdns, written: text.to_string() })
    }

    /// Compares with the subject of the DER certificate `cert` (`Different` when it does not
    /// parse).
    pub fn compare_cert(&self, cert: &[u8]) -> DnMatch {
        match X509Certificate::from_der(cert) {
            Ok((_, cert)) => self.compare(cert.subject()),
            Err(_) => DnMatch::Different,
        }
    }

    /// Compares with a parsed name.
    pub fn compare(&self, name: &X509Name<'_>) -> DnMatch {
        let Some(mut subject) = rdns_of(name) else {
            return DnMatch::Different;
        };
        if subject == self.rdns {
            return DnMatch::Equal;
        }
        subject.reverse();
        if subject == self.rdns { DnMatch::Reversed } else { DnMatch::Different }
    }
}

impl fmt::Display for DnPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

/// The RDNs of a certificate name, normalised like a pattern; `None` when a value is not a
/// string (such a value never matches a configured text).
fn rdns_of(name: &X509Name<'_>) -> Option<Vec<Vec<(String, String)>>> {
    let mut rdns = Vec::new();
    for rdn in name.iter_rdn() {
        let mut attributes = Vec::new();
        for atv in rdn.iter() {
            let value = atv.as_str().ok()?;
            attributes.push((atv.attr_type().to_id_string(), normalise(value)));
        }
        attributes.sort();
        rdns.push(attributes);
    }
    Some(rdns)
}

/// caseIgnoreMatch after insignificant-space handling: trimmed, inner runs of whitespace as
/// one space, lowercase.
fn normalise(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// The dotted OID an attribute type names.
fn oid_of(name: &str) -> Option<String> {
    let dotted = name.strip_prefix("OID.").or_else(|| name.strip_prefix("oid.")).unwrap_or(name);
    if dotted.split('.').count() >= 2
        && dotted.split('.').all(|arc| !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some(dotted.to_string());
    }
    if let Some(attribute) = Attribute::named(name) {
        return Some(attribute.oid_string());
    }
    let extra: &[(&str, &str)] = &[
        ("organizationIdentifier", "2.5.4.97"),
        ("E", "1.2.840.113549.1.9.1"),
        ("street", "2.5.4.9"),
        ("businessCategory", "2.5.4.15"),
        ("postalCode", "2.5.4.17"),
        ("jurisdictionC", "1.3.6.1.4.1.311.60.2.1.3"),
    ];
    extra.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, oid)| (*oid).to_string())
}

/// Splits at each unescaped, unquoted separator; no piece may be empty.
fn split(text: &str, separators: &[char], slash: bool) -> Result<Vec<String>, String> {
    let pieces = dn::split_unescaped(text, separators, slash)?;
    if pieces.iter().any(|p| p.trim().is_empty()) {
        return Err("an RDN or attribute is empty (write CN=x,O=y)".into());
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(subject: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        let mut name = rcgen::DistinguishedName::new();
        for (t, v) in subject {
            name.push(t.clone(), *v);
        }
        params.distinguished_name = name;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    /// Renderings that differ in spacing, case, attribute names and OID spelling are the same
    /// name; a different value, an extra RDN or a missing one is not.
    #[test]
    fn names_compare_structurally_not_as_strings() {
        let org_id = rcgen::DnType::CustomDnType(vec![2, 5, 4, 97]);
        let cert = cert_with(&[
            (rcgen::DnType::CountryName, "DE"),
            (rcgen::DnType::OrganizationName, "Example  Bank"),
            (org_id, "PSDDE-BAFIN-123"),
            (rcgen::DnType::CommonName, "payments"),
        ]);
        for same in [
            "CN=payments,2.5.4.97=PSDDE-BAFIN-123,O=Example Bank,C=DE",
            "cn = PAYMENTS , organizationIdentifier=psdde-bafin-123, O=example bank, c=de",
            "commonName=payments,OID.2.5.4.97=PSDDE-BAFIN-123,O=Example\\20Bank,C=DE",
            "/C=DE/O=Example Bank/2.5.4.97=PSDDE-BAFIN-123/CN=payments",
        ] {
            let p = DnPattern::parse(same).unwrap();
            assert_eq!(p.compare_cert(&cert), DnMatch::Equal, "{same}");
        }
        for different in [
            "CN=payment,2.5.4.97=PSDDE-BAFIN-123,O=Example Bank,C=DE",
            "CN=payments,O=Example Bank,C=DE",
            "CN=payments,2.5.4.97=PSDDE-BAFIN-123,O=Example Bank,C=DE,DC=x",
            "CN=payments+UID=1,2.5.4.97=PSDDE-BAFIN-123,O=Example Bank,C=DE",
        ] {
            let p = DnPattern::parse(different).unwrap();
            assert_eq!(p.compare_cert(&cert), DnMatch::Different, "{different}");
        }
        // openssl's print order is the certificate's order: reversed, and said so.
        let p = DnPattern::parse("C=DE, O=Example Bank, 2.5.4.97=PSDDE-BAFIN-123, CN=payments")
            .unwrap();
        assert_eq!(p.compare_cert(&cert), DnMatch::Reversed);
    }

    #[test]
    fn unreadable_names_are_refused_with_the_reason() {
        for (text, reason) in [
            ("", "empty"),
            ("CN=a,,O=b", "empty"),
            ("XYZ=a", "unknown attribute type"),
            ("CN=", "empty value"),
            ("CN=\"a", "not closed"),
            ("CN=#0403", "hex-encoded"),
        ] {
            let err = DnPattern::parse(text).unwrap_err();
            assert!(err.to_string().contains(reason), "{text}: {err}");
        }
    }
}
