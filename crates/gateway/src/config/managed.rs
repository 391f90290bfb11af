//! What the gateway fetches for itself, as the configuration declares it:
//!
//! - managed certificates: `{ managed = "NAME", ca_url, root | fingerprint, token_file,
//!   lifetime, key_type, expires_in }` in place of a listener's `cert`/`key` or an upstream's
//!   `client_cert`; the files live in `state_dir` as NAME.crt and NAME.key;
//! - CRLs given by URL in `client_auth.crls`, cached in `state_dir/crls/`.
//!
//! [`crate::managed`] requests, renews and fetches them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use certgate_pki::keys::KeyType;

use super::raw::{RawCertificate, RawClientCert, RawConfig, RawManaged};
use super::{Builder, ConfigErrors};
use crate::renewal::{CertFiles, ExpiresIn, RootPin};

/// A managed certificate as configured.
#[derive(Debug, Clone)]
pub struct ManagedSpec {
    /// The name as written: the files' name, and the metric label.
    pub name: String,
    pub ca_url: String,
    pub pin: RootPin,
    /// The one-time token's file, for the first certificate (or a new one after the CA
    /// refused a renewal).
    pub token_file: Option<PathBuf>,
    /// `None`: the CA's default.
    pub lifetime: Option<time::Duration>,
    pub key_type: KeyType,
    pub expires_in: ExpiresIn,
    pub files: CertFiles,
}

impl PartialEq for ManagedSpec {
    fn eq(&self, other: &Self) -> bool {
        let pin = |p: &RootPin| match p {
            RootPin::Root(c) => c.as_ref().to_vec(),
            RootPin::Fingerprint(f) => f.as_bytes().to_vec(),
        };
        self.name == other.name
            && self.ca_url == other.ca_url
            && pin(&self.pin) == pin(&other.pin)
            && self.token_file == other.token_file
            && self.lifetime == other.lifetime
            && self.key_type == other.key_type
            && self.expires_in == other.expires_in
            && self.files == other.files
    }
}

/// A CRL the gateway fetches by URL and keeps in a cache file.
#[derive(Debug, Clone, PartialEq)]
pub struct CrlSource {
    pub url: String,
    /// Where the last good copy is kept (what the configuration loads).
    pub cache: PathBuf,
    /// An https:// server must present a certificate chaining to one of these: the
    /// listener's client-certificate trust anchors.
    pub roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// How often it is fetched again (and always before its nextUpdate).
    pub refresh: std::time::Duration,
}

/// Shortest and default refresh of CRLs given by URL.
const MIN_CRL_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);
const DEFAULT_CRL_REFRESH: std::time::Duration = std::time::Duration::from_secs(300);

/// Each managed name's declarations merged, with the field of its first one.
#[derive(Default)]
pub(super) struct Declared(BTreeMap<String, (String, RawManaged)>);

impl Builder {
    /// The cache file of the CRL at `url` (declared at `field`, fetched over https:// only from
    /// a server `roots` trust), recording it; `None` (with an error) when it cannot be used.
    pub(super) fn crl_source(
        &mut self,
        field: &str,
        url: &str,
        roots: &[rustls_pki_types::CertificateDer<'static>],
        refresh: Option<&String>,
    ) -> Option<PathBuf> {
        let parsed = url.parse::<http::Uri>().ok().filter(|u| u.host().is_some());
        if parsed.is_none() || url.contains(char::is_whitespace) {
            self.error(field, format!("{url}: not a URL"));
            return None;
        }
        let Some(dir) = self.state_dir.clone() else {
            self.error(
                field,
                format!(
                    "{url}: CRLs fetched by URL are cached in state_dir (a directory only \
                     certgate writes, e.g. /var/lib/certgate)"
                ),
            );
            return None;
        };
        let refresh = match refresh {
            None => DEFAULT_CRL_REFRESH,
            Some(v) => match certgate_pki::validity::parse_duration(v) {
                Ok(d)
                    if d.is_positive()
                        && d.unsigned_abs() >= MIN_CRL_REFRESH
                        && d <= time::Duration::DAY =>
                {
                    d.unsigned_abs()
                }
                _ => {
                    self.error(field, format!("crl_refresh {v}: a duration from 1s to 1d"));
                    return None;
                }
            },
        };
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, url.as_bytes());
        let short: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
        let last = url.rsplit('/').next().unwrap_or_default();
        let last: String = last
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            .take(64)
            .collect();
        let cache = dir.join("crls").join(format!("{short}-{last}"));
        let source = CrlSource {
            url: url.to_string(),
            cache: cache.clone(),
            roots: roots.to_vec(),
            refresh,
        };
        if !self.crl_sources.contains(&source) {
            self.crl_sources.push(source);
        }
        Some(cache)
    }

    /// The certificate and key files of the managed certificate `m` (declared at `field`),
    /// recording its declaration; `None` (with an error) when it cannot be used.
    pub(super) fn managed_files(&mut self, field: &str, m: &RawManaged) -> Option<CertFiles> {
        let name = m.managed.as_str();
        if certgate_pki::ca::check_file_name(name).is_err() || name.starts_with('.') {
            self.error(
                &format!("{field}.managed"),
                format!("{name:?}: a managed certificate's name is a plain file name"),
            );
            return None;
        }
        let merged = match self.declared.0.remove(name) {
            None => (field.to_string(), m.clone()),
            Some((first, mut d)) => {
                let mut merge =
                    |what: &str, mine: &Option<String>, theirs: &mut Option<String>| match (
                        mine, &theirs,
                    ) {
                        (Some(a), Some(b)) if a != b => self.error(
                            &format!("{field}.{what}"),
                            format!(
                                "managed certificate {name} is declared with {what} = {b:?} at \
                                 {first}; declare it alike, or give its fields in one place"
                            ),
                        ),
                        (Some(a), None) => *theirs = Some(a.clone()),
                        _ => {}
                    };
                merge("ca_url", &m.ca_url, &mut d.ca_url);
                merge("root", &m.root, &mut d.root);
                merge("fingerprint", &m.fingerprint, &mut d.fingerprint);
                merge("token_file", &m.token_file, &mut d.token_file);
                merge("lifetime", &m.lifetime, &mut d.lifetime);
                merge("key_type", &m.key_type, &mut d.key_type);
                merge("expires_in", &m.expires_in, &mut d.expires_in);
                (first, d)
            }
        };
        self.declared.0.insert(name.to_string(), merged);
        let Some(dir) = self.state_dir.clone() else {
            self.error(
                &format!("{field}.managed"),
                "managed certificates need state_dir (a directory only certgate writes, e.g. \
                 /var/lib/certgate)"
                    .into(),
            );
            return None;
        };
        Some(CertFiles::in_dir(&dir, name))
    }

    /// Every declared managed certificate, its fields checked.
    pub(super) fn managed_specs(&mut self) -> Vec<ManagedSpec> {
        let declared = std::mem::take(&mut self.declared.0);
        let mut specs = Vec::new();
        for (name, (field, m)) in declared {
            let Some(dir) = self.state_dir.clone() else { continue };
            let err = |b: &mut Builder, what: &str, reason: String| {
                b.error(&format!("{field}.{what}"), format!("managed certificate {name}: {reason}"))
            };
            let Some(ca_url) = m.ca_url.clone() else {
                err(self, "ca_url", "the online CA's URL (https://...) is needed".into());
                continue;
            };
            if !ca_url.starts_with("https://") {
                err(self, "ca_url", format!("{ca_url}: the online CA is reached over https://"));
                continue;
            }
            let pin = match (&m.root, &m.fingerprint) {
                (Some(_), Some(_)) => {
                    err(self, "root", "give root or fingerprint, not both".into());
                    continue;
                }
                (Some(file), None) => {
                    match self
                        .certs(&format!("{field}.root"), file)
                        .and_then(|c| c.into_iter().next())
                    {
                        Some(root) => RootPin::Root(root),
                        None => continue,
                    }
                }
                (None, Some(fp)) => RootPin::Fingerprint(fp.clone()),
                (None, None) => {
                    err(
                        self,
                        "root",
                        "the CA's root (root = FILE or fingerprint = SHA256) is needed".into(),
                    );
                    continue;
                }
            };
            let lifetime = match &m.lifetime {
                None => None,
                Some(v) => match certgate_pki::validity::parse_duration(v) {
                    Ok(d) if d >= time::Duration::MINUTE => Some(d),
                    _ => {
                        err(
                            self,
                            "lifetime",
                            format!("{v}: a duration of a minute or more (90m, 24h)"),
                        );
                        continue;
                    }
                },
            };
            let key_type = match &m.key_type {
                None => KeyType::default(),
                Some(v) => match KeyType::ALL.iter().find(|k| k.as_str() == v.as_str()) {
                    Some(k) => *k,
                    None => {
                        let names: Vec<_> = KeyType::ALL.iter().map(|k| k.as_str()).collect();
                        err(self, "key_type", format!("{v}: one of {}", names.join(", ")));
                        continue;
                    }
                },
            };
            let expires_in = match &m.expires_in {
                None => ExpiresIn::default(),
                Some(v) => {
                    match ExpiresIn::parse(v, |s| certgate_pki::validity::parse_duration(s).ok()) {
                        Ok(ExpiresIn::Percent(100)) | Err(_) => {
                            err(
                                self,
                                "expires_in",
                                format!(
                                    "{v}: a share of the lifetime below 100% (33%) or a duration (8h)"
                                ),
                            );
                            continue;
                        }
                        Ok(e) => e,
                    }
                }
            };
            let token_file = m.token_file.as_deref().map(|t| self.resolve(t));
            specs.push(ManagedSpec {
                files: CertFiles::in_dir(&dir, &name),
                name,
                ca_url,
                pin,
                token_file,
                lifetime,
                key_type,
                expires_in,
            });
        }
        specs
    }
}

/// What the file at `path` declares for the gateway to fetch itself.
pub struct Fetched {
    pub managed: Vec<ManagedSpec>,
    pub crls: Vec<CrlSource>,
    pub state_dir: Option<PathBuf>,
}

/// The managed certificates and CRL URLs the file at `path` declares, read without loading
/// the rest (so `serve` can fetch them before the configuration that uses them is loaded).
pub fn fetched(path: &std::path::Path) -> Result<Fetched, ConfigErrors> {
    let raw = super::parse(path)?;
    let mut b = Builder::new(path, None);
    b.set_state_dir(&raw);
    walk(&mut b, &raw);
    let managed = b.managed_specs();
    if !b.errors.is_empty() {
        return Err(ConfigErrors(b.errors));
    }
    Ok(Fetched { managed, crls: std::mem::take(&mut b.crl_sources), state_dir: b.state_dir })
}

/// The CRL URLs of `client_auth` (declared at `field`), with its trust anchors.
fn walk_crls(b: &mut Builder, field: &str, ca: &super::raw::RawClientAuth) {
    if !ca.crls.iter().any(|c| is_url(c)) {
        return;
    }
    let mut roots = Vec::new();
    for (i, t) in ca.trust.iter().enumerate() {
        roots.extend(b.certs(&format!("{field}.trust[{i}]"), t).unwrap_or_default());
    }
    for (i, c) in ca.crls.iter().enumerate() {
        if is_url(c) {
            b.crl_source(&format!("{field}.crls[{i}]"), c, &roots, ca.crl_refresh.as_ref());
        }
    }
}

/// Whether a `crls` entry is a URL rather than a file.
pub(super) fn is_url(entry: &str) -> bool {
    entry.starts_with("http://") || entry.starts_with("https://")
}

/// Every place a managed certificate may be declared.
fn walk(b: &mut Builder, raw: &RawConfig) {
    for (i, l) in raw.listeners.iter().enumerate() {
        if let Some(ca) = &l.client_auth {
            walk_crls(b, &format!("listener[{i}].client_auth"), ca);
        }
        for (j, c) in l.certificates.iter().enumerate() {
            if let RawCertificate::Managed(m) = c {
                b.managed_files(&format!("listener[{i}].certificates[{j}]"), m);
            }
        }
    }
    if let Some(a) = &raw.admin {
        if let Some(ca) = &a.client_auth {
            walk_crls(b, "admin.client_auth", ca);
        }
        for (j, c) in a.certificates.iter().enumerate() {
            if let RawCertificate::Managed(m) = c {
                b.managed_files(&format!("admin.certificates[{j}]"), m);
            }
        }
    }
    for (i, u) in raw.upstreams.iter().enumerate() {
        if let Some(RawClientCert::Managed(m)) = &u.client_cert {
            b.managed_files(&format!("upstream[{i}].client_cert"), m);
        }
    }
}
