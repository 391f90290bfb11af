//! Certificate profiles: what a leaf may be used for. The CA, not the requester, decides the
//! basicConstraints, keyUsage and extendedKeyUsage of every certificate it signs.

use std::fmt;
use std::str::FromStr;

use rcgen::{ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose};

use crate::PkiError;
use crate::names::San;

/// The purpose of a leaf certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// TLS server: EKU serverAuth.
    Server,
    /// TLS client: EKU clientAuth.
    Client,
    /// Both: EKU serverAuth and clientAuth (service-to-service peers).
    Dual,
}

impl Profile {
    /// The default for a list of SANs: client when the first SAN names a client (a URI such as
    /// a SPIFFE ID, or an email address), server otherwise.
    pub fn default_for(sans: &[San]) -> Profile {
        match sans.first() {
            Some(san) if san.is_client_identity() => Profile::Client,
            _ => Profile::Server,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Server => "server",
            Profile::Client => "client",
            Profile::Dual => "dual",
        }
    }

    /// Writes this profile's extensions into `params` (overwriting anything there).
    /// keyEncipherment is added for RSA keys, which TLS 1.2 RSA key exchange needs.
    pub fn apply(self, params: &mut rcgen::CertificateParams, rsa_key: bool) {
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if rsa_key && self != Profile::Client {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.extended_key_usages = match self {
            Profile::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Profile::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Profile::Dual => {
                vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
            }
        };
        params.use_authority_key_identifier_extension = true;
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Profile {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, PkiError> {
        match s {
            "server" => Ok(Profile::Server),
            "client" => Ok(Profile::Client),
            "dual" => Ok(Profile::Dual),
            _ => Err(PkiError::InvalidName {
                value: s.to_string(),
                reason: "unknown profile; choose server, client or dual",
            }),
        }
    }
}
