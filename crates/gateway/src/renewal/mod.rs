//! Certificates from the online CA (`certgate ca serve`), kept renewed: the client side shared
//! by `certgate cert request`/`cert renew` (once, `--if-needed`, `--daemon`) and the gateway's
//! managed certificates.
//!
//! - [`client`]: HTTPS to the CA, trusting only its pinned root, and the checks on its answers;
//! - [`schedule`]: when renewal is due, and the backoff after failures.
//!
//! The key never leaves the machine: a first certificate is requested with a CSR and a
//! one-time token (`/sign`); renewal presents the current certificate over mTLS (`/renew`)
//! and keeps the key, so the certificate file is replaced alone and always matches the key;
//! a rekey (`/rekey`) changes both, written in the versioned layout of [`versioned`] so they
//! switch together (renewal then keeps that layout).

pub mod client;
pub mod schedule;
pub mod versioned;

use std::path::{Path, PathBuf};

use certgate_pki::PkiError;
use certgate_pki::fs::{Mode, Overwrite};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub use client::{Answer, CaClient, RootPin};
pub use schedule::{Backoff, ExpiresIn, Validity};

/// What went wrong talking to the online CA or with the files it concerns.
#[derive(Debug, thiserror::Error)]
pub enum RenewalError {
    #[error("{url}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("{url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("{url}: no answer within {} s", after.as_secs())]
    Timeout { url: String, after: std::time::Duration },
    #[error("{url}: the CA refused ({status}): {message}")]
    Refused { url: String, status: u16, message: String },
    #[error("{url}: the CA's answer: {reason}")]
    Answer { url: String, reason: String },
    #[error("fingerprint {value}: {reason}")]
    Fingerprint { value: String, reason: String },
    #[error("TLS to the CA: {what}: {reason}")]
    Tls { what: &'static str, reason: String },
    #[error("{}: {reason}", path.display())]
    Files { path: PathBuf, reason: String },
    #[error("building the certificate request: {reason}")]
    Csr { reason: String },
    #[error(transparent)]
    Pki(#[from] PkiError),
}

impl RenewalError {
    /// Whether trying again later cannot help: the CA refused the certificate itself
    /// (revoked, expired, superseded, no longer allowed), as opposed to a failure of the
    /// network, of the CA's service or of a busy CA.
    pub fn is_final(&self) -> bool {
        matches!(self, RenewalError::Refused { status: 400 | 401 | 403, .. })
    }
}

/// A certificate file (leaf + chain, PEM) and its key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate and key read from [`CertFiles`], checked to belong together.
pub struct Current {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: rcgen::KeyPair,
    pub validity: Validity,
    pub serial: String,
}

impl Current {
    /// The chain and key as a TLS identity to present.
    pub fn identity(&self) -> client::Identity {
        (
            self.chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der())),
        )
    }
}

impl CertFiles {
    /// `DIR/NAME.crt` and `DIR/NAME.key`.
    pub fn in_dir(dir: &Path, name: &str) -> CertFiles {
        CertFiles { cert: dir.join(format!("{name}.crt")), key: dir.join(format!("{name}.key")) }
    }

    /// Reads both files; the key must be the certificate's.
    pub fn read(&self) -> Result<Current, RenewalError> {
        let chain = certgate_pki::pem::read_certs(&self.cert)?;
        let Some(leaf) = chain.first() else {
            return Err(RenewalError::Files {
                path: self.cert.clone(),
                reason: "no certificate in the file".into(),
            });
        };
        let key = certgate_pki::keys::load(&self.key, None)?;
        if !certgate_pki::keys::matches_cert(&key, leaf) {
            return Err(RenewalError::Files {
                path: self.key.clone(),
                reason: format!(
                    "not the private key of the certificate in {}",
                    self.cert.display()
                ),
            });
        }
        let info = certgate_pki::inspect::cert_info(leaf)?;
        let validity = Validity { not_before: info.not_before, not_after: info.not_after };
        Ok(Current { chain, key, validity, serial: info.serial })
    }

    /// Renews `current` at the CA over mTLS (`/renew`), checks the answer (our key, the
    /// pinned root) and replaces the certificate file atomically; the key file is untouched.
    pub async fn renew(
        &self,
        url: &str,
        pin: &RootPin,
        current: &Current,
    ) -> Result<Current, RenewalError> {
        let client = CaClient::new(url, pin, Some(current.identity())).await?;
        let answer = client.post("/renew", None).await?;
        client::check_answer(&client.url("/renew"), &answer, client.root(), &current.key)?;
        self.write_cert(&answer.chain)?;
        let key = rcgen::KeyPair::try_from(current.key.serialize_der().as_slice())
            .map_err(|e| RenewalError::Files { path: self.key.clone(), reason: e.to_string() })?;
        received(&client.url("/renew"), answer.chain, key)
    }

    /// Requests a first certificate with a one-time `token` (`/sign`) for a new key of
    /// `key_type`, and writes both files (the key 0600) only once the answer checks out.
    /// Existing files are replaced only with `overwrite`.
    pub async fn request(
        &self,
        url: &str,
        pin: &RootPin,
        req: &Request<'_>,
        overwrite: Overwrite,
    ) -> Result<Current, RenewalError> {
        certgate_pki::fs::ensure_absent([self.cert.as_path(), self.key.as_path()], overwrite)?;
        let key = req.key_type.generate()?;
        let csr = csr(req.name, req.sans, &key)?;
        let mut body = serde_json::json!({ "csr": csr, "ott": req.token });
        if let Some(lifetime) = req.lifetime {
            let now = time::OffsetDateTime::now_utc();
            let end = now.checked_add(lifetime).map(certgate_pki::validity::rfc3339);
            body["notAfter"] = end.into();
        }
        let client = CaClient::new(url, pin, None).await?;
        let answer = client.post("/sign", Some(body)).await?;
        client::check_answer(&client.url("/sign"), &answer, client.root(), &key)?;
        let chain_pem = certgate_pki::pem::certs_to_pem(&answer.chain);
        let mut files = certgate_pki::fs::FileSet::new();
        files.write(
            &self.key,
            certgate_pki::keys::to_pem(&key).as_bytes(),
            Mode::Secret,
            overwrite,
        )?;
        files.write(&self.cert, chain_pem.as_bytes(), Mode::Public, overwrite)?;
        files.commit();
        received(&client.url("/sign"), answer.chain, key)
    }

    /// Presents `current` at the CA over mTLS with a CSR for a new key of `key_type`
    /// (`/rekey`), checks the answer (the new key, the pinned root) and makes the new pair
    /// current in the versioned layout ([`versioned`]), converting plain files first.
    pub async fn rekey(
        &self,
        url: &str,
        pin: &RootPin,
        current: &Current,
        key_type: certgate_pki::keys::KeyType,
    ) -> Result<Current, RenewalError> {
        let layout = versioned::Versioned::of(self)?;
        let key = key_type.generate()?;
        let name = self.cert.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default();
        let body = serde_json::json!({ "csr": csr(&name, &[], &key)? });
        let client = CaClient::new(url, pin, Some(current.identity())).await?;
        let answer = client.post("/rekey", Some(body)).await?;
        client::check_answer(&client.url("/rekey"), &answer, client.root(), &key)?;
        let chain_pem = certgate_pki::pem::certs_to_pem(&answer.chain);
        layout.publish(chain_pem.as_bytes(), certgate_pki::keys::to_pem(&key).as_bytes())?;
        received(&client.url("/rekey"), answer.chain, key)
    }

    /// The versioned layout when the files are in it (after a rekey), else `None`.
    pub fn versioned(&self) -> Option<versioned::Versioned> {
        versioned::Versioned::of(self).ok().filter(|v| v.in_place())
    }

    /// Replaces the certificate: atomically in place, or, in the versioned layout, as a new
    /// version holding the same key.
    fn write_cert(&self, chain: &[CertificateDer<'static>]) -> Result<(), RenewalError> {
        let pem = certgate_pki::pem::certs_to_pem(chain);
        if let Some(layout) = self.versioned() {
            let key = std::fs::read(&self.key).map_err(|e| RenewalError::Files {
                path: self.key.clone(),
                reason: e.to_string(),
            })?;
            layout.publish(pem.as_bytes(), &key)?;
            return Ok(());
        }
        certgate_pki::fs::write_atomic(&self.cert, pem.as_bytes(), Mode::Public, Overwrite::Force)?;
        Ok(())
    }
}

/// What `/sign` needs besides the CA: the name, the SANs the token allows, the key to make,
/// the token, and a lifetime (none: the CA's default).
pub struct Request<'a> {
    pub name: &'a str,
    pub sans: &'a [String],
    pub key_type: certgate_pki::keys::KeyType,
    pub token: &'a str,
    pub lifetime: Option<time::Duration>,
}

/// The answer as the new [`Current`] (its chain was checked: it has a leaf).
fn received(
    url: &str,
    chain: Vec<CertificateDer<'static>>,
    key: rcgen::KeyPair,
) -> Result<Current, RenewalError> {
    let info = match chain.first() {
        Some(leaf) => certgate_pki::inspect::cert_info(leaf)?,
        None => {
            let reason = "no certificate".into();
            return Err(RenewalError::Answer { url: url.into(), reason });
        }
    };
    let validity = Validity { not_before: info.not_before, not_after: info.not_after };
    Ok(Current { chain, key, validity, serial: info.serial })
}

/// A PKCS#10 request for CN=`name` and `sans`, signed by `key`, PEM.
pub fn csr(name: &str, sans: &[String], key: &rcgen::KeyPair) -> Result<String, RenewalError> {
    let bad = |reason: String| RenewalError::Csr { reason };
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    for value in sans {
        let san = certgate_pki::names::San::parse(value)?;
        let ia5 = |v: String| {
            rcgen::string::Ia5String::try_from(v.clone()).map_err(|_| {
                RenewalError::Pki(PkiError::InvalidSan {
                    value: v.clone(),
                    reason: "not an ASCII name".into(),
                })
            })
        };
        params.subject_alt_names.push(match san {
            certgate_pki::names::San::Dns(v) => rcgen::SanType::DnsName(ia5(v)?),
            certgate_pki::names::San::Ip(ip) => rcgen::SanType::IpAddress(ip),
            certgate_pki::names::San::Uri(v) => rcgen::SanType::URI(ia5(v)?),
            certgate_pki::names::San::Email(v) => rcgen::SanType::Rfc822Name(ia5(v)?),
        });
    }
    let csr =
        params.serialize_request(key).map_err(|e| bad(format!("building the request: {e}")))?;
    csr.pem().map_err(|e| bad(format!("encoding the request: {e}")))
}
