//! The one test PKI (cargo feature `testkit`): root → intermediate(s) → leaves, made by
//! certgate's own issuance code. Every test certificate in the workspace comes from here.
//!
//! This is test support: a failure to build the PKI is a broken test, so it panics.
#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};

use rcgen::{CertifiedIssuer, KeyPair};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

use crate::issue::{self, Subject};
use crate::keys::KeyType;
use crate::names::San;
use crate::profile::Profile;

/// A root CA and one or two intermediates; leaves are issued by the last intermediate.
pub struct TestPki {
    root: CertifiedIssuer<'static, KeyPair>,
    intermediates: Vec<CertifiedIssuer<'static, KeyPair>>,
}

/// What a test leaf looks like. `LeafSpec::client()` and `LeafSpec::default()` give a client
/// certificate `CN=test` valid from a minute ago for one day.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub cn: String,
    pub sans: Vec<String>,
    pub profile: Profile,
    pub not_before: Option<OffsetDateTime>,
    pub not_after: Option<OffsetDateTime>,
    pub subject_o: Option<String>,
    pub subject_ou: Option<String>,
    pub key_type: KeyType,
    /// Replaces the profile's key usages (for tests of refused usages).
    pub key_usages: Option<Vec<rcgen::KeyUsagePurpose>>,
    /// URI SANs added as given, without certgate's validation: what another CA might issue
    /// (quotes, `;`, dot segments), for tests of what the gateway does with them.
    pub raw_uri_sans: Vec<String>,
}

impl Default for LeafSpec {
    fn default() -> Self {
        LeafSpec::client()
    }
}

impl LeafSpec {
    pub fn client() -> Self {
        LeafSpec {
            cn: "test".into(),
            sans: vec![],
            profile: Profile::Client,
            not_before: None,
            not_after: None,
            subject_o: None,
            subject_ou: None,
            key_type: KeyType::EcP256,
            key_usages: None,
            raw_uri_sans: vec![],
        }
    }
}

/// A leaf certificate with its key.
#[derive(Debug, Clone)]
pub struct TestLeaf {
    pub der: CertificateDer<'static>,
    /// The leaf followed by its intermediates, PEM.
    pub chain_pem: String,
    /// PKCS#8 PEM.
    pub key_pem: String,
    pub serial_hex: String,
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
}

impl TestLeaf {
    /// Writes `NAME.crt` (chain) and `NAME.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let crt = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&crt, &self.chain_pem).expect("write test certificate");
        std::fs::write(&key, &self.key_pem).expect("write test key");
        (crt, key)
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone().into())
    }

    /// The leaf followed by its intermediates.
    pub fn chain_der(&self) -> Vec<CertificateDer<'static>> {
        self.chain.clone()
    }
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}

impl TestPki {
    /// `CN=certgate test root CA` → `CN=certgate test intermediate CA` (pathlen 0).
    pub fn new() -> TestPki {
        TestPki::named("certgate test")
    }

    /// Another, unrelated PKI whose CA names start with `prefix`.
    pub fn named(prefix: &str) -> TestPki {
        let (nb, na) = ca_window();
        let root_params =
            issue::root_params(&ca_subject(prefix, "root CA"), None, nb, na).expect("root params");
        let root = CertifiedIssuer::self_signed(root_params, key()).expect("sign root");
        let int_params =
            issue::intermediate_params(&ca_subject(prefix, "intermediate CA"), 0, &[], nb, na)
                .expect("intermediate params");
        let int = CertifiedIssuer::signed_by(int_params, key(), &root).expect("sign intermediate");
        TestPki { root, intermediates: vec![int] }
    }

    /// root → intermediate 1 (pathlen 1) → intermediate 2 (pathlen 0) → leaves.
    pub fn with_two_intermediates() -> TestPki {
        let prefix = "certgate test";
        let (nb, na) = ca_window();
        let root_params =
            issue::root_params(&ca_subject(prefix, "root CA"), None, nb, na).expect("root params");
        let root = CertifiedIssuer::self_signed(root_params, key()).expect("sign root");
        let p1 =
            issue::intermediate_params(&ca_subject(prefix, "intermediate CA 1"), 1, &[], nb, na)
                .expect("params");
        let i1 = CertifiedIssuer::signed_by(p1, key(), &root).expect("sign intermediate 1");
        let p2 =
            issue::intermediate_params(&ca_subject(prefix, "intermediate CA 2"), 0, &[], nb, na)
                .expect("params");
        let i2 = CertifiedIssuer::signed_by(p2, key(), &i1).expect("sign intermediate 2");
        TestPki { root, intermediates: vec![i1, i2] }
    }

    /// A server certificate for `sans`, valid now for a day.
    pub fn server(&self, sans: &[&str]) -> TestLeaf {
        let cn = sans.first().copied().unwrap_or("server").to_string();
        self.leaf(LeafSpec {
            cn,
            sans: sans.iter().map(|s| s.to_string()).collect(),
            profile: Profile::Server,
            ..LeafSpec::client()
        })
    }

    /// A client certificate `CN=cn` with `sans`, valid now for a day.
    pub fn client(&self, cn: &str, sans: &[&str]) -> TestLeaf {
        self.leaf(LeafSpec {
            cn: cn.to_string(),
            sans: sans.iter().map(|s| s.to_string()).collect(),
            ..LeafSpec::client()
        })
    }

    /// A leaf as described by `spec`, issued by the last intermediate.
    pub fn leaf(&self, spec: LeafSpec) -> TestLeaf {
        let now = OffsetDateTime::now_utc();
        let not_before = spec.not_before.unwrap_or(now - Duration::minutes(1));
        let not_after = spec.not_after.unwrap_or(now + Duration::days(1));
        let sans: Vec<San> =
            spec.sans.iter().map(|s| San::parse(s).expect("valid test SAN")).collect();
        let mut subject = Subject::default();
        if let Some(o) = &spec.subject_o {
            subject.push(crate::dn::Attribute::O, o);
        }
        if let Some(ou) = &spec.subject_ou {
            subject.push(crate::dn::Attribute::OU, ou);
        }
        subject.push(crate::dn::Attribute::CN, &spec.cn);
        let params = issue::leaf_params(
            &subject,
            &sans,
            spec.profile,
            spec.key_type.is_rsa(),
            not_before,
            not_after,
        )
        .expect("leaf params");
        let mut params = params;
        if let Some(usages) = spec.key_usages {
            params.key_usages = usages;
        }
        for uri in &spec.raw_uri_sans {
            let ia5 = rcgen::string::Ia5String::try_from(uri.as_str()).expect("ASCII URI");
            params.subject_alt_names.push(rcgen::SanType::URI(ia5));
        }
        let leaf_key = spec.key_type.generate().expect("generate leaf key");
        let issuer = self.issuer();
        let cert = params.signed_by(&leaf_key, issuer).expect("sign leaf");
        let der = cert.der().clone();
        let mut chain = vec![der.clone()];
        chain.extend(self.intermediates.iter().rev().map(|i| i.der().clone()));
        let serial_hex = crate::identity::hex(
            params.serial_number.as_ref().map(|s| s.as_ref()).unwrap_or_default(),
        );
        TestLeaf {
            der,
            chain_pem: crate::pem::certs_to_pem(chain.iter()),
            key_pem: crate::keys::to_pem(&leaf_key),
            serial_hex,
            chain,
            key_der: leaf_key.serialize_der(),
        }
    }

    /// A CRL from the leaves' issuer revoking `revoked` (reason keyCompromise), PEM.
    pub fn crl(&self, revoked: &[&TestLeaf]) -> String {
        crate::pem::encode("X509 CRL", &self.crl_der(revoked))
    }

    /// The same CRL, DER.
    pub fn crl_der(&self, revoked: &[&TestLeaf]) -> CertificateRevocationListDer<'static> {
        self.crl_der_until(revoked, OffsetDateTime::now_utc() + Duration::days(7))
    }

    /// A CRL like [`TestPki::crl`] whose nextUpdate is `next_update`, PEM.
    pub fn crl_until(&self, revoked: &[&TestLeaf], next_update: OffsetDateTime) -> String {
        crate::pem::encode("X509 CRL", &self.crl_der_until(revoked, next_update))
    }

    fn crl_der_until(
        &self,
        revoked: &[&TestLeaf],
        next_update: OffsetDateTime,
    ) -> CertificateRevocationListDer<'static> {
        let now = OffsetDateTime::now_utc();
        let entries: Vec<_> = revoked
            .iter()
            .map(|leaf| crate::crl::Entry {
                serial: serial_bytes(&leaf.serial_hex),
                revoked_at: now - Duration::minutes(1),
                reason: crate::crl::Reason::KeyCompromise,
            })
            .collect();
        // A CRL already past its next update was issued before it.
        let this_update = (now - Duration::minutes(1)).min(next_update - Duration::hours(1));
        let der = crate::crl::sign(self.issuer(), &entries, 1, this_update, next_update)
            .expect("sign CRL");
        CertificateRevocationListDer::from(der)
    }

    /// A CRL from the root revoking the first intermediate when `revoke_intermediate`, PEM.
    pub fn root_crl(&self, revoke_intermediate: bool) -> String {
        use x509_parser::prelude::FromDer;
        let now = OffsetDateTime::now_utc();
        let mut entries = Vec::new();
        if revoke_intermediate {
            let first = self.intermediates.first().expect("an intermediate");
            let (_, cert) = x509_parser::certificate::X509Certificate::from_der(first.der())
                .expect("parse intermediate");
            entries.push(crate::crl::Entry {
                serial: cert.raw_serial().to_vec(),
                revoked_at: now - Duration::minutes(1),
                reason: crate::crl::Reason::CaCompromise,
            });
        }
        let der = crate::crl::sign(
            &self.root,
            &entries,
            1,
            now - Duration::minutes(1),
            now + Duration::days(7),
        )
        .expect("sign root CRL");
        crate::pem::encode("X509 CRL", &der)
    }

    pub fn root_pem(&self) -> String {
        self.root.pem()
    }

    pub fn root_der(&self) -> CertificateDer<'static> {
        self.root.der().clone()
    }

    /// Writes the root certificate to `dir/root.crt`.
    pub fn write_root(&self, dir: &Path) -> PathBuf {
        let path = dir.join("root.crt");
        std::fs::write(&path, self.root_pem()).expect("write root");
        path
    }

    fn issuer(&self) -> &CertifiedIssuer<'static, KeyPair> {
        self.intermediates.last().unwrap_or(&self.root)
    }
}

fn ca_subject(prefix: &str, what: &str) -> Subject {
    let mut subject = Subject::default();
    subject.push(crate::dn::Attribute::O, "certgate tests");
    subject.push(crate::dn::Attribute::CN, format!("{prefix} {what}"));
    subject
}

fn ca_window() -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (now - Duration::days(1), now + Duration::days(365))
}

fn key() -> KeyPair {
    KeyType::EcP256.generate().expect("generate CA key")
}

fn serial_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex serial"))
        .collect()
}
