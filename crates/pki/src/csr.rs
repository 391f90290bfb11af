//! Certificate signing requests made elsewhere (openssl, a browser, step): parsed, their
//! signature checked (proof that the requester holds the key), and reduced to what the CA
//! allows: the subject's CN, O, OU, C, ST, L and email, and valid DNS, IP, URI and email SANs.
//! Everything else the requester asked for (basicConstraints, key usages, other extensions) is
//! decided by the CA, and a request to be a CA is refused.

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::prelude::*;

use crate::PkiError;
use crate::dn::Attribute;
use crate::issue::Subject;
use crate::names::San;

/// A verified CSR, reduced to what the CA may copy.
#[derive(Debug, Clone)]
pub struct Csr {
    /// Where it came from, for messages (a file name).
    pub source_name: String,
    pub subject: Subject,
    pub subject_dn: String,
    pub sans: Vec<San>,
    /// The CN as a DNS or IP SAN, when no SAN was requested and the CN is a valid host name or
    /// IP. Used only for a server or dual certificate, which needs one; never for a client.
    pub cn_san: Option<San>,
    /// DER SubjectPublicKeyInfo of the requester's key.
    pub spki_der: Vec<u8>,
    pub rsa_key: bool,
    /// What was requested but will not be copied, for the user to see.
    pub ignored: Vec<String>,
}

const OID_EC_KEY: &str = "1.2.840.10045.2.1";
const OID_RSA_KEY: &str = "1.2.840.113549.1.1.1";
const OID_ED25519: &str = "1.3.101.112";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

/// Parses a CSR (PEM or DER) and verifies its self-signature.
pub fn parse(bytes: &[u8], source_name: &str) -> Result<Csr, PkiError> {
    let reject =
        |reason: String| PkiError::CsrRejected { source_name: source_name.to_string(), reason };
    let der = if bytes.first() == Some(&0x30) {
        bytes.to_vec()
    } else {
        let label = crate::pem::first_label(bytes);
        let label = match label.as_deref() {
            Some(l @ ("CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST")) => l.to_string(),
            Some(other) => {
                return Err(reject(format!("expected a CERTIFICATE REQUEST, found '{other}'")));
            }
            None if bytes.iter().all(u8::is_ascii_whitespace) => {
                return Err(reject("the file is empty".into()));
            }
            None => return Err(reject("not a PEM or DER certificate request".into())),
        };
        crate::pem::decode_block_any(bytes, &label).map_err(reject)?
    };
    let (_, csr) = X509CertificationRequest::from_der(&der)
        .map_err(|e| reject(format!("not a valid PKCS#10 request: {e}")))?;
    verify_signature(&csr).map_err(reject)?;

    let info = &csr.certification_request_info;
    let mut ignored = Vec::new();
    let subject = reduce_subject(&info.subject, &mut ignored);
    let mut sans = Vec::new();
    if let Some(extensions) = csr.requested_extensions() {
        for ext in extensions {
            match ext {
                ParsedExtension::BasicConstraints(bc) if bc.ca => {
                    return Err(reject(
                        "it asks to be a CA (basicConstraints CA:TRUE); certgate signs only leaf \
                         certificates from CSRs"
                            .into(),
                    ));
                }
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        sans.push(san_from_general_name(name).map_err(&reject)?);
                    }
                }
                ParsedExtension::BasicConstraints(_)
                | ParsedExtension::KeyUsage(_)
                | ParsedExtension::ExtendedKeyUsage(_) => {
                    ignored.push("requested key usages and constraints (set by the CA)".into());
                }
                other => ignored.push(format!("extension {other:?}").chars().take(60).collect()),
            }
        }
    }
    let cn_san = if sans.is_empty() {
        San::parse(subject.common_name().unwrap_or_default())
            .ok()
            .filter(|s| matches!(s, San::Dns(_) | San::Ip(_)))
    } else {
        None
    };
    ignored.dedup();
    let key_oid = info.subject_pki.algorithm.algorithm.to_id_string();
    Ok(Csr {
        source_name: source_name.to_string(),
        subject_dn: crate::dn::rfc4514(&info.subject),
        subject,
        sans,
        cn_san,
        spki_der: info.subject_pki.raw.to_vec(),
        rsa_key: key_oid == OID_RSA_KEY,
        ignored,
    })
}

fn verify_signature(csr: &X509CertificationRequest<'_>) -> Result<(), String> {
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;
    let sig_oid = csr.signature_algorithm.algorithm.to_id_string();
    let key_oid = spki.algorithm.algorithm.to_id_string();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string())
        .unwrap_or_default();
    let alg: &'static dyn VerificationAlgorithm =
        match (sig_oid.as_str(), key_oid.as_str(), curve.as_str()) {
            ("1.2.840.10045.4.3.2", OID_EC_KEY, OID_P256) => &signature::ECDSA_P256_SHA256_ASN1,
            ("1.2.840.10045.4.3.3", OID_EC_KEY, OID_P256) => &signature::ECDSA_P256_SHA384_ASN1,
            ("1.2.840.10045.4.3.2", OID_EC_KEY, OID_P384) => &signature::ECDSA_P384_SHA256_ASN1,
            ("1.2.840.10045.4.3.3", OID_EC_KEY, OID_P384) => &signature::ECDSA_P384_SHA384_ASN1,
            ("1.2.840.113549.1.1.11", OID_RSA_KEY, _) => &signature::RSA_PKCS1_2048_8192_SHA256,
            ("1.2.840.113549.1.1.12", OID_RSA_KEY, _) => &signature::RSA_PKCS1_2048_8192_SHA384,
            ("1.2.840.113549.1.1.13", OID_RSA_KEY, _) => &signature::RSA_PKCS1_2048_8192_SHA512,
            (OID_ED25519, OID_ED25519, _) => &signature::ED25519,
            ("1.2.840.113549.1.1.5" | "1.2.840.10045.4.1", _, _) => {
                return Err("it is signed with SHA-1, which certgate does not accept".into());
            }
            (_, OID_EC_KEY, c) if c != OID_P256 && c != OID_P384 => {
                return Err(format!("its EC key uses curve {c}; certgate accepts P-256 and P-384"));
            }
            _ => {
                return Err(format!(
                    "unsupported signature algorithm {sig_oid} for key type {key_oid}"
                ));
            }
        };
    UnparsedPublicKey::new(alg, spki.subject_public_key.data.as_ref())
        .verify(info.raw, csr.signature_value.data.as_ref())
        .map_err(|_| {
            "its signature does not verify (the request was altered, or not signed by the key \
             it carries)"
                .to_string()
        })
}

/// The subject attributes a CA copies from a request, in the request's order.
fn reduce_subject(name: &X509Name<'_>, ignored: &mut Vec<String>) -> Subject {
    let mut subject = Subject::from_name(name, |note| ignored.push(note));
    let copied = [
        Attribute::CN,
        Attribute::O,
        Attribute::OU,
        Attribute::C,
        Attribute::ST,
        Attribute::L,
        Attribute::EMAIL,
    ];
    subject.retain(|a| copied.contains(&a), |note| ignored.push(note));
    subject
}

fn san_from_general_name(name: &GeneralName<'_>) -> Result<San, String> {
    let (value, kind) = match name {
        GeneralName::DNSName(d) => ((*d).to_string(), "DNS"),
        GeneralName::URI(u) => ((*u).to_string(), "URI"),
        GeneralName::RFC822Name(e) => ((*e).to_string(), "email"),
        GeneralName::IPAddress(b) => match crate::identity::ip_from_bytes(b) {
            Some(ip) => (ip.to_string(), "IP"),
            None => return Err("it requests an IP SAN that is not 4 or 16 bytes".into()),
        },
        other => {
            return Err(format!("it requests a SAN of a kind certgate does not sign: {other}"));
        }
    };
    let san = San::parse(&value).map_err(|e| format!("requested {kind} SAN: {e}"))?;
    if san.kind() != kind {
        return Err(format!("requested {kind} SAN {value:?} is not a valid {kind} name"));
    }
    Ok(san)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_pem(sans: Vec<String>, ca: bool) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CountryName, "US");
        params.distinguished_name.push(rcgen::DnType::CommonName, "svc");
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    /// A well-formed CSR keeps its subject and SANs.
    #[test]
    fn csr_subject_and_sans_are_kept() {
        let csr =
            parse(csr_pem(vec!["svc.example.test".into()], false).as_bytes(), "svc.csr").unwrap();
        assert_eq!(csr.subject.common_name(), Some("svc"));
        assert_eq!(csr.subject_dn, "CN=svc,C=US");
        assert_eq!(csr.sans, vec![San::Dns("svc.example.test".into())]);
    }

    /// A CSR asking to be a CA is refused with that reason.
    #[test]
    fn csr_asking_for_ca_is_refused() {
        let err =
            parse(csr_pem(vec!["x.example.test".into()], true).as_bytes(), "ca.csr").unwrap_err();
        assert!(err.to_string().contains("asks to be a CA"), "{err}");
    }

    /// A requested URI SAN goes through the same RFC 3986 check as `--san`.
    #[test]
    fn csr_with_invalid_uri_san_is_refused_with_reason() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        let uri = rcgen::string::Ia5String::try_from("https://x/a\"b").unwrap();
        params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        let err = parse(pem.as_bytes(), "uri.csr").unwrap_err().to_string();
        assert!(
            err.contains("uri.csr: requested URI SAN: invalid SAN")
                && err.contains("'\"' is not allowed in a URI (RFC 3986)"),
            "{err}"
        );
    }

    /// A CSR whose signed content was altered is refused.
    #[test]
    fn tampered_csr_signature_is_refused() {
        let pem = csr_pem(vec!["aaaa.example.test".into()], false);
        let der = crate::pem::decode_block_any(pem.as_bytes(), "CERTIFICATE REQUEST").unwrap();
        let needle = b"aaaa";
        let pos = der.windows(4).position(|w| w == needle).unwrap();
        let mut tampered = der.clone();
        tampered[pos] = b'b';
        let err = parse(&tampered, "bad.csr").unwrap_err();
        assert!(err.to_string().contains("signature does not verify"), "{err}");
    }
}
