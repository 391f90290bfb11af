//! The certificate parameters certgate signs: CA certificates and leaves, each with explicit
//! validity, a random serial and key identifiers. Used by [`crate::ca::Authority`] and by the
//! test PKI, so tests exercise the very certificates users get.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyUsagePurpose,
    SerialNumber,
};
use time::OffsetDateTime;

use crate::PkiError;
use crate::names::San;
use crate::profile::Profile;

/// A subject name: CN plus optional O and OU, and other attributes kept from a CSR
/// (country, state, locality, email) in their original order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    pub common_name: String,
    pub organization: Option<String>,
    pub org_unit: Option<String>,
    pub extra: Vec<(DnType, String)>,
}

impl Subject {
    pub fn cn(common_name: impl Into<String>) -> Self {
        Subject { common_name: common_name.into(), ..Subject::default() }
    }

    fn to_dn(&self) -> DistinguishedName {
        let mut dn = DistinguishedName::new();
        for (kind, value) in &self.extra {
            dn.push(kind.clone(), value.as_str());
        }
        if let Some(o) = &self.organization {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        if let Some(ou) = &self.org_unit {
            dn.push(DnType::OrganizationalUnitName, ou.as_str());
        }
        dn.push(DnType::CommonName, self.common_name.as_str());
        dn
    }
}

/// A random positive serial of 159 bits (RFC 5280 allows 20 octets; CA/B asks for 64+ bits).
/// rcgen would otherwise derive the serial from the key, repeating it on re-issuance.
pub fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 20];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| PkiError::Crypto { what: "random serial" })?;
    // Clear the sign bit and set the next one, so the DER integer is positive and keeps all
    // 20 octets.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// A self-signed root CA: no path length limit, signs certificates and CRLs.
pub fn root_params(
    subject: &Subject,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, PkiError> {
    ca_params(subject, BasicConstraints::Unconstrained, not_before, not_after)
}

/// An intermediate CA limited to `path_len` further CAs below it (0: it signs only leaves).
pub fn intermediate_params(
    subject: &Subject,
    path_len: u8,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, PkiError> {
    let mut params =
        ca_params(subject, BasicConstraints::Constrained(path_len), not_before, not_after)?;
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn ca_params(
    subject: &Subject,
    constraints: BasicConstraints,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject.to_dn();
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// A leaf certificate for `sans` with the profile's extensions.
pub fn leaf_params(
    subject: &Subject,
    sans: &[San],
    profile: Profile,
    rsa_key: bool,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject.to_dn();
    params.subject_alt_names = sans.iter().map(San::to_rcgen).collect::<Result<_, _>>()?;
    profile.apply(&mut params, rsa_key);
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// Refuses a leaf that would outlive its issuer: clients would reject it on that day anyway.
pub fn check_within_issuer(
    not_after: OffsetDateTime,
    issuer_not_after: OffsetDateTime,
) -> Result<(), PkiError> {
    if not_after > issuer_not_after {
        return Err(PkiError::InvalidValidity {
            reason: format!(
                "the certificate would end on {}, after its issuing CA expires on {}; ask for a \
                 shorter lifetime",
                crate::validity::format_time(not_after),
                crate::validity::format_time(issuer_not_after)
            ),
        });
    }
    Ok(())
}
