//! The certificate parameters certgate signs: CA certificates and leaves, each with explicit
//! validity, a random serial and key identifiers. Used by [`crate::ca::Authority`] and by the
//! test PKI, so tests exercise the very certificates users get.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, KeyUsagePurpose,
    SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::x509::X509Name;

use crate::PkiError;
use crate::dn::{self, Attribute, StringType};
use crate::names::{Permit, San};
use crate::profile::Profile;

/// A subject name: its attributes in encoding order (the first is the first RDN, which
/// RFC 4514 strings print last), one attribute per RDN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    attributes: Vec<(Attribute, String)>,
}

impl Subject {
    pub fn cn(common_name: impl Into<String>) -> Self {
        Subject { attributes: vec![(Attribute::CN, common_name.into())] }
    }

    /// A subject as users write it for openssl (see [`dn::parse`]).
    pub fn parse(text: &str) -> Result<Self, PkiError> {
        Ok(Subject { attributes: dn::parse(text)? })
    }

    /// The attributes of `name` that certgate writes, in order; others are passed to
    /// `skipped` as `OID=value` or a reason.
    pub fn from_name(name: &X509Name<'_>, mut skipped: impl FnMut(String)) -> Self {
        let mut subject = Subject::default();
        for atv in name.iter_attributes() {
            let oid = atv.attr_type().to_id_string();
            let Ok(value) = atv.as_str() else {
                skipped(format!("a subject attribute {oid} that is not a string"));
                continue;
            };
            match Attribute::with_oid(&oid) {
                Some(attribute) => match attribute.check(value) {
                    _ if subject.attributes.iter().any(|(a, _)| *a == attribute) => {
                        skipped(format!("subject attribute {}={value} (repeated)", attribute.short))
                    }
                    Ok(()) => subject.push(attribute, value),
                    Err(reason) => skipped(format!("subject attribute {reason}")),
                },
                None => skipped(format!("subject attribute {oid}={value}")),
            }
        }
        subject
    }

    pub fn push(&mut self, attribute: Attribute, value: impl Into<String>) {
        self.attributes.push((attribute, value.into()));
    }

    /// Keeps only the attributes `keep` allows, passing the others to `dropped`.
    pub fn retain(&mut self, keep: impl Fn(Attribute) -> bool, mut dropped: impl FnMut(String)) {
        self.attributes.retain(|(attribute, value)| {
            let kept = keep(*attribute);
            if !kept {
                dropped(format!("subject attribute {}={value}", attribute.short));
            }
            kept
        });
    }

    pub fn attributes(&self) -> &[(Attribute, String)] {
        &self.attributes
    }

    /// The first CN, if any.
    pub fn common_name(&self) -> Option<&str> {
        self.attributes.iter().find(|(a, _)| *a == Attribute::CN).map(|(_, v)| v.as_str())
    }

    /// This subject with CN `name` added last when it has no CN.
    pub fn with_default_cn(mut self, name: &str) -> Self {
        if self.common_name().is_none() {
            self.push(Attribute::CN, name);
        }
        self
    }

    /// This subject with every CN replaced by `name` (or `name` added last).
    pub fn with_cn(mut self, name: &str) -> Self {
        self.attributes.retain(|(a, _)| *a != Attribute::CN);
        self.push(Attribute::CN, name);
        self
    }

    /// The rcgen name. Values are not checked again here (tests write hostile ones on
    /// purpose); only a value its string type cannot hold is refused.
    fn to_dn(&self) -> Result<DistinguishedName, PkiError> {
        let mut dn = DistinguishedName::new();
        for (attribute, value) in &self.attributes {
            let invalid = |reason: String| PkiError::InvalidSubject {
                value: dn::comma_form(&self.attributes),
                reason,
            };
            let kind = match *attribute {
                Attribute::CN => DnType::CommonName,
                Attribute::C => DnType::CountryName,
                Attribute::ST => DnType::StateOrProvinceName,
                Attribute::L => DnType::LocalityName,
                Attribute::O => DnType::OrganizationName,
                Attribute::OU => DnType::OrganizationalUnitName,
                other => DnType::CustomDnType(other.oid.to_vec()),
            };
            let encoded = match attribute.string {
                StringType::Utf8 => DnValue::Utf8String(value.clone()),
                StringType::Printable => DnValue::PrintableString(
                    value.as_str().try_into().map_err(|_| invalid("not printable".into()))?,
                ),
                StringType::Ia5 => DnValue::Ia5String(
                    value.as_str().try_into().map_err(|_| invalid("not ASCII".into()))?,
                ),
            };
            dn.push(kind, encoded);
        }
        Ok(dn)
    }
}

/// The comma form, in encoding order: `C=NL, O=Foo, CN=Bar`.
impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&dn::comma_form(&self.attributes))
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

/// A self-signed root CA that signs certificates and CRLs, with at most `path_len` CAs below
/// it (`None`: no limit; `Some(0)`: it signs only leaves).
pub fn root_params(
    subject: &Subject,
    path_len: Option<u8>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, PkiError> {
    let constraints = match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    };
    ca_params(subject, constraints, not_before, not_after)
}

/// An intermediate CA limited to `path_len` further CAs below it (0: it signs only leaves),
/// and, when `permits` is not empty, to names inside them (a critical nameConstraints
/// extension with these permitted subtrees).
pub fn intermediate_params(
    subject: &Subject,
    path_len: u8,
    permits: &[Permit],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, PkiError> {
    let mut params =
        ca_params(subject, BasicConstraints::Constrained(path_len), not_before, not_after)?;
    params.use_authority_key_identifier_extension = true;
    if !permits.is_empty() {
        params.name_constraints = Some(rcgen::NameConstraints {
            permitted_subtrees: permits.iter().map(Permit::to_rcgen).collect(),
            excluded_subtrees: vec![],
        });
    }
    Ok(params)
}

fn ca_params(
    subject: &Subject,
    constraints: BasicConstraints,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject.to_dn()?;
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
    params.distinguished_name = subject.to_dn()?;
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
