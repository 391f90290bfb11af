//! The request's own headers on its way upstream: hop-by-hop handling, the Host, and the
//! forwarding headers the gateway writes.
//!
//! - Hop-by-hop headers (RFC 9110 section 7.6.1) are removed **first**, before the gateway
//!   writes anything, so the names a client lists in `Connection` can only remove headers the
//!   client itself sent. `Host` and `Content-Length` are never removed that way. `TE: trailers`
//!   is kept (gRPC and other HTTP/2 upstreams need it).
//! - The Host is read once ([`request_host`]): two `Host` headers, an HTTP/2 `host` that
//!   differs from `:authority`, or an absolute-form target whose authority differs from
//!   `Host` are refused, so the gateway and the upstream cannot see different hosts.
//! - `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` are written by the gateway;
//!   inbound copies (and `Forwarded`, `X-Real-IP`, `X-Forwarded-Port`, `X-Forwarded-Prefix`,
//!   in any spelling) were stripped with the identity headers. Only a peer listed in the
//!   listener's `trusted_proxies` has its `X-Forwarded-For` and `Forwarded` kept and appended
//!   to.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Uri, Version};

use crate::http::reject::Reject;

/// Forwarding headers the gateway owns: stripped from every request with the identity headers.
pub const FORWARDING_NAMES: [&str; 7] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
    "forwarded",
];

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Names a `Connection` header may not remove: the gateway relies on them.
const PROTECTED: [&str; 2] = ["host", "content-length"];

/// Removes hop-by-hop headers and the names `Connection` lists (except [`PROTECTED`]). With
/// `keep_te_trailers`, `TE: trailers` survives.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_te_trailers: bool) {
    // Most messages carry none: one pass over the names, no lookups.
    if !headers.keys().any(|n| HOP_BY_HOP.contains(&n.as_str())) {
        return;
    }
    let listed: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .filter(|s| !s.is_empty() && !PROTECTED.contains(&s.as_str()))
        .collect();
    let te_trailers = keep_te_trailers
        && headers.get_all(header::TE).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers")))
        });
    for name in listed {
        headers.remove(name.as_str());
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The request's host, lowercase, without port or trailing dot: from `Host` (HTTP/1.1) or
/// `:authority` (HTTP/2, absolute-form), refusing any disagreement between them.
pub fn request_host(headers: &HeaderMap, uri: &Uri, version: Version) -> Result<String, Reject> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(Reject::DuplicateHost);
    }
    let host_header = match host_header {
        Some(v) => Some(v.to_str().map_err(|_| Reject::InvalidHost)?),
        None => None,
    };
    let authority = uri.authority().map(|a| a.as_str());
    let raw = match (host_header, authority) {
        (Some(h), Some(a)) if !h.eq_ignore_ascii_case(a) => {
            return Err(Reject::HostMismatch { http2: version == Version::HTTP_2 });
        }
        (Some(h), _) => h,
        (None, Some(a)) => a,
        (None, None) => return Err(Reject::MissingHost),
    };
    parse_host(raw).ok_or(Reject::InvalidHost)
}

/// `name[:port]` or `[v6][:port]` → lowercase name without the trailing dot; `None` for
/// anything else (userinfo, spaces, empty).
fn parse_host(raw: &str) -> Option<String> {
    if let Some(rest) = raw.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        return Some(v6.to_ascii_lowercase());
    }
    let host = match raw.rsplit_once(':') {
        Some((h, port)) if is_port(port) => h,
        Some(_) => return None,
        None => raw,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let valid = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    valid.then(|| host.to_ascii_lowercase())
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// Writes the forwarding headers after the inbound ones were stripped. `trusted_chain` holds a
/// trusted proxy's inbound `X-Forwarded-For` values (appended to, not replaced).
pub fn write_forwarding(
    headers: &mut HeaderMap,
    uri: &Uri,
    peer_ip: &HeaderValue,
    host: &str,
    trusted_chain: Option<Vec<HeaderValue>>,
) {
    // HTTP/2 and absolute-form requests carry the host in the authority; an HTTP/1.1 upstream
    // needs a Host header, and it must be the one the gateway routed by.
    if !headers.contains_key(header::HOST)
        && let Some(authority) =
            uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        headers.insert(header::HOST, authority);
    }
    let xff = HeaderName::from_static("x-forwarded-for");
    match trusted_chain {
        Some(chain) if !chain.is_empty() => {
            for v in chain {
                headers.append(xff.clone(), v);
            }
            headers.append(xff, peer_ip.clone());
        }
        _ => {
            headers.insert(xff, peer_ip.clone());
        }
    }
    headers.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static("https"));
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// `Connection` can remove the client's own headers, never Host or Content-Length; the
    /// hop-by-hop set goes; `TE: trailers` stays when asked.
    #[test]
    fn connection_tokens_cannot_remove_protected_headers() {
        let mut h = headers(&[
            ("host", "api.example.test"),
            ("content-length", "3"),
            ("connection", "close, Host, content-length, x-client-subject, X-Forwarded-For"),
            ("x-client-subject", "CN=admin"),
            ("x-forwarded-for", "6.6.6.6"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers, gzip"),
            ("accept", "*/*"),
        ]);
        remove_hop_by_hop(&mut h, true);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["accept", "content-length", "host", "te"]);
        assert_eq!(h["te"], "trailers");
        let mut no_te = headers(&[("te", "trailers")]);
        remove_hop_by_hop(&mut no_te, false);
        assert!(no_te.is_empty());
    }

    /// Hosts are read once and every disagreement is refused.
    #[test]
    fn host_disagreements_are_refused() {
        let origin: Uri = "/x".parse().unwrap();
        let absolute: Uri = "https://api.example.test/x".parse().unwrap();
        let h = |v: &str| headers(&[("host", v)]);
        let v11 = Version::HTTP_11;
        assert_eq!(
            request_host(&h("API.example.test.:443"), &origin, v11).unwrap(),
            "api.example.test"
        );
        assert_eq!(request_host(&h("[::1]:8443"), &origin, v11).unwrap(), "::1");
        assert_eq!(request_host(&HeaderMap::new(), &absolute, v11).unwrap(), "api.example.test");
        assert_eq!(
            request_host(&h("api.example.test"), &absolute, v11).unwrap(),
            "api.example.test"
        );
        let two = headers(&[("host", "a.test"), ("host", "b.test")]);
        assert!(matches!(request_host(&two, &origin, v11), Err(Reject::DuplicateHost)));
        assert!(matches!(
            request_host(&h("admin.example.test"), &absolute, v11),
            Err(Reject::HostMismatch { http2: false })
        ));
        assert!(matches!(
            request_host(&h("admin.example.test"), &absolute, Version::HTTP_2),
            Err(Reject::HostMismatch { http2: true })
        ));
        assert!(matches!(request_host(&HeaderMap::new(), &origin, v11), Err(Reject::MissingHost)));
        for bad in ["user@host", "a b", "host:port", "", "[::1", "[zz]", "a/b"] {
            assert!(
                matches!(request_host(&h(bad), &origin, v11), Err(Reject::InvalidHost)),
                "{bad}"
            );
        }
    }

    /// X-Forwarded-For is replaced, or appended to for a trusted proxy.
    #[test]
    fn forwarded_for_is_replaced_unless_trusted() {
        let uri: Uri = "/".parse().unwrap();
        let peer = HeaderValue::from_static("10.0.0.9");
        let mut h = headers(&[("host", "a.test")]);
        write_forwarding(&mut h, &uri, &peer, "a.test", None);
        assert_eq!(h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(), vec!["10.0.0.9"]);
        let mut t = headers(&[("host", "a.test")]);
        let chain = vec![HeaderValue::from_static("1.2.3.4")];
        write_forwarding(&mut t, &uri, &peer, "a.test", Some(chain));
        assert_eq!(
            t.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            vec!["1.2.3.4", "10.0.0.9"]
        );
        assert_eq!(t["x-forwarded-proto"], "https");
    }
}
