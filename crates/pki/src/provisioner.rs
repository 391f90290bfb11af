//! Provisioners: who may sign one-time tokens for the online CA's `POST /sign`, and what each
//! may ask for. They live in `<ca-dir>/provisioners.toml`; `ca init` writes one provisioner,
//! `default`, whose EC P-256 key is `<ca-dir>/provisioner.key` (0600). A CA directory
//! without the file has that same default (its key is created on first use).
//!
//! ```toml
//! [[provisioner]]
//! name = "default"
//! key = "provisioner.key"        # signs tokens (ES256); relative to the CA directory
//! san_kinds = ["dns", "ip", "uri", "email"]
//! san_patterns = ["*"]           # "*", "*.example.com", "spiffe://example.com/*", exact
//! min_lifetime = "1m"
//! default_lifetime = "24h"
//! max_lifetime = "24h"
//! renew_after_expiry = false
//! profile = "dual"               # dual, server or client
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use time::Duration;

use crate::PkiError;
use crate::fs::{Mode, Overwrite};
use crate::names::San;
use crate::profile::Profile;
use crate::validity::parse_duration;

/// `<ca-dir>/provisioners.toml`.
pub const FILE: &str = "provisioners.toml";

/// The default provisioner's key, `<ca-dir>/provisioner.key`.
pub const DEFAULT_KEY: &str = "provisioner.key";

/// The default provisioner's name.
pub const DEFAULT_NAME: &str = "default";

/// The shortest lifetime a profile may allow (short-lived certificates in tests).
pub const MIN_LIFETIME: Duration = Duration::minutes(1);

/// What `ca init` writes.
const DEFAULT_FILE: &str = r#"# Provisioners of the online CA (`certgate ca serve`): each signs one-time tokens
# (`certgate ca token NAME --san ...`) with its key, and its profile bounds what POST /sign
# issues for them. See docs/pki.md.

[[provisioner]]
name = "default"
# EC P-256 private key (PKCS#8 PEM, 0600), relative to the CA directory.
key = "provisioner.key"
# SAN kinds a token may name: dns, ip, uri, email.
san_kinds = ["dns", "ip", "uri", "email"]
# Names a token may name: "*" (any), "*.example.com" (below it), "spiffe://example.com/*"
# (this prefix), or a name written out.
san_patterns = ["*"]
# Certificate lifetimes: the shortest and longest a request may ask for, and what it gets
# when it asks for none. At least 1m.
min_lifetime = "1m"
default_lifetime = "24h"
max_lifetime = "24h"
# Whether an expired certificate may still be renewed.
renew_after_expiry = false
# What certificates are for: dual (server and client), server or client.
profile = "dual"
"#;

/// A kind of SAN, as the file names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanKind {
    Dns,
    Ip,
    Uri,
    Email,
}

impl SanKind {
    fn parse(s: &str) -> Option<SanKind> {
        match s {
            "dns" => Some(SanKind::Dns),
            "ip" => Some(SanKind::Ip),
            "uri" => Some(SanKind::Uri),
            "email" => Some(SanKind::Email),
            _ => None,
        }
    }

    /// The kind of `san`.
    pub fn of(san: &San) -> SanKind {
        match san {
            San::Dns(_) => SanKind::Dns,
            San::Ip(_) => SanKind::Ip,
            San::Uri(_) => SanKind::Uri,
            San::Email(_) => SanKind::Email,
        }
    }
}

/// One provisioner and its profile.
#[derive(Debug, Clone)]
pub struct Provisioner {
    pub name: String,
    /// Its private key (EC P-256, PKCS#8 PEM).
    pub key: PathBuf,
    pub san_kinds: Vec<SanKind>,
    pub san_patterns: Vec<String>,
    pub min_lifetime: Duration,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub renew_after_expiry: bool,
    pub profile: Profile,
}

impl Provisioner {
    /// Whether the profile allows `san`: its kind is listed and a pattern matches it.
    pub fn allows(&self, san: &San) -> bool {
        if !self.san_kinds.contains(&SanKind::of(san)) {
            return false;
        }
        let value = san.value();
        self.san_patterns.iter().any(|p| pattern_matches(p, &value))
    }
}

/// A pattern: `*` matches anything; `*.example.com` matches names below example.com; a
/// trailing `*` matches by prefix; anything else matches itself (ASCII case-insensitively).
fn pattern_matches(pattern: &str, value: &str) -> bool {
    let (pattern, value) = (pattern.to_ascii_lowercase(), value.to_ascii_lowercase());
    if pattern == "*" {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix("*.") {
        return value.len() > suffix.len() + 1
            && value.ends_with(suffix)
            && value[..value.len() - suffix.len()].ends_with('.');
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

/// Every provisioner of a CA directory.
#[derive(Debug, Clone)]
pub struct Provisioners {
    pub list: Vec<Provisioner>,
}

impl Provisioners {
    /// Reads `<dir>/provisioners.toml`; without it, the default provisioner, whose key is
    /// created (0600) if missing. Every problem names the file, the field and the reason.
    pub fn load(dir: &Path) -> Result<Provisioners, PkiError> {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                ensure_key(&dir.join(DEFAULT_KEY))?;
                return parse(DEFAULT_FILE, dir, &path);
            }
            Err(source) => return Err(PkiError::Read { path, source }),
        };
        parse(&text, dir, &path)
    }

    /// The provisioner named `name`.
    pub fn find(&self, name: &str) -> Option<&Provisioner> {
        self.list.iter().find(|p| p.name == name)
    }
}

/// Writes the default provisioner into a new CA directory: `provisioner.key` (a new EC
/// P-256 key, 0600) and `provisioners.toml`, each replaced only as `overwrite` allows.
pub fn init(dir: &Path, overwrite: Overwrite) -> Result<(), PkiError> {
    let key = crate::keys::KeyType::EcP256.generate()?;
    let pem = crate::keys::to_pem(&key);
    crate::fs::write_atomic(&dir.join(DEFAULT_KEY), pem.as_bytes(), Mode::Secret, overwrite)?;
    crate::fs::write_atomic(&dir.join(FILE), DEFAULT_FILE.as_bytes(), Mode::Public, overwrite)
}

/// Creates the key at `path` (EC P-256, 0600) unless it exists.
fn ensure_key(path: &Path) -> Result<(), PkiError> {
    if path.exists() {
        return Ok(());
    }
    let key = crate::keys::KeyType::EcP256.generate()?;
    let pem = crate::keys::to_pem(&key);
    match crate::fs::write_atomic(path, pem.as_bytes(), Mode::Secret, Overwrite::Refuse) {
        // Made at the same moment by another certgate: use that one.
        Err(PkiError::Exists { .. }) => Ok(()),
        other => other,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default, rename = "provisioner")]
    provisioners: Vec<RawProvisioner>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvisioner {
    name: String,
    key: String,
    san_kinds: Option<Vec<String>>,
    san_patterns: Option<Vec<String>>,
    min_lifetime: Option<String>,
    default_lifetime: Option<String>,
    max_lifetime: Option<String>,
    #[serde(default)]
    renew_after_expiry: bool,
    profile: Option<String>,
}

fn parse(text: &str, dir: &Path, path: &Path) -> Result<Provisioners, PkiError> {
    let bad = |field: String, reason: String| {
        PkiError::bad_file(
            path,
            if field.is_empty() { reason } else { format!("{field}: {reason}") },
        )
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| bad(String::new(), e.message().into()))?;
    if raw.provisioners.is_empty() {
        return Err(bad(String::new(), "no [[provisioner]] is configured".into()));
    }
    let mut list: Vec<Provisioner> = Vec::new();
    for (i, p) in raw.provisioners.into_iter().enumerate() {
        let field = |name: &str| format!("provisioner[{i}].{name}");
        if p.name.trim().is_empty() || list.iter().any(|q| q.name == p.name) {
            return Err(bad(
                field("name"),
                format!("{:?} is empty or names two provisioners", p.name),
            ));
        }
        let mut san_kinds = Vec::new();
        for kind in p
            .san_kinds
            .unwrap_or_else(|| vec!["dns".into(), "ip".into(), "uri".into(), "email".into()])
        {
            let parsed = SanKind::parse(&kind).ok_or_else(|| {
                bad(field("san_kinds"), format!("{kind:?} is not one of dns, ip, uri, email"))
            })?;
            san_kinds.push(parsed);
        }
        let lifetime = |name: &str, value: Option<String>, default: &str| {
            let value = value.unwrap_or_else(|| default.to_string());
            let d = parse_duration(&value)
                .map_err(|e| bad(field(name), crate::error::with_causes(&e)))?;
            if d < MIN_LIFETIME {
                return Err(bad(field(name), format!("{value:?} is shorter than 1m")));
            }
            Ok(d)
        };
        let min_lifetime = lifetime("min_lifetime", p.min_lifetime, "5m")?;
        let default_lifetime = lifetime("default_lifetime", p.default_lifetime, "24h")?;
        let max_lifetime = lifetime("max_lifetime", p.max_lifetime, "24h")?;
        if !(min_lifetime <= default_lifetime && default_lifetime <= max_lifetime) {
            return Err(bad(
                field("default_lifetime"),
                "min_lifetime <= default_lifetime <= max_lifetime does not hold".into(),
            ));
        }
        let profile = match p.profile.as_deref().unwrap_or("dual") {
            "dual" => Profile::Dual,
            "server" => Profile::Server,
            "client" => Profile::Client,
            other => {
                return Err(bad(
                    field("profile"),
                    format!("{other:?} is not dual, server or client"),
                ));
            }
        };
        list.push(Provisioner {
            name: p.name,
            key: dir.join(p.key),
            san_kinds,
            san_patterns: p.san_patterns.unwrap_or_else(|| vec!["*".into()]),
            min_lifetime,
            default_lifetime,
            max_lifetime,
            renew_after_expiry: p.renew_after_expiry,
            profile,
        });
    }
    Ok(Provisioners { list })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Patterns: any, below a domain (not the domain itself), by prefix, or exact.
    #[test]
    fn san_patterns_match_as_documented() {
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("*.example.com", "a.b.example.com"));
        assert!(!pattern_matches("*.example.com", "example.com"));
        assert!(!pattern_matches("*.example.com", "evilexample.com"));
        assert!(pattern_matches("spiffe://example.com/*", "spiffe://example.com/joe"));
        assert!(!pattern_matches("spiffe://example.com/*", "spiffe://other.com/joe"));
        assert!(pattern_matches("API.example.com", "api.example.com"));
        assert!(!pattern_matches("api.example.com", "www.example.com"));
    }

    /// The file `ca init` writes parses into the default provisioner; a missing file means
    /// the same, with its key created 0600.
    #[test]
    fn the_default_file_and_a_missing_file_give_the_default_provisioner() {
        let dir = tempfile::tempdir().unwrap();
        let defaults = Provisioners::load(dir.path()).unwrap();
        let p = defaults.find(DEFAULT_NAME).unwrap();
        assert_eq!((p.min_lifetime, p.max_lifetime), (MIN_LIFETIME, Duration::hours(24)));
        assert!(!p.renew_after_expiry);
        assert_eq!(p.profile, Profile::Dual);
        assert!(p.key.exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(p.allows(&San::parse("spiffe://example.test/joe").unwrap()));
    }

    /// Mistakes are refused naming the file, the field and the reason.
    #[test]
    fn bad_files_name_the_field_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        for (text, expected) in [
            (
                "[[provisioner]]\nname = \"a\"\nkey = \"k\"\nmin_lifetime = \"30s\"\n",
                "provisioner[0].min_lifetime: \"30s\" is shorter than 1m",
            ),
            (
                "[[provisioner]]\nname = \"a\"\nkey = \"k\"\nsan_kinds = [\"dn\"]\n",
                "provisioner[0].san_kinds: \"dn\" is not one of",
            ),
            (
                "[[provisioner]]\nname = \"a\"\nkey = \"k\"\nmax_lifetime = \"1h\"\n",
                "min_lifetime <= default_lifetime <= max_lifetime",
            ),
            ("[[provisioner]]\nname = \"a\"\nkey = \"k\"\nprofil = \"dual\"\n", "profil"),
            ("", "no [[provisioner]]"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Provisioners::load(dir.path()).unwrap_err().to_string();
            assert!(err.contains(FILE) && err.contains(expected), "{err}");
        }
    }
}
