//! PEM in and out: reading certificates, CSRs, CRLs and keys from files or bytes with errors
//! that name the file and say what was wrong, and writing PEM blocks.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};

use crate::PkiError;

/// Encodes one PEM block with 64-column lines.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + label.len() * 2 + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// Encodes certificates as concatenated PEM blocks.
pub fn certs_to_pem<'a>(certs: impl IntoIterator<Item = &'a CertificateDer<'a>>) -> String {
    certs.into_iter().map(|c| encode("CERTIFICATE", c)).collect()
}

/// Reads every certificate in a PEM file (leaf first if it is a chain). A file with no
/// certificate, or with a damaged block, is an error naming the file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let bytes = crate::fs::read(path)?;
    certs_from_bytes(&bytes).map_err(|reason| PkiError::bad_file(path, reason))
}

/// Parses certificates from PEM, or from a single DER certificate.
pub fn certs_from_bytes(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateDer::from(bytes.to_vec())]);
    }
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| describe_pem_error(&e, "CERTIFICATE"))?;
    if certs.is_empty() {
        return Err(no_block_reason(bytes, "CERTIFICATE"));
    }
    for (i, der) in certs.iter().enumerate() {
        parse_check(der).map_err(|e| format!("certificate #{} is not valid X.509: {e}", i + 1))?;
    }
    Ok(certs)
}

/// Reads every CRL in a PEM or DER file.
pub fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, PkiError> {
    let bytes = crate::fs::read(path)?;
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    let crls = crls_from_bytes(&bytes).map_err(|reason| PkiError::bad_file(path, reason))?;
    Ok(crls.into_iter().map(CertificateRevocationListDer::from).collect())
}

/// Every CRL in PEM `bytes`, in order; an error (the reason) when there is none or a block is
/// damaged.
pub fn crls_from_bytes(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let crls = CertificateRevocationListDer::pem_slice_iter(bytes)
        .map(|c| c.map(|der| der.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| describe_pem_error(&e, "X509 CRL"))?;
    if crls.is_empty() {
        return Err(no_block_reason(bytes, "X509 CRL"));
    }
    Ok(crls)
}

/// The label of the first PEM block in `bytes`, if any ("CERTIFICATE", "PRIVATE KEY", ...).
pub fn first_label(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let end = text[start..].find("-----")?;
    Some(text[start..start + end].to_string())
}

/// Decodes the first PEM block with the given label.
pub fn decode_block(bytes: &[u8], label: &str) -> Result<Vec<u8>, String> {
    let mut reader = bytes;
    loop {
        let item = match pem::from_buf(&mut reader) {
            Ok(None) => break,
            Ok(Some(section)) => Ok(section),
            Err(e) => Err(e),
        };
        match item {
            Ok((pem::SectionKind::Certificate, der)) if label == "CERTIFICATE" => return Ok(der),
            Ok((pem::SectionKind::Csr, der)) if label.ends_with("CERTIFICATE REQUEST") => {
                return Ok(der);
            }
            Ok((pem::SectionKind::Crl, der)) if label == "X509 CRL" => return Ok(der),
            Ok(_) => continue,
            Err(e) => return Err(describe_pem_error(&e, label)),
        }
    }
    Err(no_block_reason(bytes, label))
}

/// Decodes the first PEM block whose label is exactly `label` (any label, unlike
/// [`decode_block`], which knows only the kinds rustls-pki-types parses).
pub fn decode_block_any(bytes: &[u8], label: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let text = std::str::from_utf8(bytes).map_err(|_| "the file is not text PEM".to_string())?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin).ok_or_else(|| no_block_reason(bytes, label))? + begin.len();
    let stop = text[start..]
        .find(&end)
        .ok_or_else(|| format!("the PEM block is truncated (no '{end}' line)"))?;
    let body: String = text[start..start + stop].chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(body).map_err(|_| "the PEM body is not valid base64 (damaged file?)".into())
}

fn parse_check(der: &[u8]) -> Result<(), String> {
    use x509_parser::prelude::FromDer;
    x509_parser::certificate::X509Certificate::from_der(der).map(|_| ()).map_err(|e| e.to_string())
}

fn describe_pem_error(e: &pem::Error, label: &str) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => {
            format!("the PEM block is truncated (no '-----END {label}-----' line)")
        }
        pem::Error::IllegalSectionStart { .. } => "a PEM '-----BEGIN' line is malformed".into(),
        pem::Error::Base64Decode(_) => "the PEM body is not valid base64 (damaged file?)".into(),
        other => format!("not valid PEM: {other:?}"),
    }
}

fn no_block_reason(bytes: &[u8], label: &str) -> String {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return "the file is empty".into();
    }
    match first_label(bytes) {
        Some(found) => format!("expected a '{label}' PEM block, found '{found}'"),
        None => format!("no '-----BEGIN {label}-----' block found (is this a PEM file?)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A truncated or empty PEM is refused with a reason a person understands.
    #[test]
    fn damaged_pem_is_explained() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pem = cert.pem();
        assert_eq!(certs_from_bytes(pem.as_bytes()).unwrap().len(), 1);
        let truncated = &pem[..pem.len() / 2];
        let err = certs_from_bytes(truncated.as_bytes()).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        assert!(certs_from_bytes(b"\n").unwrap_err().contains("empty"));
        let err = certs_from_bytes(key.serialize_pem().as_bytes()).unwrap_err();
        assert!(err.contains("found 'PRIVATE KEY'"), "{err}");
        assert_eq!(encode("CERTIFICATE", cert.der()), pem.replace("\r\n", "\n"));
    }
}
