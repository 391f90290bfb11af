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
    /// The profile for a list of SANs when none was asked for: client when every SAN names a
    /// client (a URI such as a SPIFFE ID, or an email address), server when every SAN names a
    /// server (DNS, IP) or there are none.
    ///
    /// Fails with [`PkiError::AmbiguousProfile`] when client and server kinds are mixed: such a
    /// certificate may be meant as either (or both), and a wrong guess surfaces only later, as
    /// a TLS peer's "unsuitable certificate purpose".
    pub fn default_for(sans: &[San]) -> Result<Profile, PkiError> {
        let (client, server): (Vec<&San>, Vec<&San>) =
            sans.iter().partition(|san| san.is_client_identity());
        match (client.is_empty(), server.is_empty()) {
            (false, true) => Ok(Profile::Client),
            (true, _) => Ok(Profile::Server),
            (false, false) => Err(PkiError::AmbiguousProfile {
                client: client.iter().map(|s| s.to_string()).collect(),
                server: server.iter().map(|s| s.to_string()).collect(),
            }),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sans(values: &[&str]) -> Vec<San> {
        values.iter().map(|v| San::parse(v).unwrap()).collect()
    }

    /// Client kinds alone make a client, server kinds alone (or none) a server, and a mix is
    /// refused whatever the order, naming both sides.
    #[test]
    fn default_profile_is_refused_for_mixed_sans() {
        assert_eq!(
            Profile::default_for(&sans(&["spiffe://x/a", "a@x.test"])).unwrap(),
            Profile::Client
        );
        assert_eq!(Profile::default_for(&sans(&["x.test", "10.0.0.1"])).unwrap(), Profile::Server);
        assert_eq!(Profile::default_for(&[]).unwrap(), Profile::Server);
        for mixed in [["localhost", "spiffe://x/server"], ["spiffe://x/server", "localhost"]] {
            let err = Profile::default_for(&sans(&mixed)).unwrap_err().to_string();
            assert!(
                err.contains("URI:spiffe://x/server") && err.contains("DNS:localhost"),
                "{err}"
            );
            assert!(err.contains("server") && err.contains("client") && err.contains("dual"));
        }
    }
}
