//! Subject alternative names: how a command-line value becomes a SAN of the right kind.
//!
//! Classification, in this order: an IP address (v4, v6, or v6 in brackets) is an IP SAN; a
//! value with a URI scheme followed by `//` (such as `spiffe://example.test/joe`) or a `urn:`
//! is a URI SAN; a value with `@` is an email SAN; anything else must be a DNS name.
//!
//! A URI SAN must be a valid RFC 3986 URI; SPIFFE IDs must also follow the SPIFFE rules.

use std::fmt;
use std::net::IpAddr;

use crate::PkiError;

/// One subject alternative name, validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum San {
    Dns(String),
    Ip(IpAddr),
    Uri(String),
    Email(String),
}

impl San {
    /// Classifies and validates a value given by a user.
    pub fn parse(value: &str) -> Result<San, PkiError> {
        let invalid = |reason: &str| PkiError::InvalidSan {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let v = value.trim();
        if v.is_empty() {
            return Err(invalid("empty value"));
        }
        let unbracketed = v.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(v);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(San::Ip(ip));
        }
        if let Some(scheme) = uri_scheme(v) {
            validate_uri(v, scheme).map_err(|r| invalid(&r))?;
            return Ok(San::Uri(v.to_string()));
        }
        if v.contains("://") {
            return Err(invalid(
                "not a URI: a scheme starts with a letter and holds only letters, digits, '+', \
                 '-' and '.' (RFC 3986)",
            ));
        }
        if let Some((local, domain)) = v.rsplit_once('@') {
            if local.is_empty() || local.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid("the part before @ must be a non-empty mailbox name"));
            }
            validate_dns(domain, false)
                .map_err(|r| invalid(&format!("the domain after @ is not valid: {r}")))?;
            return Ok(San::Email(v.to_string()));
        }
        if v.contains(':') {
            return Err(invalid(
                "not a DNS name (it contains ':'); a URI SAN needs a scheme such as \
                 spiffe://trust-domain/path, and a port does not belong in a SAN",
            ));
        }
        validate_dns(v, true).map_err(invalid)?;
        Ok(San::Dns(v.to_ascii_lowercase()))
    }

    /// The SAN's kind, as shown to users ("DNS", "IP", "URI", "email").
    pub fn kind(&self) -> &'static str {
        match self {
            San::Dns(_) => "DNS",
            San::Ip(_) => "IP",
            San::Uri(_) => "URI",
            San::Email(_) => "email",
        }
    }

    /// Whether this SAN names a client rather than a server (a URI or email identity).
    pub fn is_client_identity(&self) -> bool {
        matches!(self, San::Uri(_) | San::Email(_))
    }

    pub(crate) fn to_rcgen(&self) -> Result<rcgen::SanType, PkiError> {
        let ia5 = |s: &str| {
            rcgen::string::Ia5String::try_from(s).map_err(|_| PkiError::InvalidSan {
                value: s.to_string(),
                reason: "only ASCII characters are allowed".into(),
            })
        };
        Ok(match self {
            San::Dns(d) => rcgen::SanType::DnsName(ia5(d)?),
            San::Ip(ip) => rcgen::SanType::IpAddress(*ip),
            San::Uri(u) => rcgen::SanType::URI(ia5(u)?),
            San::Email(e) => rcgen::SanType::Rfc822Name(ia5(e)?),
        })
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(v) | San::Uri(v) | San::Email(v) => write!(f, "{}:{v}", self.kind()),
            San::Ip(ip) => write!(f, "IP:{ip}"),
        }
    }
}

/// The value of a SAN without its kind, as stored in the inventory.
impl San {
    pub fn value(&self) -> String {
        match self {
            San::Dns(v) | San::Uri(v) | San::Email(v) => v.clone(),
            San::Ip(ip) => ip.to_string(),
        }
    }
}

/// A permitted subtree of an intermediate's name constraints (`ca init --permit-dns`,
/// `--permit-ip`): certificates below it may name only hosts inside these. A DNS subtree
/// `example.com` covers `example.com` and every name under it; an IP subtree is a CIDR block.
/// Name forms without a subtree (URI, email) are not constrained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permit {
    Dns(String),
    Ip { addr: IpAddr, prefix: u8 },
}

impl Permit {
    /// A DNS subtree: a DNS name without wildcard or leading dot, stored lowercase.
    pub fn dns(value: &str) -> Result<Permit, PkiError> {
        let invalid = |reason: &str| PkiError::InvalidNameConstraint {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let v = value.trim();
        if v.starts_with('.') || v.starts_with("*.") {
            return Err(invalid(
                "write the domain itself (example.com): it covers every name under it",
            ));
        }
        validate_dns(v, false).map_err(invalid)?;
        Ok(Permit::Dns(v.strip_suffix('.').unwrap_or(v).to_ascii_lowercase()))
    }

    /// An IP subtree in CIDR form (`10.0.0.0/8`, `fd00::/8`); a bare address is a /32 or /128.
    pub fn ip(value: &str) -> Result<Permit, PkiError> {
        let invalid =
            |reason: String| PkiError::InvalidNameConstraint { value: value.to_string(), reason };
        let v = value.trim();
        let (addr_text, prefix_text) = v.split_once('/').map_or((v, None), |(a, p)| (a, Some(p)));
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| invalid("not an IP address block such as 10.0.0.0/8".into()))?;
        let bits: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => bits,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= bits).ok_or_else(|| {
                invalid(format!("the prefix length is a number from 0 to {bits}"))
            })?,
        };
        let network = mask(addr, prefix);
        if network != addr {
            return Err(invalid(format!(
                "the address has bits set past the /{prefix} prefix; write {network}/{prefix}"
            )));
        }
        Ok(Permit::Ip { addr, prefix })
    }

    pub(crate) fn to_rcgen(&self) -> rcgen::GeneralSubtree {
        match self {
            Permit::Dns(d) => rcgen::GeneralSubtree::DnsName(d.clone()),
            Permit::Ip { addr, prefix } => rcgen::GeneralSubtree::IpAddress(
                rcgen::CidrSubnet::from_addr_prefix(*addr, *prefix),
            ),
        }
    }
}

impl fmt::Display for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Permit::Dns(d) => write!(f, "DNS:{d}"),
            Permit::Ip { addr, prefix } => write!(f, "IP:{addr}/{prefix}"),
        }
    }
}

/// `addr` with the bits past `prefix` cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::from((u32::from(a) & m).to_be_bytes())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::from((u128::from(a) & m).to_be_bytes())
        }
    }
}

/// Returns the scheme when `v` starts like a URI (`scheme://` or `urn:`).
fn uri_scheme(v: &str) -> Option<&str> {
    let (scheme, rest) = v.split_once(':')?;
    let valid_scheme = scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if valid_scheme && (rest.starts_with("//") || scheme.eq_ignore_ascii_case("urn")) {
        Some(scheme)
    } else {
        None
    }
}

/// A URI SAN must be an RFC 3986 URI: every character unreserved, reserved (gen-delims and
/// sub-delims) or part of a `%XX` escape, at most one `#`. SPIFFE IDs then pass the stricter
/// SPIFFE rules. The reason names the first offending character and how to write it instead.
fn validate_uri(v: &str, scheme: &str) -> Result<(), String> {
    let mut chars = v.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '%' {
            let hex = v.get(i + 1..i + 3).filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
            if hex.is_none() {
                return Err("'%' must start a %XX escape of two hex digits (RFC 3986); write a \
                            literal '%' as %25"
                    .into());
            }
            chars.nth(1);
        } else if !is_uri_char(c) {
            return Err(refused_uri_char(c));
        }
    }
    if v.matches('#').count() > 1 {
        return Err("a URI has at most one '#' (RFC 3986); percent-encode the others as %23".into());
    }
    if scheme.eq_ignore_ascii_case("spiffe") {
        return validate_spiffe(v).map_err(str::to_string);
    }
    Ok(())
}

/// RFC 3986 section 2: unreserved, gen-delims and sub-delims (`%` is handled by the caller).
fn is_uri_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=".contains(c)
}

fn refused_uri_char(c: char) -> String {
    let shown = match c {
        ' ' => "a space".to_string(),
        c if c.is_control() => format!("the control character U+{:04X}", u32::from(c)),
        c => format!("'{c}'"),
    };
    let mut utf8 = [0; 4];
    let escaped: String = c.encode_utf8(&mut utf8).bytes().map(|b| format!("%{b:02X}")).collect();
    format!("{shown} is not allowed in a URI (RFC 3986); percent-encode it as {escaped}")
}

/// SPIFFE IDs: `spiffe://trust-domain/path`, lowercase trust domain, no empty, `.` or `..`
/// path segments, no query or fragment (SPIFFE-ID specification, section 2).
fn validate_spiffe(v: &str) -> Result<(), &'static str> {
    let rest = v.strip_prefix("spiffe://").ok_or("a SPIFFE ID starts with lowercase spiffe://")?;
    let (domain, path) = match rest.split_once('/') {
        Some((d, p)) => (d, Some(p)),
        None => (rest, None),
    };
    if domain.is_empty() {
        return Err("a SPIFFE ID needs a trust domain");
    }
    if !domain.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(c)) {
        return Err("a SPIFFE trust domain may hold only lowercase letters, digits, '-', '.', '_'");
    }
    if v.contains('?') || v.contains('#') {
        return Err("a SPIFFE ID has no query or fragment");
    }
    if let Some(path) = path {
        for segment in path.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err("a SPIFFE ID path has no empty, '.' or '..' segments");
            }
            if !segment.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) {
                return Err(
                    "a SPIFFE ID path segment may hold only letters, digits, '-', '.', '_'",
                );
            }
        }
    }
    Ok(())
}

/// Hostname rules of RFC 1123, plus a single leading `*.` wildcard label when allowed.
fn validate_dns(name: &str, allow_wildcard: bool) -> Result<(), &'static str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err("empty DNS name");
    }
    if name.len() > 253 {
        return Err("a DNS name is at most 253 characters");
    }
    let labels: Vec<&str> = name.split('.').collect();
    for (i, label) in labels.iter().enumerate() {
        if *label == "*" {
            if !allow_wildcard {
                return Err("a wildcard is not allowed here");
            }
            if i != 0 || labels.len() < 3 {
                return Err("a wildcard may only be the whole leftmost label of a name with at \
                            least three labels, as in *.example.com");
            }
            continue;
        }
        if label.is_empty() {
            return Err("a DNS name has no empty labels (check for '..')");
        }
        if label.len() > 63 {
            return Err("a DNS label is at most 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a DNS label does not start or end with '-'");
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err("a DNS name may hold only letters, digits, '-' and '.'");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind of value becomes the SAN kind that step and openssl users expect.
    #[test]
    fn values_are_classified_by_kind() {
        assert_eq!(San::parse("example.com").unwrap(), San::Dns("example.com".into()));
        assert_eq!(San::parse("Api.Example.COM").unwrap(), San::Dns("api.example.com".into()));
        assert_eq!(San::parse("*.example.com").unwrap(), San::Dns("*.example.com".into()));
        assert_eq!(San::parse("127.0.0.1").unwrap(), San::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(San::parse("[::1]").unwrap(), San::Ip("::1".parse().unwrap()));
        assert_eq!(
            San::parse("spiffe://example.test/joe").unwrap(),
            San::Uri("spiffe://example.test/joe".into())
        );
        assert_eq!(
            San::parse("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6").unwrap(),
            San::Uri("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6".into())
        );
        assert_eq!(San::parse("joe@example.com").unwrap(), San::Email("joe@example.com".into()));
    }

    /// URIs with characters RFC 3986 does not allow are refused, naming the character and its
    /// percent-encoding; percent-encoded and reserved characters are accepted.
    #[test]
    fn uri_sans_must_be_rfc3986_uris() {
        for value in [
            "https://example.test/a%22b?q=1&r=(x)#frag",
            "https://[::1]:8443/p;v=1,2*3+4!$'~",
            "urn:example:a-b.c_d",
            "spiffe://example.test/ns/prod/sa/web",
        ] {
            assert_eq!(San::parse(value).unwrap(), San::Uri(value.into()), "{value}");
        }
        for (value, reason) in [
            ("https://x/a\"b", "'\"' is not allowed in a URI (RFC 3986); percent-encode it as %22"),
            ("https://x/a\\b", "'\\' is not allowed in a URI (RFC 3986); percent-encode it as %5C"),
            ("https://x/<a>", "'<' is not allowed"),
            ("https://x/a^b", "'^' is not allowed"),
            ("https://x/a`b", "'`' is not allowed"),
            ("https://x/{a}", "'{' is not allowed"),
            ("https://x/a|b", "'|' is not allowed"),
            ("urn:a b:c", "a space is not allowed in a URI (RFC 3986); percent-encode it as %20"),
            ("https://x/a\tb", "control character U+0009 is not allowed"),
            ("https://x/a\u{7f}", "control character U+007F is not allowed"),
            (
                "https://x/caf\u{e9}",
                "'\u{e9}' is not allowed in a URI (RFC 3986); percent-encode it as %C3%A9",
            ),
            ("https://x/100%", "'%' must start a %XX escape"),
            ("https://x/100%2", "'%' must start a %XX escape"),
            ("https://x/%zz", "'%' must start a %XX escape"),
            ("https://x/a#b#c", "at most one '#'"),
            ("ht_tp://x/a", "a scheme starts with a letter"),
            ("://x/a", "a scheme starts with a letter"),
        ] {
            let err = San::parse(value).unwrap_err().to_string();
            assert!(err.contains(reason), "{value:?}: {err}");
        }
    }

    /// Values that are not valid names are refused with the reason.
    #[test]
    fn invalid_values_are_refused_with_reason() {
        for (value, fragment) in [
            ("", "empty"),
            ("exa mple.com", "letters, digits"),
            ("a..b", "empty labels"),
            ("-a.example.com", "start or end"),
            ("localhost:8443", "contains ':'"),
            ("*.com", "wildcard"),
            ("a.*.example.com", "wildcard"),
            ("@example.com", "mailbox"),
            ("joe@exa_mple.com", "domain after @"),
            ("spiffe://Example.test/joe", "lowercase"),
            ("spiffe://example.test//joe", "segments"),
            ("spiffe://example.test/joe?x=1", "query"),
        ] {
            let err = San::parse(value).unwrap_err().to_string();
            assert!(err.contains(fragment), "{value:?}: {err}");
        }
    }

    /// Name-constraint subtrees: a domain (not a wildcard or a dotted suffix) and a CIDR block
    /// without host bits.
    #[test]
    fn permits_parse_and_refuse_with_reason() {
        assert_eq!(Permit::dns("Example.COM").unwrap().to_string(), "DNS:example.com");
        assert_eq!(Permit::ip("10.0.0.0/8").unwrap().to_string(), "IP:10.0.0.0/8");
        assert_eq!(Permit::ip("fd00::/8").unwrap().to_string(), "IP:fd00::/8");
        assert_eq!(Permit::ip("192.0.2.7").unwrap().to_string(), "IP:192.0.2.7/32");
        for (value, fragment) in [
            (".example.com", "covers every name"),
            ("*.example.com", "covers every name"),
            ("exa mple", "letters"),
        ] {
            let err = Permit::dns(value).unwrap_err().to_string();
            assert!(err.contains(fragment), "{value}: {err}");
        }
        for (value, fragment) in [
            ("10.0.0.1/8", "write 10.0.0.0/8"),
            ("10.0.0.0/33", "0 to 32"),
            ("example.com/8", "not an IP"),
        ] {
            let err = Permit::ip(value).unwrap_err().to_string();
            assert!(err.contains(fragment), "{value}: {err}");
        }
    }
}
