//! The certificate authority: a directory holding the root, an optional intermediate that signs
//! day-to-day certificates, their keys, and the inventory.
//!
//! ```text
//! <ca-dir>/root.crt           trust anchor to hand to clients and gateways
//! <ca-dir>/root.key           0600, encrypted PKCS#8 when a password was given
//! <ca-dir>/intermediate.crt   issuing CA (absent with --no-intermediate: the root issues)
//! <ca-dir>/intermediate.key   0600
//! <ca-dir>/inventory.db       0600, every issued certificate
//! <ca-dir>/crl-url            the `ca init --crl-url` base, when given
//! <ca-dir>/crl.pem            written by `certgate crl`: every CA's CRL, one PEM bundle
//! <ca-dir>/root.crl           the root's latest CRL (DER), as BASE/root.crl serves it
//! <ca-dir>/intermediate.crl   the intermediate's latest CRL (DER)
//! ```
//!
//! Issuance is a short list of steps, each a small function: check the request, build the
//! parameters, sign, record in the inventory and hand out inside one transaction.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{Issuer, KeyPair};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::crl::{CrlIssuer, Reason};
use crate::fs::{FileSet, Mode, Overwrite};
use crate::issue::{self, Subject};
use crate::keys::KeyType;
use crate::names::{Permit, San};
use crate::profile::Profile;
use crate::store::{
    Inventory, InventoryTx, ListFilter, Record, Revoked, Serial, SqliteInventory, Status,
    StoreError, Superseded,
};
use crate::validity::{Validity, checked_after};
use crate::verify::{Purpose, TrustStore, VerifyError, VerifyPolicy};
use crate::{PkiError, dn};

/// Where each file of a CA directory lives.
#[derive(Debug, Clone)]
pub struct CaPaths {
    pub dir: PathBuf,
    pub root_crt: PathBuf,
    pub root_key: PathBuf,
    pub intermediate_crt: PathBuf,
    pub intermediate_key: PathBuf,
    pub inventory: PathBuf,
    pub crl: PathBuf,
    pub crl_url: PathBuf,
}

impl CaPaths {
    pub fn new(dir: &Path) -> CaPaths {
        CaPaths {
            dir: dir.to_path_buf(),
            root_crt: dir.join("root.crt"),
            root_key: dir.join("root.key"),
            intermediate_crt: dir.join("intermediate.crt"),
            intermediate_key: dir.join("intermediate.key"),
            inventory: dir.join("inventory.db"),
            crl: dir.join("crl.pem"),
            crl_url: dir.join("crl-url"),
        }
    }

    /// `<ca-dir>/root.crl` or `<ca-dir>/intermediate.crl`: the CA's latest CRL, DER.
    pub fn published_crl(&self, issuer: CrlIssuer) -> PathBuf {
        self.dir.join(issuer.file_name())
    }
}

/// Options of `certgate ca init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Root CA common name; the intermediate is named after it.
    pub name: String,
    /// The root's subject; `name` is its CN unless it has one. The intermediate gets the same
    /// attributes with its own CN.
    pub subject: Option<Subject>,
    pub key_type: KeyType,
    /// Lifetime of the root (and of the intermediate).
    pub days: u32,
    pub intermediate: bool,
    /// The root's pathlen: how many CAs may be below it (`None`: no limit). With an
    /// intermediate it must be at least 1.
    pub root_path_len: Option<u8>,
    /// Permitted subtrees (name constraints) of the intermediate; needs one.
    pub permits: Vec<Permit>,
    /// Encrypts the CA keys (PKCS#8, PBES2) when set.
    pub password: Option<Vec<u8>>,
    /// Base URL of the CRLs: certificates then carry the CRL distribution point
    /// `BASE/<issuer>.crl` of the CA that signed them.
    pub crl_url: Option<String>,
    pub force: bool,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            name: "certgate Root CA".into(),
            subject: None,
            key_type: KeyType::EcP256,
            days: 3650,
            intermediate: true,
            root_path_len: None,
            permits: vec![],
            password: None,
            crl_url: None,
            force: false,
        }
    }
}

/// A request for a new leaf certificate and key.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// Inventory name, and the subject's CN unless `subject` has one.
    pub name: String,
    /// The subject, in encoding order; `None` is `CN=name`.
    pub subject: Option<Subject>,
    /// SAN values, classified by [`San::parse`].
    pub sans: Vec<String>,
    /// Defaults to [`Profile::default_for`] the SANs.
    pub profile: Option<Profile>,
    pub validity: Validity,
    pub key_type: KeyType,
}

impl IssueRequest {
    pub fn new(name: impl Into<String>, sans: Vec<String>) -> IssueRequest {
        IssueRequest {
            name: name.into(),
            subject: None,
            sans,
            profile: None,
            validity: Validity::default(),
            key_type: KeyType::EcP256,
        }
    }
}

/// A certificate the CA signed.
#[derive(Debug, Clone)]
pub struct Issued {
    pub record: Record,
    pub cert_der: CertificateDer<'static>,
    /// The leaf followed by the intermediates: what nginx, curl and certgate want.
    pub chain_pem: String,
    /// PKCS#8 PEM of a key the CA generated; `None` when the requester holds the key.
    pub key_pem: Option<String>,
    pub sans: Vec<San>,
    pub profile: Profile,
    /// Serials of earlier certificates of the same name that this one supersedes.
    pub supersedes: Vec<Serial>,
}

impl Issued {
    pub fn serial_hex(&self) -> &str {
        self.record.serial.as_str()
    }
}

/// A one-time token redeemed by an issuance: its `jti` is recorded in the same transaction
/// as the certificate, so a token is used at most once and a failed issuance uses none.
#[derive(Debug, Clone)]
pub struct Redeemed {
    pub jti: String,
    pub provisioner: String,
    /// The token's expiry: its row may be purged after it.
    pub expires_at: OffsetDateTime,
}

/// Which public key a renewal certifies; everything else is the old certificate's.
#[derive(Debug, Clone, Copy)]
enum RenewKey<'a> {
    /// The old certificate's (the holder keeps its key).
    Reuse,
    /// A new key the CA generates and hands out (`cert renew` without `--reuse-key`).
    Generate,
    /// The key of a CSR the holder made (`POST /rekey`); never the old one.
    Csr(&'a crate::csr::Csr),
}

/// A CA directory opened for use.
pub struct Authority {
    paths: CaPaths,
    store: Box<dyn Inventory>,
    root_der: CertificateDer<'static>,
    /// The certificate of the CA that signs leaves (intermediate, or root).
    issuing_der: CertificateDer<'static>,
    issuing_key_path: PathBuf,
    issuing_subject: String,
    issuing_not_after: OffsetDateTime,
    root_subject: String,
    /// Certificates appended after a leaf in `NAME.crt`.
    intermediates: Vec<CertificateDer<'static>>,
    /// The `--crl-url` base, when the CA was made with one.
    crl_url: Option<String>,
    /// Whether a CA certificate carries name constraints: then every new certificate is
    /// verified against them before it is handed out.
    constrained: bool,
    password: Option<Vec<u8>>,
    /// Each CA's signing key with its certificate, loaded on first use (decrypted, checked to
    /// match) and kept for this `Authority`'s life: `[root, intermediate]`.
    signers: [OnceCell<Arc<Issuer<'static, KeyPair>>>; 2],
}

impl Authority {
    /// Creates a CA in `dir` (created if missing). Refuses a directory that already holds a CA
    /// unless `force`; with `force` the old inventory is kept aside as
    /// `inventory.db.replaced-<unix time>`.
    pub fn init(dir: &Path, opts: &InitOptions) -> Result<Authority, PkiError> {
        let paths = CaPaths::new(dir);
        if !opts.force {
            for existing in [&paths.root_crt, &paths.root_key, &paths.inventory] {
                if existing.exists() {
                    return Err(PkiError::CaExists {
                        dir: dir.to_path_buf(),
                        existing: existing.clone(),
                    });
                }
            }
        }
        if opts.days == 0 {
            return Err(PkiError::InvalidValidity {
                reason: "a CA lifetime of 0 days is empty; give at least 1".into(),
            });
        }
        Validity::Days(opts.days).checked()?;
        let crl_url = opts.crl_url.as_deref().map(crate::crl::check_base_url).transpose()?;
        if opts.name.trim().is_empty() {
            return Err(PkiError::InvalidName {
                value: opts.name.clone(),
                reason: "the CA name may not be empty",
            });
        }
        check_constraints(opts)?;
        create_private_dir(dir)?;
        let now = OffsetDateTime::now_utc();
        let (not_before, not_after) = Validity::Days(opts.days).window(now)?;

        let root_key = opts.key_type.generate()?;
        let root_subject = opts.subject.clone().unwrap_or_default().with_default_cn(&opts.name);
        let root_cn = root_subject.common_name().unwrap_or(&opts.name).to_string();
        let root_params =
            issue::root_params(&root_subject, opts.root_path_len, not_before, not_after)?;
        let root_cert = root_params.self_signed(&root_key)?;
        let root_issuer = Issuer::new(root_params, &root_key);

        let overwrite = Overwrite::from_force(opts.force);
        let mut files = FileSet::new();
        let key_pem = |key: &KeyPair| match &opts.password {
            Some(pw) => crate::keys::to_encrypted_pem(key, pw),
            None => Ok(crate::keys::to_pem(key)),
        };
        files.write(&paths.root_key, key_pem(&root_key)?.as_bytes(), Mode::Secret, overwrite)?;
        files.write(&paths.root_crt, root_cert.pem().as_bytes(), Mode::Public, overwrite)?;
        match &crl_url {
            Some(base) => files.write(&paths.crl_url, base.as_bytes(), Mode::Public, overwrite)?,
            None => remove_stale(&paths.crl_url)?,
        }
        // The CRLs of a replaced CA are signed by keys that no longer exist.
        for issuer in CrlIssuer::ALL {
            remove_stale(&paths.published_crl(issuer))?;
        }
        if opts.intermediate {
            let int_key = opts.key_type.generate()?;
            let mut int_params = issue::intermediate_params(
                &root_subject.clone().with_cn(&intermediate_name(&root_cn)),
                0,
                &opts.permits,
                not_before,
                not_after,
            )?;
            int_params.crl_distribution_points = distribution_points(&crl_url, CrlIssuer::Root);
            let int_cert = int_params.signed_by(&int_key, &root_issuer)?;
            files.write(
                &paths.intermediate_key,
                key_pem(&int_key)?.as_bytes(),
                Mode::Secret,
                overwrite,
            )?;
            files.write(
                &paths.intermediate_crt,
                int_cert.pem().as_bytes(),
                Mode::Public,
                overwrite,
            )?;
        } else {
            for stale in [&paths.intermediate_crt, &paths.intermediate_key] {
                remove_stale(stale)?;
            }
        }
        if opts.force && paths.inventory.exists() {
            let aside = paths.dir.join(format!("inventory.db.replaced-{}", now.unix_timestamp()));
            std::fs::rename(&paths.inventory, &aside)
                .map_err(|source| PkiError::Write { path: aside, source })?;
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(paths.dir.join(format!("inventory.db{suffix}")));
            }
        }
        // The default provisioner of the online CA (its token key, 0600, and its profile).
        if let Err(e) = crate::provisioner::init(dir, overwrite) {
            files.roll_back();
            return Err(e);
        }
        let opened = Authority::open(dir, opts.password.clone());
        match opened {
            Ok(ca) => {
                files.commit();
                Ok(ca)
            }
            Err(e) => {
                files.roll_back();
                Err(e)
            }
        }
    }

    /// Opens the CA in `dir`. The password (for encrypted keys) is used only when signing.
    pub fn open(dir: &Path, password: Option<Vec<u8>>) -> Result<Authority, PkiError> {
        let paths = CaPaths::new(dir);
        if !dir.is_dir() {
            return Err(PkiError::NoCa {
                dir: dir.to_path_buf(),
                reason: "the directory does not exist (create a CA with `certgate ca init`, or \
                         point --ca-dir / CERTGATE_CA_DIR at one)",
            });
        }
        if !paths.root_crt.exists() {
            return Err(PkiError::NoCa {
                dir: dir.to_path_buf(),
                reason: "root.crt is missing (create a CA with `certgate ca init`)",
            });
        }
        let root_der = first_cert(&paths.root_crt)?;
        let root_subject = match X509Certificate::from_der(&root_der) {
            Ok((_, root)) => dn::rfc4514(root.subject()),
            Err(e) => return Err(PkiError::bad_file(&paths.root_crt, format!("not X.509: {e}"))),
        };
        let crl_url = match paths.crl_url.exists() {
            true => {
                let text = std::fs::read_to_string(&paths.crl_url)
                    .map_err(|source| PkiError::Read { path: paths.crl_url.clone(), source })?;
                Some(crate::crl::check_base_url(text.trim()).map_err(|e| {
                    PkiError::bad_file(&paths.crl_url, crate::error::with_causes(&e))
                })?)
            }
            false => None,
        };
        let (issuing_der, issuing_key_path, intermediates) = if paths.intermediate_crt.exists() {
            let der = first_cert(&paths.intermediate_crt)?;
            (der.clone(), paths.intermediate_key.clone(), vec![der])
        } else {
            (root_der.clone(), paths.root_key.clone(), vec![])
        };
        let (_, parsed) = X509Certificate::from_der(&issuing_der)
            .map_err(|e| PkiError::bad_file(&issuing_key_path, format!("not X.509: {e}")))?;
        let issuing_subject = dn::rfc4514(parsed.subject());
        let constrained = has_name_constraints(&root_der) || has_name_constraints(&issuing_der);
        let issuing_not_after = parsed.validity().not_after.to_datetime();
        drop(parsed);
        if !issuing_key_path.exists() {
            return Err(PkiError::NoCa {
                dir: dir.to_path_buf(),
                reason: "the issuing CA's private key file is missing",
            });
        }
        let store = SqliteInventory::open(&paths.inventory)
            .map_err(|source| PkiError::Store { path: paths.inventory.clone(), source })?;
        Ok(Authority {
            paths,
            store: Box::new(store),
            root_der,
            issuing_der,
            issuing_key_path,
            issuing_subject,
            issuing_not_after,
            root_subject,
            intermediates,
            crl_url,
            constrained,
            password,
            signers: [OnceCell::new(), OnceCell::new()],
        })
    }

    pub fn paths(&self) -> &CaPaths {
        &self.paths
    }

    /// The inventory, for reads; writes go through the CA's methods.
    pub fn inventory(&self) -> &dyn Inventory {
        self.store.as_ref()
    }

    /// The certificate `query` names: a serial (hex, any case, colons allowed) or else a name,
    /// whose latest certificate it means ([`crate::store::by_serial_or_name`]). For people;
    /// an unknown query is [`PkiError::UnknownCertificate`].
    pub fn find(&self, query: &str) -> Result<Record, PkiError> {
        crate::store::by_serial_or_name(self.store.as_ref(), query)
            .map_err(self.store_err())?
            .ok_or_else(|| PkiError::UnknownCertificate { query: query.to_string() })
    }

    /// The certificates `filter` selects, oldest issuance first.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<Record>, PkiError> {
        self.store.list(filter).map_err(self.store_err())
    }

    pub fn root_der(&self) -> &CertificateDer<'static> {
        &self.root_der
    }

    pub fn root_pem(&self) -> String {
        crate::pem::encode("CERTIFICATE", &self.root_der)
    }

    /// The chain a leaf is served with after itself (the intermediate, if any).
    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.intermediates
    }

    /// The `ca init --crl-url` base (no trailing `/`), when the CA was made with one.
    pub fn crl_url(&self) -> Option<&str> {
        self.crl_url.as_deref()
    }

    pub fn issuing_subject(&self) -> &str {
        &self.issuing_subject
    }

    /// Issues a certificate and a new key, records it, and calls `deliver` (which writes the
    /// files) inside the inventory transaction: if `deliver` fails, nothing is recorded.
    pub fn issue(
        &mut self,
        req: &IssueRequest,
        deliver: impl FnOnce(&Issued) -> Result<(), PkiError>,
    ) -> Result<Issued, PkiError> {
        let sans = parse_sans(&req.sans)?;
        check_cn(&req.name)?;
        let profile = match req.profile {
            Some(p) => p,
            None => Profile::default_for(&sans)?,
        };
        require_server_san(profile, &sans)?;
        let key = req.key_type.generate()?;
        let subject = req.subject.clone().unwrap_or_default().with_default_cn(&req.name);
        let mut issued = self.sign(
            &req.name,
            &subject,
            &sans,
            profile,
            req.validity,
            &key,
            req.key_type.is_rsa(),
            Some(crate::keys::to_pem(&key)),
        )?;
        self.record(&mut issued, None, deliver)?;
        Ok(issued)
    }

    /// Signs a CSR under the CA's policy: the CSR's subject and SANs are kept (or replaced by
    /// `sans_override`), and the CA sets basicConstraints, key usages and validity. A server or
    /// dual certificate without requested SANs gets the CN as its SAN ([`Csr::cn_san`]); a
    /// client certificate does not.
    ///
    /// [`Csr::cn_san`]: crate::csr::Csr::cn_san
    pub fn sign_csr(
        &mut self,
        csr: &crate::csr::Csr,
        profile: Option<Profile>,
        validity: Validity,
        name: Option<&str>,
        sans_override: &[String],
        deliver: impl FnOnce(&Issued) -> Result<(), PkiError>,
    ) -> Result<Issued, PkiError> {
        let mut sans =
            if sans_override.is_empty() { csr.sans.clone() } else { parse_sans(sans_override)? };
        let profile = match profile {
            Some(p) => p,
            None => Profile::default_for(&sans)?,
        };
        if sans.is_empty() && profile != Profile::Client {
            // A server is checked by the name it is reached at, which only a SAN carries;
            // a client certificate is identified by its subject and gets no invented SAN.
            sans.extend(csr.cn_san.clone());
        }
        require_server_san(profile, &sans)?;
        let name = name
            .map(str::to_string)
            .or_else(|| {
                csr.subject.common_name().map(str::to_string).and_then(NonEmpty::into_non_empty)
            })
            .or_else(|| sans.first().map(San::value))
            .ok_or_else(|| PkiError::CsrRejected {
                source_name: csr.source_name.clone(),
                reason: "it has neither a subject CN nor a SAN; give --name".into(),
            })?;
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(&csr.spki_der).map_err(|e| {
            PkiError::CsrRejected {
                source_name: csr.source_name.clone(),
                reason: format!("unsupported public key: {e}"),
            }
        })?;
        let mut issued = self.sign(
            &name,
            &csr.subject,
            &sans,
            profile,
            validity,
            &public_key,
            csr.rsa_key,
            None,
        )?;
        self.record(&mut issued, None, deliver)?;
        Ok(issued)
    }

    /// Signs the public key of a CSR (whose signature [`crate::csr::parse`] verified) for
    /// `name` and `sans`, already checked by the caller's policy, redeeming `token` in the
    /// same transaction: a token already used is [`PkiError::TokenUsed`] and nothing is
    /// recorded. `deliver` runs inside the transaction, before it commits (its failure records
    /// nothing and uses no token). The answer can be sent once this returns: the row is
    /// committed.
    #[allow(clippy::too_many_arguments)]
    pub fn sign_redeeming(
        &mut self,
        csr: &crate::csr::Csr,
        name: &str,
        sans: &[San],
        profile: Profile,
        validity: Validity,
        token: &Redeemed,
        deliver: impl FnOnce(&Issued) -> Result<(), PkiError>,
    ) -> Result<Issued, PkiError> {
        check_cn(name)?;
        require_server_san(profile, sans)?;
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(&csr.spki_der).map_err(|e| {
            PkiError::CsrRejected {
                source_name: csr.source_name.clone(),
                reason: format!("unsupported public key: {e}"),
            }
        })?;
        let subject = Subject::cn(name);
        let mut issued =
            self.sign(name, &subject, sans, profile, validity, &public_key, csr.rsa_key, None)?;
        self.record_redeeming(&mut issued, None, Some(token), deliver)?;
        Ok(issued)
    }

    /// SHA-256 of the root certificate's DER, lowercase hex: how a one-time token names this
    /// CA as its audience (`certgate ca token` without `--ca-url`).
    pub fn root_fingerprint(&self) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.root_der);
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The PEM of the CA that signs leaves (the intermediate, or the root without one).
    pub fn issuing_pem(&self) -> String {
        crate::pem::encode("CERTIFICATE", &self.issuing_der)
    }

    /// The certificate `query` (serial or name) names, if it can be renewed: a revoked one
    /// cannot ([`PkiError::RenewRevoked`]), nor one already renewed
    /// ([`PkiError::RenewSuperseded`]).
    pub fn renewable(&self, query: &str) -> Result<Record, PkiError> {
        let old = self.find(query)?;
        match old.status {
            Status::Valid => Ok(old),
            Status::Revoked => Err(renew_revoked(&old.serial, &old.name)),
            Status::Superseded => {
                Err(renew_superseded(&old.serial, &old.name, old.superseded_by.as_ref()))
            }
        }
    }

    /// Renews the certificate found by `query`: same subject, SANs and profile, a validity as
    /// long as the original's, a new key unless `reuse_key` (then the old certificate's public
    /// key is certified again; the CA never holds leaf keys). The old one becomes superseded.
    pub fn renew(
        &mut self,
        query: &str,
        reuse_key: bool,
        deliver: impl FnOnce(&Issued) -> Result<(), PkiError>,
    ) -> Result<(Issued, Record), PkiError> {
        let old = self.renewable(query)?;
        let key = if reuse_key { RenewKey::Reuse } else { RenewKey::Generate };
        self.renew_record(old, key, deliver)
    }

    /// Renews the certificate with exactly this serial, for a network caller pinned to the
    /// certificate it presented (never looked up by name): the same public key, subject,
    /// SANs and profile, as long a lifetime starting now (backdated a minute). A revoked or
    /// superseded certificate is refused, again inside the transaction that records the new
    /// one; an unknown serial is [`PkiError::UnknownCertificate`].
    pub fn renew_serial(&mut self, serial: &Serial) -> Result<(Issued, Record), PkiError> {
        let old = self.renewable_serial(serial)?;
        self.renew_record(old, RenewKey::Reuse, |_| Ok(()))
    }

    /// Rekeys the certificate with exactly this serial, as [`Authority::renew_serial`] renews
    /// it, but certifying the key of `csr` (whose signature [`crate::csr::parse`] verified):
    /// the subject, SANs, profile and lifetime are the old certificate's, never the CSR's. A
    /// CSR for the old certificate's own key is [`PkiError::RekeySameKey`].
    pub fn rekey_serial(
        &mut self,
        serial: &Serial,
        csr: &crate::csr::Csr,
    ) -> Result<(Issued, Record), PkiError> {
        let old = self.renewable_serial(serial)?;
        self.renew_record(old, RenewKey::Csr(csr), |_| Ok(()))
    }

    /// The record of exactly this serial, when it is valid (not revoked or superseded).
    fn renewable_serial(&self, serial: &Serial) -> Result<Record, PkiError> {
        let old = self
            .store
            .find(serial)
            .map_err(self.store_err())?
            .ok_or_else(|| PkiError::UnknownCertificate { query: serial.to_string() })?;
        match old.status {
            Status::Valid => Ok(old),
            Status::Revoked => Err(renew_revoked(&old.serial, &old.name)),
            Status::Superseded => {
                Err(renew_superseded(&old.serial, &old.name, old.superseded_by.as_ref()))
            }
        }
    }

    fn renew_record(
        &mut self,
        old: Record,
        key: RenewKey<'_>,
        deliver: impl FnOnce(&Issued) -> Result<(), PkiError>,
    ) -> Result<(Issued, Record), PkiError> {
        let (_, cert) = X509Certificate::from_der(&old.der)
            .map_err(|e| PkiError::bad_file(&self.paths.inventory, format!("stored cert: {e}")))?;
        let subject = Subject::from_name(cert.subject(), |_| {});
        let sans = stored_sans(&old.sans)?;
        let profile: Profile = old.profile.parse()?;
        let lifetime = old.not_after - old.not_before - crate::validity::BACKDATE;
        let validity = if lifetime >= Duration::days(1) && lifetime.whole_seconds() % 86_400 == 0 {
            Validity::Days(u32::try_from(lifetime.whole_days()).unwrap_or(365))
        } else if lifetime.whole_seconds() % 3600 == 0 && lifetime >= Duration::hours(1) {
            Validity::Hours(u32::try_from(lifetime.whole_hours()).unwrap_or(24))
        } else {
            Validity::Minutes(u32::try_from(lifetime.whole_minutes().max(1)).unwrap_or(60))
        };
        let rsa = cert.public_key().algorithm.algorithm.to_id_string() == "1.2.840.113549.1.1.1";
        let mut issued = match key {
            RenewKey::Reuse => {
                let public_key = rcgen::SubjectPublicKeyInfo::from_der(cert.public_key().raw)?;
                self.sign(&old.name, &subject, &sans, profile, validity, &public_key, rsa, None)?
            }
            RenewKey::Generate => {
                let key_type = key_type_of(&cert);
                let key = key_type.generate()?;
                let pem = crate::keys::to_pem(&key);
                self.sign(
                    &old.name,
                    &subject,
                    &sans,
                    profile,
                    validity,
                    &key,
                    key_type.is_rsa(),
                    Some(pem),
                )?
            }
            RenewKey::Csr(csr) => {
                if csr.spki_der == cert.public_key().raw {
                    return Err(PkiError::RekeySameKey {
                        serial: old.serial.to_string(),
                        name: old.name.clone(),
                    });
                }
                let public_key =
                    rcgen::SubjectPublicKeyInfo::from_der(&csr.spki_der).map_err(|e| {
                        PkiError::CsrRejected {
                            source_name: csr.source_name.clone(),
                            reason: format!("unsupported public key: {e}"),
                        }
                    })?;
                let csr_rsa = csr.rsa_key;
                self.sign(
                    &old.name,
                    &subject,
                    &sans,
                    profile,
                    validity,
                    &public_key,
                    csr_rsa,
                    None,
                )?
            }
        };
        self.record(&mut issued, Some(&old.serial), deliver)?;
        Ok((issued, old))
    }

    /// Revokes the certificate found by `query` (serial or name). `intermediate` (or the
    /// intermediate's serial) revokes the intermediate CA, which then goes on the root's CRL;
    /// it enters the inventory, named `intermediate`, on its first revocation.
    pub fn revoke(&mut self, query: &str, reason: Reason) -> Result<Record, PkiError> {
        let intermediate = self.intermediate_record()?;
        let record = match intermediate {
            Some(int)
                if query == "intermediate"
                    || Serial::parse(query).as_ref() == Some(&int.serial) =>
            {
                match self.store.find(&int.serial).map_err(self.store_err())? {
                    Some(recorded) => recorded,
                    None => {
                        self.transaction(|tx, err| tx.insert(&int).map_err(err))?;
                        int
                    }
                }
            }
            _ => self.find(query)?,
        };
        let serial = record.serial;
        let now = OffsetDateTime::now_utc();
        let unknown = |query: &Serial| PkiError::UnknownCertificate { query: query.to_string() };
        let outcome = self.transaction(|tx, err| {
            tx.revoke(&serial, reason, now).map_err(|e| match e {
                StoreError::NotFound { .. } => unknown(&serial),
                e => err(e),
            })
        })?;
        if let Revoked::Already { at } = outcome {
            return Err(PkiError::AlreadyRevoked {
                serial: serial.to_string(),
                revoked_at: crate::validity::format_time(at),
            });
        }
        self.store.find(&serial).map_err(self.store_err())?.ok_or_else(|| unknown(&serial))
    }

    /// The CAs of this directory that sign CRLs, the one that signs leaves first:
    /// `[intermediate, root]`, or `[root]` without an intermediate.
    pub fn crl_issuers(&self) -> Vec<CrlIssuer> {
        match self.intermediates.is_empty() {
            true => vec![CrlIssuer::Root],
            false => vec![CrlIssuer::Intermediate, CrlIssuer::Root],
        }
    }

    /// Signs `issuer`'s CRL of every certificate it revoked, with the next CRL number, valid
    /// until now + `next_update`, and keeps it as `<ca-dir>/<issuer>.crl`. `deliver` writes it
    /// where the user asked; the number is only used up if both succeed. Returns the DER, the
    /// CRL number and how many certificates it lists.
    pub fn crl(
        &mut self,
        issuer: CrlIssuer,
        next_update: Duration,
        deliver: impl FnOnce(&[u8]) -> Result<(), PkiError>,
    ) -> Result<(Vec<u8>, u64, usize), PkiError> {
        let (_, _, subject) = self.ca(issuer)?;
        let signer = self.signer_of(issuer)?;
        let published = self.paths.published_crl(issuer);
        let now =
            OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or(OffsetDateTime::now_utc());
        let next = checked_after("the CRL's next update", now, next_update)?;
        self.transaction(|tx, err| {
            let entries = tx.revoked_by(&subject).map_err(err)?;
            let number = tx.next_crl_number().map_err(err)?;
            let der = crate::crl::sign(&signer, &entries, number, now, next)?;
            crate::fs::write_atomic(&published, &der, Mode::Public, Overwrite::Force)?;
            deliver(&der)?;
            Ok((der, number, entries.len()))
        })
    }

    /// `<ca-dir>/<issuer>.crl` when it can be handed out again instead of signing a new one:
    /// this CA signed it, it is valid until at least `until`, and it lists exactly the
    /// certificates the inventory has revoked under that CA. This keeps the root's key offline
    /// between yearly root CRLs. Returns the DER, its CRL number and its next update.
    pub fn current_crl(
        &mut self,
        issuer: CrlIssuer,
        until: OffsetDateTime,
    ) -> Result<Option<(Vec<u8>, String, OffsetDateTime)>, PkiError> {
        let path = self.paths.published_crl(issuer);
        if !path.exists() {
            return Ok(None);
        }
        let (cert, _, subject) = self.ca(issuer)?;
        let der = crate::fs::read(&path)?;
        let Ok((_, crl)) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der)
        else {
            return Ok(None);
        };
        let (_, ca_cert) = X509Certificate::from_der(&cert)
            .map_err(|e| PkiError::bad_file(&path, format!("CA certificate: {e}")))?;
        let next_update = crl.next_update().map(|t| t.to_datetime());
        if crl.issuer().as_raw() != ca_cert.subject().as_raw()
            || next_update.is_none_or(|t| t < until)
            || crl.verify_signature(ca_cert.public_key()).is_err()
        {
            return Ok(None);
        }
        let mut listed: Vec<Vec<u8>> =
            crl.iter_revoked_certificates().map(|r| r.raw_serial().to_vec()).collect();
        let mut revoked: Vec<Vec<u8>> = self
            .transaction(|tx, err| tx.revoked_by(&subject).map_err(err))?
            .into_iter()
            .map(|e| e.serial)
            .collect();
        listed.sort();
        revoked.sort();
        if listed != revoked {
            return Ok(None);
        }
        let number = crl.crl_number().map(|n| n.to_string()).unwrap_or_default();
        Ok(next_update.map(|t| (der.clone(), number, t)))
    }

    /// The certificate, key file and inventory subject of `issuer`.
    fn ca(
        &self,
        issuer: CrlIssuer,
    ) -> Result<(CertificateDer<'static>, PathBuf, String), PkiError> {
        match (issuer, self.intermediates.is_empty()) {
            (CrlIssuer::Root, _) => {
                Ok((self.root_der.clone(), self.paths.root_key.clone(), self.root_subject.clone()))
            }
            (CrlIssuer::Intermediate, false) => Ok((
                self.issuing_der.clone(),
                self.issuing_key_path.clone(),
                self.issuing_subject.clone(),
            )),
            (CrlIssuer::Intermediate, true) => Err(PkiError::NoIntermediate {
                dir: self.paths.dir.clone(),
                reason: "its root signs the certificates and their CRL; use --issuer root",
            }),
        }
    }

    /// The intermediate as an inventory record (named `intermediate`, issued by the root), or
    /// `None` without an intermediate.
    fn intermediate_record(&self) -> Result<Option<Record>, PkiError> {
        let Some(der) = self.intermediates.first() else { return Ok(None) };
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| PkiError::bad_file(&self.paths.intermediate_crt, e.to_string()))?;
        let not_before = cert.validity().not_before.to_datetime();
        Ok(Some(Record {
            serial: Serial::from_bytes(cert.raw_serial()),
            name: "intermediate".into(),
            subject: dn::rfc4514(cert.subject()),
            sans: vec![],
            profile: "ca".into(),
            issuer: self.root_subject.clone(),
            not_before,
            not_after: cert.validity().not_after.to_datetime(),
            issued_at: not_before,
            status: Status::Valid,
            revoked_at: None,
            revocation_reason: None,
            superseded_by: None,
            der: der.to_vec(),
        }))
    }

    /// The signer of the CA that signs leaves (the intermediate, or the root without one).
    fn signer(&self) -> Result<Arc<Issuer<'static, KeyPair>>, PkiError> {
        self.signer_of(self.crl_issuers()[0])
    }

    /// The signer of `ca`: its key, loaded from its key file on first use (decrypted with the
    /// password if needed) and checked to match its certificate, then kept. A wrong or
    /// missing password, or a key of another CA, fails here, and again on the next call.
    fn signer_of(&self, ca: CrlIssuer) -> Result<Arc<Issuer<'static, KeyPair>>, PkiError> {
        let cell = match ca {
            CrlIssuer::Root => &self.signers[0],
            CrlIssuer::Intermediate => &self.signers[1],
        };
        if let Some(loaded) = cell.get() {
            return Ok(loaded.clone());
        }
        let (cert_der, key_path, _) = self.ca(ca)?;
        let key = crate::keys::load(&key_path, self.password.as_deref())?;
        let (_, cert) = X509Certificate::from_der(&cert_der)
            .map_err(|e| PkiError::bad_file(&key_path, e.to_string()))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(PkiError::KeyMismatch { path: key_path });
        }
        let loaded = Arc::new(Issuer::from_ca_cert_der(&cert_der, key)?);
        Ok(cell.get_or_init(|| loaded).clone())
    }

    #[allow(clippy::too_many_arguments)]
    fn sign(
        &self,
        name: &str,
        subject: &Subject,
        sans: &[San],
        profile: Profile,
        validity: Validity,
        public_key: &impl rcgen::PublicKeyData,
        rsa_key: bool,
        key_pem: Option<String>,
    ) -> Result<Issued, PkiError> {
        let now = OffsetDateTime::now_utc();
        let (not_before, not_after) = validity.window(now)?;
        issue::check_within_issuer(not_after, self.issuing_not_after)?;
        let mut params =
            issue::leaf_params(subject, sans, profile, rsa_key, not_before, not_after)?;
        let signed_by = self.crl_issuers()[0];
        params.crl_distribution_points = distribution_points(&self.crl_url, signed_by);
        let issuer = self.signer()?;
        let cert = params.signed_by(public_key, issuer.as_ref())?;
        let der = cert.der().clone();
        let (_, parsed) = X509Certificate::from_der(&der)
            .map_err(|e| PkiError::bad_file("<new certificate>", e.to_string()))?;
        let mut chain = vec![der.clone()];
        chain.extend(self.intermediates.iter().cloned());
        if self.constrained {
            self.check_name_constraints(&chain, profile)?;
        }
        let record = Record {
            serial: Serial::from_bytes(parsed.raw_serial()),
            name: name.to_string(),
            subject: dn::rfc4514(parsed.subject()),
            sans: sans.iter().map(San::to_string).collect(),
            profile: profile.as_str().to_string(),
            issuer: self.issuing_subject.clone(),
            not_before,
            not_after,
            issued_at: now,
            status: Status::Valid,
            revoked_at: None,
            revocation_reason: None,
            superseded_by: None,
            der: der.to_vec(),
        };
        Ok(Issued {
            record,
            cert_der: der,
            chain_pem: crate::pem::certs_to_pem(chain.iter()),
            key_pem,
            sans: sans.to_vec(),
            profile,
            supersedes: vec![],
        })
    }

    /// Refuses a new certificate that the CA's name constraints exclude: every verifier
    /// would refuse it, so it is not handed out. Other verification results are not judged
    /// here.
    fn check_name_constraints(
        &self,
        chain: &[CertificateDer<'static>],
        profile: Profile,
    ) -> Result<(), PkiError> {
        let store = TrustStore::from_der(vec![self.root_der.clone()], vec![])?;
        let purpose = match profile {
            Profile::Client => Purpose::ClientAuth,
            Profile::Server | Profile::Dual => Purpose::ServerAuth,
        };
        let policy = VerifyPolicy { purpose, ..VerifyPolicy::client() };
        match store.verify(chain, &policy, rustls_pki_types::UnixTime::now()) {
            Err(e @ VerifyError::NameConstraints { .. }) => {
                let VerifyError::NameConstraints { names, .. } = &e else { return Ok(()) };
                Err(PkiError::OutsideNameConstraints {
                    names: names.clone(),
                    reason: e.to_string(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Records `issued`, marks every earlier valid certificate of its name (and `supersedes`,
    /// the one renewed) as superseded by it, and calls `deliver`, all in one transaction.
    /// A name thus has one current certificate, which `cert show NAME` and `cert revoke NAME`
    /// find; the serials superseded are noted in `issued.supersedes`.
    ///
    /// The renewed certificate's status is checked again inside the transaction: if it was
    /// revoked or renewed since it was looked up, nothing is recorded
    /// ([`PkiError::RenewRevoked`], [`PkiError::RenewSuperseded`]), so a lineage never forks.
    fn record(
        &mut self,
        issued: &mut Issued,
        supersedes: Option<&Serial>,
        deliver: impl FnOnce(&Issued) -> Result<(), PkiError>,
    ) -> Result<(), PkiError> {
        self.record_redeeming(issued, supersedes, None, deliver)
    }

    /// [`Authority::record`], first taking `token`'s `jti` in the same transaction.
    fn record_redeeming(
        &mut self,
        issued: &mut Issued,
        supersedes: Option<&Serial>,
        token: Option<&Redeemed>,
        deliver: impl FnOnce(&Issued) -> Result<(), PkiError>,
    ) -> Result<(), PkiError> {
        self.transaction(|tx, err| {
            if let Some(t) = token {
                let now = OffsetDateTime::now_utc();
                if !tx.use_token(&t.jti, &t.provisioner, t.expires_at, now).map_err(err)? {
                    return Err(PkiError::TokenUsed { jti: t.jti.clone() });
                }
            }
            let new = issued.record.serial.clone();
            if let Some(old) = supersedes {
                let name = &issued.record.name;
                let outcome = tx.supersede(old, &new).map_err(|e| match e {
                    StoreError::NotFound { .. } => {
                        PkiError::UnknownCertificate { query: old.to_string() }
                    }
                    e => err(e),
                })?;
                match outcome {
                    Superseded::Newly => {}
                    Superseded::Revoked => return Err(renew_revoked(old, name)),
                    Superseded::Already { by } => {
                        return Err(renew_superseded(old, name, by.as_ref()));
                    }
                }
            }
            let earlier = tx.supersede_name(&issued.record.name, &new).map_err(err)?;
            tx.insert(&issued.record).map_err(err)?;
            issued.supersedes = supersedes.cloned().into_iter().chain(earlier).collect();
            deliver(issued)
        })
    }

    /// Runs `work` in one inventory transaction, committed only when it succeeds; `work` maps
    /// the inventory's errors with the function it is given.
    fn transaction<T>(
        &mut self,
        work: impl FnOnce(&mut dyn InventoryTx, &dyn Fn(StoreError) -> PkiError) -> Result<T, PkiError>,
    ) -> Result<T, PkiError> {
        let err = self.store_err();
        let mut tx = self.store.begin().map_err(&err)?;
        let out = work(tx.as_mut(), &err)?;
        tx.commit().map_err(&err)?;
        Ok(out)
    }

    /// Names the inventory file in an inventory error.
    fn store_err(&self) -> impl Fn(StoreError) -> PkiError + use<> {
        let path = self.paths.inventory.clone();
        move |source| PkiError::Store { path: path.clone(), source }
    }
}

fn renew_revoked(serial: &Serial, name: &str) -> PkiError {
    PkiError::RenewRevoked { serial: serial.to_string(), name: name.to_string() }
}

fn renew_superseded(serial: &Serial, name: &str, by: Option<&Serial>) -> PkiError {
    PkiError::RenewSuperseded {
        serial: serial.to_string(),
        name: name.to_string(),
        by: by.map(Serial::to_string).unwrap_or_default(),
    }
}

/// Writes `NAME.crt` and, when the CA made the key, `NAME.key` (0600) into `dir`, all or
/// nothing. Refuses to replace existing files unless `force`.
pub fn write_leaf_files(
    dir: &Path,
    name: &str,
    issued: &Issued,
    force: bool,
) -> Result<(PathBuf, Option<PathBuf>), PkiError> {
    let (crt, key) = leaf_file_paths(dir, name);
    let overwrite = Overwrite::from_force(force);
    write_leaf_files_at(&crt, &key, issued, overwrite, overwrite)
}

/// Writes the chain to `crt` and, when the CA made the key, the key (0600) to `key`, all or
/// nothing, each replacing an existing file only as its `Overwrite` allows.
pub fn write_leaf_files_at(
    crt: &Path,
    key: &Path,
    issued: &Issued,
    crt_overwrite: Overwrite,
    key_overwrite: Overwrite,
) -> Result<(PathBuf, Option<PathBuf>), PkiError> {
    let mut files = FileSet::new();
    let key_written = match &issued.key_pem {
        Some(pem) => {
            files.write(key, pem.as_bytes(), Mode::Secret, key_overwrite)?;
            Some(key.to_path_buf())
        }
        None => None,
    };
    files.write(crt, issued.chain_pem.as_bytes(), Mode::Public, crt_overwrite)?;
    files.commit();
    Ok((crt.to_path_buf(), key_written))
}

/// How renewal may treat the existing files at `crt` and `key` (the key only when a new one
/// is written): a file that holds the certificate being renewed, or its private key, is
/// replaced, since renewing is what it is for; a missing file is created; any other file is
/// refused with [`PkiError::NotRenewedFile`] unless `force`.
pub fn renewal_overwrite(
    old: &Record,
    crt: &Path,
    key: Option<&Path>,
    force: bool,
) -> Result<(Overwrite, Overwrite), PkiError> {
    if force {
        return Ok((Overwrite::Force, Overwrite::Force));
    }
    let foreign = |path: &Path, what| PkiError::NotRenewedFile {
        path: path.to_path_buf(),
        what,
        serial: old.serial.to_string(),
    };
    let crt_overwrite = if crt.exists() {
        let first = crate::pem::read_certs(crt).ok().and_then(|c| c.into_iter().next());
        if first.is_none_or(|der| der.as_ref() != old.der.as_slice()) {
            return Err(foreign(crt, "the certificate"));
        }
        Overwrite::Force
    } else {
        Overwrite::Refuse
    };
    let key_overwrite = match key {
        Some(key) if key.exists() => {
            let (_, cert) = X509Certificate::from_der(&old.der)
                .map_err(|e| PkiError::bad_file("<inventory certificate>", e.to_string()))?;
            let public = cert.public_key().subject_public_key.data.to_vec();
            let matches =
                crate::keys::load(key, None).is_ok_and(|k| k.public_key_raw() == public.as_slice());
            if !matches {
                return Err(foreign(key, "the private key of the certificate"));
            }
            Overwrite::Force
        }
        _ => Overwrite::Refuse,
    };
    Ok((crt_overwrite, key_overwrite))
}

/// `DIR/NAME.crt` and `DIR/NAME.key`.
pub fn leaf_file_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (crate::fs::in_dir(dir, &format!("{name}.crt")), crate::fs::in_dir(dir, &format!("{name}.key")))
}

/// Checks that `name` can be a file name and a CN.
pub fn check_file_name(name: &str) -> Result<(), PkiError> {
    check_cn(name)?;
    if name.contains('/') || name.contains('\\') || name.starts_with('.') {
        return Err(PkiError::InvalidName {
            value: name.to_string(),
            reason: "a certificate name is used as a file name: no '/', '\\' or leading '.'",
        });
    }
    Ok(())
}

fn check_cn(name: &str) -> Result<(), PkiError> {
    if name.trim().is_empty() {
        return Err(PkiError::InvalidName { value: name.into(), reason: "the name is empty" });
    }
    if name.len() > 64 {
        return Err(PkiError::InvalidName {
            value: name.into(),
            reason: "a subject CN is at most 64 characters (RFC 5280)",
        });
    }
    if name.chars().any(char::is_control) {
        return Err(PkiError::InvalidName {
            value: name.into(),
            reason: "control characters are not allowed",
        });
    }
    Ok(())
}

fn parse_sans(values: &[String]) -> Result<Vec<San>, PkiError> {
    let mut sans: Vec<San> = Vec::with_capacity(values.len());
    for v in values {
        let san = San::parse(v)?;
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    Ok(sans)
}

fn require_server_san(profile: Profile, sans: &[San]) -> Result<(), PkiError> {
    if profile != Profile::Client && !sans.iter().any(|s| matches!(s, San::Dns(_) | San::Ip(_))) {
        return Err(PkiError::InvalidSan {
            value: sans.iter().map(San::to_string).collect::<Vec<_>>().join(", "),
            reason: format!(
                "a {profile} certificate needs at least one DNS or IP --san (clients check the \
                 name they connect to against it); for a client certificate use --profile client"
            ),
        });
    }
    Ok(())
}

fn stored_sans(labelled: &[String]) -> Result<Vec<San>, PkiError> {
    labelled.iter().map(|l| San::parse(l.split_once(':').map(|(_, v)| v).unwrap_or(l))).collect()
}

fn key_type_of(cert: &X509Certificate<'_>) -> KeyType {
    use x509_parser::public_key::PublicKey;
    match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => match rsa.key_size() {
            0..=2048 => KeyType::Rsa2048,
            2049..=3072 => KeyType::Rsa3072,
            _ => KeyType::Rsa4096,
        },
        Ok(PublicKey::EC(point)) if point.key_size() > 256 => KeyType::EcP384,
        _ if cert.public_key().algorithm.algorithm.to_id_string() == "1.3.101.112" => {
            KeyType::Ed25519
        }
        _ => KeyType::EcP256,
    }
}

/// The CRL distribution point of a certificate `issuer` signs, when the CA has a CRL URL.
fn distribution_points(
    base: &Option<String>,
    issuer: CrlIssuer,
) -> Vec<rcgen::CrlDistributionPoint> {
    base.iter().map(|b| rcgen::CrlDistributionPoint { uris: vec![issuer.url(b)] }).collect()
}

fn remove_stale(path: &Path) -> Result<(), PkiError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(PkiError::Write { path: path.to_path_buf(), source: e })
        }
        _ => Ok(()),
    }
}

/// Refuses constraints that contradict the CA's shape before anything is generated.
fn check_constraints(opts: &InitOptions) -> Result<(), PkiError> {
    if opts.intermediate && opts.root_path_len == Some(0) {
        return Err(PkiError::InvalidCaOption {
            reason: "--pathlen 0 forbids CAs below the root, so it could not sign the \
                     intermediate; use --pathlen 1 or more, or --no-intermediate",
        });
    }
    if !opts.intermediate && !opts.permits.is_empty() {
        return Err(PkiError::InvalidCaOption {
            reason: "name constraints (--permit-dns, --permit-ip) go on the intermediate; \
                     drop --no-intermediate",
        });
    }
    Ok(())
}

fn intermediate_name(root: &str) -> String {
    match root.strip_suffix("Root CA") {
        Some(prefix) => format!("{prefix}Intermediate CA"),
        None => format!("{root} Intermediate CA"),
    }
}

fn has_name_constraints(der: &[u8]) -> bool {
    X509Certificate::from_der(der)
        .ok()
        .is_some_and(|(_, cert)| cert.name_constraints().ok().flatten().is_some())
}

fn first_cert(path: &Path) -> Result<CertificateDer<'static>, PkiError> {
    crate::pem::read_certs(path)?
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::bad_file(path, "no certificate"))
}

fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .map_err(|source| PkiError::Write { path: dir.to_path_buf(), source })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

trait NonEmpty {
    fn into_non_empty(self) -> Option<String>;
}

impl NonEmpty for String {
    fn into_non_empty(self) -> Option<String> {
        (!self.trim().is_empty()).then_some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{TrustStore, VerifyPolicy};

    fn ca(dir: &Path) -> Authority {
        Authority::init(dir, &InitOptions::default()).unwrap()
    }

    /// An issued certificate verifies against root.crt and is recorded.
    #[test]
    fn issued_certificate_verifies_and_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = ca(&dir.path().join("ca"));
        let req = IssueRequest::new("joe", vec!["spiffe://example.test/joe".into()]);
        let issued = ca.issue(&req, |_| Ok(())).unwrap();
        assert_eq!(issued.profile, Profile::Client);
        let store = TrustStore::from_der(vec![ca.root_der().clone()], vec![]).unwrap();
        let chain = crate::pem::certs_from_bytes(issued.chain_pem.as_bytes()).unwrap();
        store.verify(&chain, &VerifyPolicy::client(), rustls_pki_types::UnixTime::now()).unwrap();
        assert_eq!(ca.find("joe").unwrap().serial, issued.record.serial);
        assert!(issued.record.serial.as_str().len() >= 32, "serial has at least 128 bits");
    }

    /// When handing out fails, the inventory keeps no row for the certificate.
    #[test]
    fn failed_delivery_leaves_no_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = ca(&dir.path().join("ca"));
        let req = IssueRequest::new("web", vec!["web.example.test".into()]);
        let err =
            ca.issue(&req, |_| Err(PkiError::Crypto { what: "simulated failure" })).unwrap_err();
        assert!(matches!(err, PkiError::Crypto { .. }));
        assert!(matches!(ca.find("web"), Err(PkiError::UnknownCertificate { .. })));
    }

    /// init refuses to replace an existing CA without force.
    #[test]
    fn init_refuses_existing_ca() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca");
        ca(&path);
        let before = std::fs::read(path.join("root.key")).unwrap();
        let err = Authority::init(&path, &InitOptions::default()).err().unwrap();
        assert!(matches!(err, PkiError::CaExists { .. }), "{err}");
        assert_eq!(std::fs::read(path.join("root.key")).unwrap(), before);
    }

    /// Revocation shows up in the next CRL, whose number increases.
    #[test]
    fn revoked_certificate_is_in_next_crl() {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = ca(&dir.path().join("ca"));
        let issued = ca
            .issue(&IssueRequest::new("joe", vec!["joe@example.test".into()]), |_| Ok(()))
            .unwrap();
        let (_, n1, count1) =
            ca.crl(CrlIssuer::Intermediate, Duration::days(7), |_| Ok(())).unwrap();
        ca.revoke("joe", Reason::KeyCompromise).unwrap();
        let (der, n2, count2) =
            ca.crl(CrlIssuer::Intermediate, Duration::days(7), |_| Ok(())).unwrap();
        assert_eq!((n1, count1, n2, count2), (1, 0, 2, 1));
        let store = TrustStore::from_der(vec![ca.root_der().clone()], vec![der.into()]).unwrap();
        let chain = crate::pem::certs_from_bytes(issued.chain_pem.as_bytes()).unwrap();
        let err = store
            .verify(&chain, &VerifyPolicy::client(), rustls_pki_types::UnixTime::now())
            .unwrap_err();
        assert_eq!(err.code(), "revoked");
        assert!(matches!(
            ca.revoke("joe", Reason::Superseded),
            Err(PkiError::AlreadyRevoked { .. })
        ));
    }

    /// A revoked intermediate goes on the root's CRL (not the intermediate's), and a leaf it
    /// issued is then refused with both CRLs loaded; the root's CRL is reusable until then.
    #[test]
    fn revoked_intermediate_is_on_the_roots_crl() {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = ca(&dir.path().join("ca"));
        let issued = ca
            .issue(&IssueRequest::new("joe", vec!["joe@example.test".into()]), |_| Ok(()))
            .unwrap();
        let week = Duration::days(7);
        ca.crl(CrlIssuer::Root, Duration::days(365), |_| Ok(())).unwrap();
        assert!(
            ca.current_crl(CrlIssuer::Root, OffsetDateTime::now_utc() + week).unwrap().is_some()
        );
        let record = ca.revoke("intermediate", Reason::CaCompromise).unwrap();
        assert_eq!((record.name.as_str(), record.profile.as_str()), ("intermediate", "ca"));
        assert!(ca.current_crl(CrlIssuer::Root, OffsetDateTime::now_utc()).unwrap().is_none());
        let (int_crl, _, int_count) = ca.crl(CrlIssuer::Intermediate, week, |_| Ok(())).unwrap();
        let (root_crl, _, root_count) = ca.crl(CrlIssuer::Root, week, |_| Ok(())).unwrap();
        assert_eq!((int_count, root_count), (0, 1));
        let crls = vec![int_crl.into(), root_crl.into()];
        let store = TrustStore::from_der(vec![ca.root_der().clone()], crls).unwrap();
        let chain = crate::pem::certs_from_bytes(issued.chain_pem.as_bytes()).unwrap();
        let err = store
            .verify(&chain, &VerifyPolicy::client(), rustls_pki_types::UnixTime::now())
            .unwrap_err();
        assert_eq!(err.code(), "revoked");
    }

    /// Renewal keeps subject, SANs and profile, and supersedes the old certificate.
    #[test]
    fn renew_keeps_identity_and_supersedes() {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = ca(&dir.path().join("ca"));
        let mut req = IssueRequest::new("api", vec!["api.example.test".into(), "10.1.2.3".into()]);
        req.validity = Validity::Hours(2);
        let first = ca.issue(&req, |_| Ok(())).unwrap();
        let (second, old) = ca.renew("api", true, |_| Ok(())).unwrap();
        assert_eq!(old.serial, first.record.serial);
        assert_ne!(second.record.serial, first.record.serial);
        assert_eq!(second.record.sans, first.record.sans);
        assert!(second.key_pem.is_none(), "reuse_key keeps the holder's key");
        assert_eq!(
            second.record.not_after - second.record.not_before,
            Duration::hours(2) + crate::validity::BACKDATE
        );
        let old = ca.find(first.record.serial.as_str()).unwrap();
        assert_eq!(old.status, crate::store::Status::Superseded);
        assert_eq!(old.superseded_by.as_ref(), Some(&second.record.serial));
    }

    /// A rekey certifies the CSR's key with the old certificate's subject, SANs, profile and
    /// lifetime (the CSR's own names are ignored) and supersedes the old one; a CSR for the
    /// old key is refused and records nothing.
    #[test]
    fn rekey_certifies_the_csrs_key_and_keeps_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = ca(&dir.path().join("ca"));
        let mut req = IssueRequest::new("api", vec!["api.example.test".into()]);
        req.validity = Validity::Minutes(30);
        let first = ca.issue(&req, |_| Ok(())).unwrap();
        let csr_of = |key: &KeyPair| {
            let mut params =
                rcgen::CertificateParams::new(vec!["evil.example.test".into()]).unwrap();
            params.distinguished_name.push(rcgen::DnType::CommonName, "evil");
            let pem = params.serialize_request(key).unwrap().pem().unwrap();
            crate::csr::parse(pem.as_bytes(), "the CSR").unwrap()
        };
        let old_key = KeyPair::from_pem(first.key_pem.as_deref().unwrap()).unwrap();
        let same = ca.rekey_serial(&first.record.serial, &csr_of(&old_key)).unwrap_err();
        assert!(matches!(same, PkiError::RekeySameKey { .. }), "{same}");
        assert_eq!(
            ca.list(&ListFilter::all(OffsetDateTime::now_utc())).unwrap().len(),
            1,
            "nothing recorded"
        );

        let new_key = KeyPair::generate().unwrap();
        let csr = csr_of(&new_key);
        let (second, old) = ca.rekey_serial(&first.record.serial, &csr).unwrap();
        assert_eq!(old.serial, first.record.serial);
        let (_, cert) = X509Certificate::from_der(&second.cert_der).unwrap();
        assert_eq!(cert.public_key().raw, csr.spki_der.as_slice());
        assert_eq!(second.record.subject, first.record.subject);
        assert_eq!(second.record.sans, first.record.sans);
        assert_eq!(second.record.profile, first.record.profile);
        assert!(second.key_pem.is_none(), "the holder keeps its new key");
        assert_eq!(
            second.record.not_after - second.record.not_before,
            first.record.not_after - first.record.not_before
        );
        let old = ca.find(first.record.serial.as_str()).unwrap();
        assert_eq!(old.superseded_by.as_ref(), Some(&second.record.serial));
        let again = ca.rekey_serial(&first.record.serial, &csr).unwrap_err();
        assert!(matches!(again, PkiError::RenewSuperseded { .. }), "{again}");
    }

    /// An encrypted CA signs only with the right password.
    #[test]
    fn encrypted_ca_needs_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca");
        let opts = InitOptions { password: Some(b"pw".to_vec()), ..InitOptions::default() };
        Authority::init(&path, &opts).unwrap();
        let req = IssueRequest::new("x", vec!["x.example.test".into()]);
        let mut wrong = Authority::open(&path, Some(b"nope".to_vec())).unwrap();
        assert!(matches!(wrong.issue(&req, |_| Ok(())), Err(PkiError::WrongPassword { .. })));
        let mut none = Authority::open(&path, None).unwrap();
        assert!(matches!(none.issue(&req, |_| Ok(())), Err(PkiError::PasswordNeeded { .. })));
        let mut right = Authority::open(&path, Some(b"pw".to_vec())).unwrap();
        right.issue(&req, |_| Ok(())).unwrap();
    }

    fn constrained_ca(dir: &Path) -> Authority {
        let opts = InitOptions {
            permits: vec![Permit::dns("example.com").unwrap(), Permit::ip("10.0.0.0/8").unwrap()],
            ..InitOptions::default()
        };
        Authority::init(dir, &opts).unwrap()
    }

    /// A leaf signed by the intermediate's key outside the issuance checks, as another tool
    /// would make it.
    fn signed_by_intermediate(
        ca: &Authority,
        subject: &Subject,
        sans: &[&str],
    ) -> Vec<CertificateDer<'static>> {
        let sans: Vec<San> = sans.iter().map(|s| San::parse(s).unwrap()).collect();
        let now = OffsetDateTime::now_utc();
        let profile =
            if sans.is_empty() { Profile::Client } else { Profile::default_for(&sans).unwrap() };
        let params = issue::leaf_params(
            subject,
            &sans,
            profile,
            false,
            now - Duration::minutes(1),
            now + Duration::days(1),
        )
        .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, ca.signer().unwrap().as_ref()).unwrap();
        vec![cert.der().clone(), ca.intermediates()[0].clone()]
    }

    /// Names inside the intermediate's constraints are issued and verify; names outside are
    /// not issued, and a certificate made outside certgate is refused by the verifier, also
    /// for a host-like CN without DNS SANs (as OpenSSL does).
    #[test]
    fn name_constraints_are_enforced_at_issuance_and_verification() {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = constrained_ca(&dir.path().join("ca"));
        let store = TrustStore::from_der(vec![ca.root_der().clone()], vec![]).unwrap();
        let now = rustls_pki_types::UnixTime::now();
        let server = VerifyPolicy { purpose: Purpose::ServerAuth, ..VerifyPolicy::client() };

        let inside = IssueRequest::new("api", vec!["api.example.com".into(), "10.1.2.3".into()]);
        let issued = ca.issue(&inside, |_| Ok(())).unwrap();
        let chain = crate::pem::certs_from_bytes(issued.chain_pem.as_bytes()).unwrap();
        store.verify(&chain, &server, now).unwrap();
        let joe = IssueRequest::new("joe", vec!["spiffe://elsewhere.test/joe".into()]);
        ca.issue(&joe, |_| Ok(())).unwrap();

        for sans in
            [vec!["evil.test".to_string()], vec!["api.example.com".into(), "192.0.2.1".into()]]
        {
            let err = ca.issue(&IssueRequest::new("evil", sans), |_| Ok(())).unwrap_err();
            assert!(matches!(err, PkiError::OutsideNameConstraints { .. }), "{err}");
        }
        assert!(ca.find("evil").is_err(), "a refused certificate is not recorded");

        let outside = signed_by_intermediate(&ca, &Subject::cn("evil"), &["evil.test"]);
        let err = store.verify(&outside, &server, now).unwrap_err();
        assert_eq!(err.code(), "name_constraints");
        let text = err.to_string();
        assert!(
            text.contains("DNS:evil.test")
                && text.contains("permitted: DNS:example.com, IP:10.0.0.0/8")
                && text.contains("CN=certgate Intermediate CA"),
            "{text}"
        );

        let host_cn = signed_by_intermediate(&ca, &Subject::cn("x.evil.test"), &[]);
        let err = store.verify(&host_cn, &VerifyPolicy::client(), now).unwrap_err();
        assert!(err.to_string().contains("CN=x.evil.test (a host name, no DNS SAN)"), "{err}");
        let inside_cn = signed_by_intermediate(&ca, &Subject::cn("x.example.com"), &[]);
        store.verify(&inside_cn, &VerifyPolicy::client(), now).unwrap();
        let plain_cn = signed_by_intermediate(&ca, &Subject::cn("joe"), &[]);
        store.verify(&plain_cn, &VerifyPolicy::client(), now).unwrap();
    }

    /// The root's pathlen is what was asked for; pathlen 0 needs --no-intermediate, and name
    /// constraints need an intermediate.
    #[test]
    fn root_pathlen_and_constraint_options_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let single =
            InitOptions { intermediate: false, root_path_len: Some(0), ..InitOptions::default() };
        let mut ca = Authority::init(&dir.path().join("single"), &single).unwrap();
        let (_, root) = X509Certificate::from_der(ca.root_der()).unwrap();
        let bc = root.basic_constraints().unwrap().unwrap().value;
        assert_eq!((bc.ca, bc.path_len_constraint), (true, Some(0)));
        let issued = ca
            .issue(&IssueRequest::new("joe", vec!["joe@example.test".into()]), |_| Ok(()))
            .unwrap();
        let store = TrustStore::from_der(vec![ca.root_der().clone()], vec![]).unwrap();
        let chain = crate::pem::certs_from_bytes(issued.chain_pem.as_bytes()).unwrap();
        store.verify(&chain, &VerifyPolicy::client(), rustls_pki_types::UnixTime::now()).unwrap();

        for (opts, fragment) in [
            (InitOptions { root_path_len: Some(0), ..InitOptions::default() }, "--pathlen 0"),
            (
                InitOptions {
                    intermediate: false,
                    permits: vec![Permit::dns("example.com").unwrap()],
                    ..InitOptions::default()
                },
                "go on the intermediate",
            ),
        ] {
            let path = dir.path().join("refused");
            let err = Authority::init(&path, &opts).err().unwrap();
            assert!(err.to_string().contains(fragment), "{err}");
            assert!(!path.exists(), "a refused init creates nothing");
        }
    }

    /// Issuing a name again supersedes its earlier certificate, so the name has one current
    /// certificate; a superseded or revoked one is refused for renewal with its own reason.
    #[test]
    fn reissue_supersedes_and_renewal_refuses_superseded_or_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = ca(&dir.path().join("ca"));
        let req = IssueRequest::new("api", vec!["api.example.test".into()]);
        let first = ca.issue(&req, |_| Ok(())).unwrap();
        let second = ca.issue(&req, |_| Ok(())).unwrap();
        assert_eq!(second.supersedes, vec![first.record.serial.clone()]);
        let old = ca.find(first.record.serial.as_str()).unwrap();
        assert_eq!(old.status, crate::store::Status::Superseded);
        assert_eq!(old.superseded_by.as_ref(), Some(&second.record.serial));
        let err = ca.renew(first.record.serial.as_str(), false, |_| Ok(())).err().unwrap();
        assert!(matches!(err, PkiError::RenewSuperseded { .. }), "{err}");
        ca.revoke("api", Reason::KeyCompromise).unwrap();
        let err = ca.renew("api", false, |_| Ok(())).err().unwrap();
        assert!(matches!(err, PkiError::RenewRevoked { .. }), "{err}");
        assert!(err.to_string().contains("is revoked and cannot be renewed"), "{err}");
    }

    /// The issuing CA's key is loaded and checked once per `Authority`, not for every
    /// signature: replacing the key file afterwards does not change what this `Authority`
    /// signs with, while a newly opened one sees the new file (and refuses a key that does not
    /// match the certificate). The root's key, for its CRL, is kept the same way.
    #[test]
    fn issuer_is_loaded_once_per_authority() {
        fn send<T: Send>() {}
        send::<Authority>();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca");
        let mut ca = ca(&path);
        let req = IssueRequest::new("api", vec!["api.example.test".into()]);
        ca.issue(&req, |_| Ok(())).unwrap();
        ca.crl(CrlIssuer::Root, Duration::days(1), |_| Ok(())).unwrap();
        let other_key = crate::keys::to_pem(&KeyPair::generate().unwrap());
        for file in [&ca.paths().intermediate_key, &ca.paths().root_key] {
            std::fs::write(file, &other_key).unwrap();
        }
        let again =
            ca.issue(&IssueRequest::new("web", vec!["web.example.test".into()]), |_| Ok(()));
        let again = again.unwrap();
        let chain = [again.cert_der.clone(), ca.intermediates()[0].clone()];
        let store = TrustStore::from_der(vec![ca.root_der().clone()], vec![]).unwrap();
        let name = rustls_pki_types::ServerName::try_from("web.example.test").unwrap();
        let policy = VerifyPolicy::server(name);
        store.verify(&chain, &policy, rustls_pki_types::UnixTime::now()).unwrap();
        ca.crl(CrlIssuer::Root, Duration::days(1), |_| Ok(())).unwrap();
        let mut fresh = Authority::open(&path, None).unwrap();
        let err = fresh.issue(&req, |_| Ok(())).unwrap_err();
        assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err}");
        let err = fresh.crl(CrlIssuer::Root, Duration::days(1), |_| Ok(())).unwrap_err();
        assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err}");
    }

    /// Renewal checks the old certificate's status again inside the recording transaction:
    /// revoked or renewed by another process since it was looked up, it is refused and the
    /// new certificate is not recorded, so a lineage never forks.
    #[test]
    fn renewal_rechecks_status_inside_the_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = ca(&dir.path().join("ca"));
        let req = IssueRequest::new("api", vec!["api.example.test".into()]);
        for (name, race) in [("api", "revoke"), ("web", "renew")] {
            let req = IssueRequest { name: name.into(), ..req.clone() };
            let first = ca.issue(&req, |_| Ok(())).unwrap();
            let old = ca.renewable(name).unwrap();
            let mut other = Authority::open(&dir.path().join("ca"), None).unwrap();
            match race {
                "revoke" => drop(other.revoke(name, Reason::Superseded).unwrap()),
                _ => drop(other.renew(name, true, |_| Ok(())).unwrap()),
            }
            let mut next = first.clone();
            next.record.serial = Serial::from_bytes(&[0x42, name.len() as u8]);
            let err = ca.record(&mut next, Some(&old.serial), |_| Ok(())).unwrap_err();
            match race {
                "revoke" => assert!(matches!(err, PkiError::RenewRevoked { .. }), "{err}"),
                _ => assert!(matches!(err, PkiError::RenewSuperseded { .. }), "{err}"),
            }
            let lookup = ca.find(next.record.serial.as_str());
            assert!(matches!(lookup, Err(PkiError::UnknownCertificate { .. })), "{lookup:?}");
        }
    }
}
