//! Authorization: an allow-list over the verified identity. It is data with one method and it
//! fails closed: a client passes only if one of its attributes matches one entry, and an
//! allow-list with no entries lets nobody in.

use std::collections::HashSet;

use certgate_pki::identity::PeerIdentity;

use crate::config::raw::RawAllow;

/// The outcome of an authorization check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

/// A route's allow-list: a disjunction of per-attribute lists.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    /// URI SAN patterns (SPIFFE IDs included): `*` matches exactly one path segment.
    uris: Vec<UriPattern>,
    /// DNS SAN patterns: exact, or `*.example.com` for one label.
    dns: Vec<String>,
    emails: HashSet<String>,
    cns: HashSet<String>,
    orgs: HashSet<String>,
    org_units: HashSet<String>,
    issuers: HashSet<String>,
    fingerprints: HashSet<String>,
}

#[derive(Debug, Clone)]
struct UriPattern {
    /// `scheme://authority`
    root: String,
    segments: Vec<String>,
}

impl Acl {
    /// Builds an allow-list; on a malformed entry returns the key and the reason.
    pub fn new(raw: &RawAllow) -> Result<Acl, (String, String)> {
        let mut acl = Acl::default();
        for (key, list) in [("spiffe", &raw.spiffe), ("uri", &raw.uri)] {
            for (i, p) in list.iter().enumerate() {
                let pattern = UriPattern::parse(p).ok_or_else(|| {
                    (
                        format!("{key}[{i}]"),
                        format!("{p:?} is not a URI such as spiffe://example.com/ns/*/sa/web"),
                    )
                })?;
                if key == "spiffe" && !p.starts_with("spiffe://") {
                    return Err((
                        format!("{key}[{i}]"),
                        format!("{p:?} does not start with spiffe://"),
                    ));
                }
                acl.uris.push(pattern);
            }
        }
        acl.dns = raw.dns.iter().map(|d| d.to_ascii_lowercase()).collect();
        acl.emails = raw.email.iter().map(|e| e.to_ascii_lowercase()).collect();
        acl.cns = raw.cn.iter().cloned().collect();
        acl.orgs = raw.o.iter().cloned().collect();
        acl.org_units = raw.ou.iter().cloned().collect();
        acl.issuers = raw.issuer.iter().cloned().collect();
        for (i, f) in raw.fingerprint_sha256.iter().enumerate() {
            let hex: String =
                f.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err((
                    format!("fingerprint_sha256[{i}]"),
                    format!("{f:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)"),
                ));
            }
            acl.fingerprints.insert(hex);
        }
        Ok(acl)
    }

    /// Whether `id` is on the list.
    pub fn allows(&self, id: &PeerIdentity) -> Decision {
        let hit = id.sans.uri.iter().any(|u| self.uris.iter().any(|p| p.matches(u)))
            || id.sans.dns.iter().any(|d| self.dns.iter().any(|p| dns_matches(p, d)))
            || id.sans.email.iter().any(|e| self.emails.contains(&e.to_ascii_lowercase()))
            || id.common_name.as_ref().is_some_and(|cn| self.cns.contains(cn))
            || id.organizations.iter().any(|o| self.orgs.contains(o))
            || id.org_units.iter().any(|ou| self.org_units.contains(ou))
            || self.issuers.contains(&id.issuer)
            || self.fingerprints.contains(&id.fingerprint_sha256);
        if hit { Decision::Allow } else { Decision::Deny }
    }
}

impl UriPattern {
    fn parse(p: &str) -> Option<UriPattern> {
        let (scheme, rest) = p.split_once("://")?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if scheme.is_empty() || authority.is_empty() {
            return None;
        }
        Some(UriPattern {
            root: format!("{}://{}", scheme.to_ascii_lowercase(), authority),
            segments: if path.is_empty() {
                vec![]
            } else {
                path.split('/').map(str::to_string).collect()
            },
        })
    }

    fn matches(&self, uri: &str) -> bool {
        let Some(rest) = uri.strip_prefix(&self.root) else { return false };
        let segments: Vec<&str> = match rest.strip_prefix('/') {
            Some(path) => path.split('/').collect(),
            None if rest.is_empty() => vec![],
            None => return false,
        };
        segments.len() == self.segments.len()
            && self
                .segments
                .iter()
                .zip(&segments)
                .all(|(p, s)| p == s || (p == "*" && wildcard_fits(s)))
    }
}

/// Whether a URI path segment may stand for `*`: not empty, not `.` or `..` (in any
/// percent-encoding), and free of control characters, `%2F`/`%5C` and NUL, so a certificate
/// cannot match a pattern through a segment an upstream would read as a separator or a step up.
fn wildcard_fits(segment: &str) -> bool {
    if segment.is_empty() || segment.chars().any(|c| c.is_control()) {
        return false;
    }
    match crate::http::path::normalize(&format!("/{segment}")) {
        // The segment, decoded, must still be exactly one segment with the same meaning.
        Ok(normal) => normal.len() > 1 && !normal[1..].contains(&b'/') && !is_dot(segment),
        Err(_) => false,
    }
}

fn is_dot(segment: &str) -> bool {
    let lower = segment.to_ascii_lowercase().replace("%2e", ".");
    lower == "." || lower == ".."
}

fn dns_matches(pattern: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(parent) => {
            name.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == parent)
        }
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use certgate_pki::testkit::{LeafSpec, TestPki};

    fn id(spec: LeafSpec) -> PeerIdentity {
        PeerIdentity::from_der(&TestPki::new().leaf(spec).der).unwrap()
    }

    /// `*` never matches an empty, `.` or `..` segment (encoded or not), nor one with NUL or a
    /// control character.
    #[test]
    fn wildcard_refuses_hollow_and_dot_segments() {
        let p = UriPattern::parse("spiffe://example.test/ns/*/sa/web").unwrap();
        assert!(p.matches("spiffe://example.test/ns/prod/sa/web"));
        for uri in [
            "spiffe://example.test/ns//sa/web",
            "spiffe://example.test/ns/./sa/web",
            "spiffe://example.test/ns/../sa/web",
            "spiffe://example.test/ns/%2e%2E/sa/web",
            "spiffe://example.test/ns/.%2e/sa/web",
            "spiffe://example.test/ns/a\0b/sa/web",
            "spiffe://example.test/ns/a%00b/sa/web",
            "spiffe://example.test/ns/a%2Fb/sa/web",
            "spiffe://example.test/ns/a\nb/sa/web",
        ] {
            assert!(!p.matches(uri), "{uri:?}");
        }
    }

    /// `*` in a SPIFFE pattern matches exactly one segment.
    #[test]
    fn spiffe_wildcard_matches_one_segment() {
        let acl = Acl::new(&RawAllow {
            spiffe: vec!["spiffe://example.test/ns/*/sa/web".into()],
            ..Default::default()
        })
        .unwrap();
        let ok = id(LeafSpec {
            sans: vec!["spiffe://example.test/ns/prod/sa/web".into()],
            ..LeafSpec::client()
        });
        let deep = id(LeafSpec {
            sans: vec!["spiffe://example.test/ns/a/b/sa/web".into()],
            ..LeafSpec::client()
        });
        let other = id(LeafSpec {
            sans: vec!["spiffe://other.test/ns/prod/sa/web".into()],
            ..LeafSpec::client()
        });
        assert_eq!(acl.allows(&ok), Decision::Allow);
        assert_eq!(acl.allows(&deep), Decision::Deny);
        assert_eq!(acl.allows(&other), Decision::Deny);
    }

    /// An allow-list with no entries denies everyone.
    #[test]
    fn empty_acl_denies() {
        let acl = Acl::new(&RawAllow::default()).unwrap();
        assert_eq!(acl.allows(&id(LeafSpec::client())), Decision::Deny);
    }

    /// Subject and fingerprint entries match exactly.
    #[test]
    fn subject_and_fingerprint_entries() {
        let who = id(LeafSpec {
            cn: "joe".into(),
            subject_o: Some("Acme".into()),
            subject_ou: Some("ops".into()),
            ..LeafSpec::client()
        });
        for allow in [
            RawAllow { cn: vec!["joe".into()], ..Default::default() },
            RawAllow { o: vec!["Acme".into()], ..Default::default() },
            RawAllow { ou: vec!["ops".into()], ..Default::default() },
            RawAllow { issuer: vec![who.issuer.clone()], ..Default::default() },
            RawAllow {
                fingerprint_sha256: vec![who.fingerprint_sha256.to_uppercase()],
                ..Default::default()
            },
        ] {
            assert_eq!(Acl::new(&allow).unwrap().allows(&who), Decision::Allow, "{allow:?}");
        }
        let no = RawAllow { cn: vec!["jo".into()], o: vec!["acme".into()], ..Default::default() };
        assert_eq!(Acl::new(&no).unwrap().allows(&who), Decision::Deny);
    }

    /// DNS wildcards cover one label.
    #[test]
    fn dns_wildcard_covers_one_label() {
        assert!(dns_matches("*.example.test", "api.example.test"));
        assert!(!dns_matches("*.example.test", "a.b.example.test"));
        assert!(!dns_matches("*.example.test", "example.test"));
        assert!(dns_matches("api.example.test", "API.example.test"));
    }
}
