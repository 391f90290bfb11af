//! Certificate revocation lists, signed by the issuing CA with an increasing CRL number.
//!
//! Each CA of the directory signs its own CRL: the intermediate lists the leaves it revoked, the
//! root lists revoked intermediates. nginx's `ssl_crl` and `openssl verify -crl_check_all` need
//! one from every CA in the chain.

use rcgen::{
    CertificateRevocationListParams, Issuer, KeyIdMethod, RevokedCertParams, SerialNumber,
};
use time::OffsetDateTime;

use crate::PkiError;

/// The CA whose CRL is meant, as users name it (`--issuer root`) and as its file is named
/// (`root.crl`, the last segment of a CRL distribution point URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlIssuer {
    Root,
    Intermediate,
}

impl CrlIssuer {
    pub const ALL: [CrlIssuer; 2] = [CrlIssuer::Root, CrlIssuer::Intermediate];

    pub fn as_str(self) -> &'static str {
        match self {
            CrlIssuer::Root => "root",
            CrlIssuer::Intermediate => "intermediate",
        }
    }

    pub fn parse(s: &str) -> Option<CrlIssuer> {
        CrlIssuer::ALL.into_iter().find(|i| i.as_str() == s)
    }

    /// `root.crl` or `intermediate.crl`: the DER CRL a distribution point serves.
    pub fn file_name(self) -> String {
        format!("{}.crl", self.as_str())
    }

    /// `BASE/root.crl`: the CRL distribution point of certificates this CA signs.
    pub fn url(self, base: &str) -> String {
        format!("{base}/{}", self.file_name())
    }
}

impl std::fmt::Display for CrlIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks a `ca init --crl-url` base: an `http://` URL (RFC 5280 §4.2.1.13: clients fetch one
/// DER CRL from it; most do not fetch CRLs over TLS) without spaces, a query or a fragment.
/// Returns it without a trailing `/`.
pub fn check_base_url(value: &str) -> Result<String, PkiError> {
    let invalid = |reason| PkiError::InvalidCrlUrl { value: value.to_string(), reason };
    let base = value.trim_end_matches('/');
    let Some(rest) = base.strip_prefix("http://") else {
        return Err(invalid("use an http:// URL (clients fetch CRLs over plain HTTP)"));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(invalid("the URL needs a host"));
    }
    if base.chars().any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii()) {
        return Err(invalid("spaces, control and non-ASCII characters are not allowed"));
    }
    if base.contains(['?', '#']) {
        return Err(invalid("a query or fragment is not allowed: certgate appends /<issuer>.crl"));
    }
    Ok(base.to_string())
}

/// Why a certificate was revoked (RFC 5280 CRLReason), as users type it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    PrivilegeWithdrawn,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::Unspecified,
        Reason::KeyCompromise,
        Reason::CaCompromise,
        Reason::AffiliationChanged,
        Reason::Superseded,
        Reason::CessationOfOperation,
        Reason::PrivilegeWithdrawn,
    ];

    /// The command-line spelling (`key-compromise`).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unspecified => "unspecified",
            Reason::KeyCompromise => "key-compromise",
            Reason::CaCompromise => "ca-compromise",
            Reason::AffiliationChanged => "affiliation-changed",
            Reason::Superseded => "superseded",
            Reason::CessationOfOperation => "cessation-of-operation",
            Reason::PrivilegeWithdrawn => "privilege-withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    fn to_rcgen(self) -> rcgen::RevocationReason {
        match self {
            Reason::Unspecified => rcgen::RevocationReason::Unspecified,
            Reason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            Reason::CaCompromise => rcgen::RevocationReason::CaCompromise,
            Reason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            Reason::Superseded => rcgen::RevocationReason::Superseded,
            Reason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
            Reason::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
        }
    }
}

/// The RFC 5280 name of a CRLReason code (`keyCompromise`), as openssl and certgate print it.
pub fn reason_code_name(code: u8) -> &'static str {
    match code {
        0 => "unspecified",
        1 => "keyCompromise",
        2 => "cACompromise",
        3 => "affiliationChanged",
        4 => "superseded",
        5 => "cessationOfOperation",
        6 => "certificateHold",
        8 => "removeFromCRL",
        9 => "privilegeWithdrawn",
        10 => "aACompromise",
        _ => "unknown",
    }
}

/// One revoked certificate.
#[derive(Debug, Clone)]
pub struct Entry {
    pub serial: Vec<u8>,
    pub revoked_at: OffsetDateTime,
    pub reason: Reason,
}

/// Signs a CRL over `entries`. Returns the DER.
pub fn sign(
    issuer: &Issuer<'_, rcgen::KeyPair>,
    entries: &[Entry],
    number: u64,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
) -> Result<Vec<u8>, PkiError> {
    let params = CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: entries
            .iter()
            .map(|e| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&e.serial),
                revocation_time: e.revoked_at,
                // RFC 5280: "unspecified" SHOULD be expressed by leaving the reason out.
                reason_code: (e.reason != Reason::Unspecified).then(|| e.reason.to_rcgen()),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    Ok(params.signed_by(issuer)?.der().to_vec())
}

/// The nextUpdate of a DER CRL; `None` when it is not a CRL or has none.
pub fn next_update(der: &[u8]) -> Option<OffsetDateTime> {
    use x509_parser::prelude::FromDer;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der).ok()?;
    crl.next_update().map(|t| t.to_datetime())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CRL base URL is http://, loses a trailing slash, and gets /<issuer>.crl appended.
    #[test]
    fn crl_base_url_is_checked_and_joined() {
        let base = check_base_url("http://pki.example.test/crl/").unwrap();
        assert_eq!(CrlIssuer::Root.url(&base), "http://pki.example.test/crl/root.crl");
        for bad in ["https://x.test", "ftp://x.test", "http://", "http://x.test/a b", "http://x?y"]
        {
            assert!(check_base_url(bad).is_err(), "{bad}");
        }
        assert_eq!(CrlIssuer::parse("intermediate"), Some(CrlIssuer::Intermediate));
        assert_eq!(CrlIssuer::parse("leaf"), None);
        assert_eq!(next_update(b"not a CRL"), None);
    }
}
