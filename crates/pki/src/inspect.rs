//! `certgate inspect`: what a certificate, chain, CSR or CRL file contains, in a form a person
//! reads at a glance and a script parses (`serde::Serialize`).

use ::time::OffsetDateTime;
use serde::Serialize;
use x509_parser::prelude::*;

use crate::identity::{PeerIdentity, Sans, hex};
use crate::{PkiError, dn};

/// What a file held.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Inspected {
    Certificates {
        certificates: Vec<CertInfo>,
    },
    Csr(CsrInfo),
    Crl(CrlInfo),
    /// A PEM bundle of several CRLs (what `certgate crl` writes: one per CA), in file order.
    Crls {
        crls: Vec<CrlInfo>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    #[serde(with = "::time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "::time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// `valid`, `expired` or `not yet valid`, at the time of inspection.
    pub validity_status: &'static str,
    pub sans: Sans,
    pub sha256_fingerprint: String,
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
    pub key_type: String,
    pub is_ca: bool,
    pub path_len: Option<u32>,
    pub key_usage: Vec<String>,
    pub extended_key_usage: Vec<String>,
    pub self_signed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CsrInfo {
    pub subject: String,
    pub sans: Vec<String>,
    pub key_type: String,
    pub signature_valid: bool,
    pub ignored_by_ca: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CrlInfo {
    pub issuer: String,
    pub crl_number: Option<String>,
    #[serde(with = "::time::serde::rfc3339")]
    pub this_update: OffsetDateTime,
    #[serde(with = "::time::serde::rfc3339::option")]
    pub next_update: Option<OffsetDateTime>,
    pub revoked: Vec<RevokedInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RevokedInfo {
    pub serial: String,
    #[serde(with = "::time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    pub reason: Option<String>,
}

/// Inspects the contents of a file named `source_name` (for messages).
pub fn inspect(bytes: &[u8], source_name: &str) -> Result<Inspected, PkiError> {
    let bad = |reason: String| PkiError::bad_file(source_name, reason);
    let label = crate::pem::first_label(bytes);
    match label.as_deref() {
        Some("CERTIFICATE") => {
            let certs = crate::pem::certs_from_bytes(bytes).map_err(bad)?;
            let certificates = certs.iter().map(|c| cert_info(c)).collect::<Result<_, _>>()?;
            Ok(Inspected::Certificates { certificates })
        }
        Some("CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST") => csr_info(bytes, source_name),
        Some("X509 CRL") => {
            let ders = crate::pem::crls_from_bytes(bytes).map_err(bad)?;
            let mut crls =
                ders.iter().map(|d| crl_info(d)).collect::<Result<Vec<_>, _>>().map_err(bad)?;
            Ok(match crls.len() {
                // One CRL: the shape scripts have always read.
                1 => Inspected::Crl(crls.remove(0)),
                _ => Inspected::Crls { crls },
            })
        }
        Some(other) => Err(bad(format!(
            "holds a '{other}' PEM block; inspect reads certificates, CSRs and CRLs"
        ))),
        None if bytes.first() == Some(&0x30) => {
            if X509Certificate::from_der(bytes).is_ok() {
                Ok(Inspected::Certificates { certificates: vec![cert_info(bytes)?] })
            } else if X509CertificationRequest::from_der(bytes).is_ok() {
                csr_info(bytes, source_name)
            } else {
                crl_info(bytes)
                    .map(Inspected::Crl)
                    .map_err(|_| bad("DER data that is not a certificate, CSR or CRL".into()))
            }
        }
        None if bytes.iter().all(u8::is_ascii_whitespace) => Err(bad("the file is empty".into())),
        None => Err(bad("not PEM or DER (no '-----BEGIN' line)".into())),
    }
}

/// Summarizes one DER certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, PkiError> {
    let id = PeerIdentity::from_der(der)?;
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| PkiError::bad_file("<certificate>", e.to_string()))?;
    let now = OffsetDateTime::now_utc();
    let (is_ca, path_len) = match cert.basic_constraints() {
        Ok(Some(bc)) => (bc.value.ca, bc.value.path_len_constraint),
        _ => (false, None),
    };
    let key_usage = match cert.key_usage() {
        Ok(Some(ku)) => crate::verify::key_usage_names(ku.value),
        _ => Vec::new(),
    };
    let extended_key_usage = crate::identity::eku_names(&cert);
    let validity_status = if id.not_after <= now {
        "expired"
    } else if id.not_before > now {
        "not yet valid"
    } else {
        "valid"
    };
    Ok(CertInfo {
        self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
        subject: id.subject,
        issuer: id.issuer,
        serial: id.serial_hex,
        not_before: id.not_before,
        not_after: id.not_after,
        validity_status,
        sans: id.sans,
        sha256_fingerprint: colon_hex(&id.fingerprint_sha256),
        x5t_s256: id.x5t_s256,
        key_type: key_type(cert.public_key()),
        is_ca,
        path_len,
        key_usage,
        extended_key_usage,
    })
}

fn csr_info(bytes: &[u8], source_name: &str) -> Result<Inspected, PkiError> {
    match crate::csr::parse(bytes, source_name) {
        Ok(csr) => {
            let key_type = X509CertificationRequest::from_der(&der_of_csr(bytes))
                .map(|(_, c)| key_type(&c.certification_request_info.subject_pki))
                .unwrap_or_default();
            let mut notes = csr.ignored;
            if let Some(san) = &csr.cn_san {
                notes.push(format!(
                    "no SAN requested; signed as a server or dual certificate it gets the CN as \
                     {san}, as a client certificate no SAN"
                ));
            }
            Ok(Inspected::Csr(CsrInfo {
                subject: csr.subject_dn,
                sans: csr.sans.iter().map(ToString::to_string).collect(),
                key_type,
                signature_valid: true,
                ignored_by_ca: notes,
            }))
        }
        Err(e) => Err(e),
    }
}

fn der_of_csr(bytes: &[u8]) -> Vec<u8> {
    if bytes.first() == Some(&0x30) {
        return bytes.to_vec();
    }
    crate::pem::decode_block_any(bytes, "CERTIFICATE REQUEST")
        .or_else(|_| crate::pem::decode_block_any(bytes, "NEW CERTIFICATE REQUEST"))
        .unwrap_or_default()
}

fn crl_info(der: &[u8]) -> Result<CrlInfo, String> {
    let (_, crl) =
        CertificateRevocationList::from_der(der).map_err(|e| format!("not a valid CRL: {e}"))?;
    let revoked = crl
        .iter_revoked_certificates()
        .map(|r| RevokedInfo {
            serial: hex(r.raw_serial()),
            revoked_at: r.revocation_date.to_datetime(),
            reason: r
                .reason_code()
                .map(|(_, code)| crate::crl::reason_code_name(code.0).to_string()),
        })
        .collect();
    Ok(CrlInfo {
        issuer: dn::rfc4514(crl.issuer()),
        crl_number: crl.crl_number().map(|n| n.to_string()),
        this_update: crl.last_update().to_datetime(),
        next_update: crl.next_update().map(|t| t.to_datetime()),
        revoked,
    })
}

fn key_type(spki: &SubjectPublicKeyInfo<'_>) -> String {
    use x509_parser::public_key::PublicKey;
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA {}", rsa.key_size()),
        Ok(PublicKey::EC(point)) => match point.key_size() {
            256 => "EC P-256".into(),
            384 => "EC P-384".into(),
            n => format!("EC {n}-bit"),
        },
        _ if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" => "Ed25519".into(),
        _ => spki.algorithm.algorithm.to_id_string(),
    }
}

/// `AB:CD:...`, the fingerprint format of `openssl x509 -fingerprint`.
pub fn colon_hex(lower_hex: &str) -> String {
    lower_hex
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}
