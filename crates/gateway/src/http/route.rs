//! Routes by host and path prefix, looked up in a table built once at load time: a hash map
//! by exact host, then `*.parent` wildcard hosts, then routes for any host; within a host, the
//! longest matching path prefix wins. Prefixes match whole path segments: `/admin` matches
//! `/admin` and `/admin/x`, not `/administrator`.
//!
//! A request is routed by every reading of its path ([`crate::http::path::readings`]); they
//! must all find the same route, or the request is refused ([`RouteTable::route`]). A route
//! can also match case-insensitively or ignore trailing dots and spaces in segments, for
//! upstreams that read paths that way (IIS, Windows file servers).

use std::collections::HashMap;
use std::sync::Arc;

use crate::http::authz::Acl;
use crate::http::headers::{HeaderFormat, StripSet};
use crate::http::path::Readings;
use crate::http::upstream::Target;

/// One route.
pub struct Route {
    /// The name metrics use (`name` in the config); `None`: host and path.
    pub name: Option<String>,
    /// Lowercase host (`api.example.com` or `*.example.com`); `None`: any host.
    pub host: Option<String>,
    /// A normalized path prefix (checked at load time).
    pub path: String,
    pub matching: PathMatching,
    pub target: Target,
    /// Whether a verified client certificate is needed (496/495 otherwise).
    pub require_cert: bool,
    /// Who may pass; `None` with `require_cert`: any verified certificate.
    pub acl: Option<Acl>,
    pub headers: Arc<HeaderFormat>,
    /// Custom answers for this route's refusals, tried before the listener's.
    pub error_pages: Option<Arc<crate::http::error_page::ErrorPages>>,
    /// Largest request body accepted (413 beyond); `None`: no limit.
    pub max_body_bytes: Option<u64>,
    /// HTTP/1.1 upgrades forwarded (`upgrades`); `None`: none (`Upgrade` is removed).
    pub upgrades: Option<Arc<crate::http::upgrade::Upgrades>>,
    /// The access-token check (`[route.token]`); `None`: no token needed.
    pub token: Option<Arc<crate::oauth::check::TokenCheck>>,
}

impl Route {
    /// `host/path` as configured (`*` for any host), for logs.
    pub fn label(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        format!("{}{}", self.host.as_deref().unwrap_or("*"), self.path)
    }
}

/// How a route's path prefix is compared with request paths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathMatching {
    /// ASCII case is ignored (`/ADMIN` matches `/admin`), as IIS and Windows do.
    pub ignore_case: bool,
    /// Trailing `.` and ` ` of each request segment are ignored (`/admin.` matches `/admin`),
    /// as Windows file names do.
    pub ignore_trailing_dots: bool,
}

/// The routes of one listener.
pub struct RouteTable {
    exact: HashMap<String, Vec<Arc<Route>>>,
    wildcard: HashMap<String, Vec<Arc<Route>>>,
    any_host: Vec<Arc<Route>>,
    /// Inbound headers removed from every request on this listener.
    pub strip: Arc<StripSet>,
    /// Some route forwards WebSocket upgrades: HTTP/2 connections then offer extended
    /// CONNECT (RFC 8441).
    websocket: bool,
}

/// The readings of a request path lead to different routes (or some to none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    /// The reading that routes differently from the raw path, as text.
    pub reading: String,
}

impl RouteTable {
    pub fn new(routes: Vec<Arc<Route>>, strip: Arc<StripSet>) -> RouteTable {
        let mut table = RouteTable {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            any_host: Vec::new(),
            strip,
            websocket: false,
        };
        for route in routes {
            table.websocket |= route
                .upgrades
                .as_ref()
                .is_some_and(|u| u.protocols.iter().any(|p| p == "websocket"));
            match route.host.clone() {
                None => table.any_host.push(route),
                Some(h) => match h.strip_prefix("*.") {
                    Some(parent) => {
                        table.wildcard.entry(parent.to_string()).or_default().push(route)
                    }
                    None => table.exact.entry(h).or_default().push(route),
                },
            }
        }
        let by_length =
            |v: &mut Vec<Arc<Route>>| v.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
        table.exact.values_mut().for_each(by_length);
        table.wildcard.values_mut().for_each(by_length);
        by_length(&mut table.any_host);
        table
    }

    /// The route every reading of the path agrees on (`Ok(None)`: no route for any reading),
    /// or the first reading that disagrees with the raw path.
    pub fn route(
        &self,
        host: &str,
        readings: &Readings<'_>,
    ) -> Result<Option<&Arc<Route>>, Disagreement> {
        let chosen = self.find(host, readings.raw.as_bytes());
        for reading in &readings.normalized {
            let other = self.find(host, reading);
            let same = match (chosen, other) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if !same {
                return Err(Disagreement {
                    reading: String::from_utf8_lossy(reading).into_owned(),
                });
            }
        }
        Ok(chosen)
    }

    /// The route for `host` (lowercase, without port) and one reading of the path.
    pub fn find(&self, host: &str, path: &[u8]) -> Option<&Arc<Route>> {
        if let Some(r) = self.exact.get(host).and_then(|list| longest_prefix(list, path)) {
            return Some(r);
        }
        if let Some((_, parent)) = host.split_once('.')
            && let Some(r) = self.wildcard.get(parent).and_then(|list| longest_prefix(list, path))
        {
            return Some(r);
        }
        longest_prefix(&self.any_host, path)
    }

    /// Every route, for load-time checks.
    /// Whether some route forwards WebSocket upgrades.
    pub fn websocket(&self) -> bool {
        self.websocket
    }

    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.exact.values().chain(self.wildcard.values()).flatten().chain(&self.any_host)
    }
}

/// The first route of `list` (sorted longest prefix first) whose prefix matches `path`.
fn longest_prefix<'a>(list: &'a [Arc<Route>], path: &[u8]) -> Option<&'a Arc<Route>> {
    list.iter().find(|r| prefix_matches(r.path.as_bytes(), r.matching, path))
}

fn prefix_matches(prefix: &[u8], matching: PathMatching, path: &[u8]) -> bool {
    if prefix == b"/" {
        return true;
    }
    if matching == PathMatching::default() {
        if prefix == path {
            return true;
        }
        return match path.strip_prefix(prefix) {
            Some(rest) => prefix.ends_with(b"/") || rest.starts_with(b"/"),
            None => false,
        };
    }
    // Segment by segment, each request segment compared as the upstream would read it.
    let needs_more = prefix.ends_with(b"/");
    let prefix = prefix.strip_suffix(b"/").unwrap_or(prefix);
    let mut want = prefix.split(|b| *b == b'/').skip(1);
    let mut have = path.split(|b| *b == b'/').skip(1);
    loop {
        match (want.next(), have.next()) {
            (None, rest) => return !needs_more || rest.is_some(),
            (Some(_), None) => return false,
            (Some(w), Some(h)) => {
                let h = if matching.ignore_trailing_dots {
                    let end =
                        h.iter().rposition(|b| !matches!(b, b'.' | b' ')).map_or(0, |i| i + 1);
                    &h[..end]
                } else {
                    h
                };
                let equal = if matching.ignore_case { w.eq_ignore_ascii_case(h) } else { w == h };
                if !equal {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXACT: PathMatching = PathMatching { ignore_case: false, ignore_trailing_dots: false };
    const WINDOWS: PathMatching = PathMatching { ignore_case: true, ignore_trailing_dots: true };

    /// Prefixes match whole segments.
    #[test]
    fn prefix_matches_whole_segments() {
        for m in [EXACT, WINDOWS] {
            assert!(prefix_matches(b"/", m, b"/anything"));
            assert!(prefix_matches(b"/admin", m, b"/admin"));
            assert!(prefix_matches(b"/admin", m, b"/admin/users"));
            assert!(!prefix_matches(b"/admin", m, b"/administrator"));
            assert!(prefix_matches(b"/api/", m, b"/api/v1"));
            assert!(!prefix_matches(b"/api/", m, b"/api"));
        }
    }

    /// Case and trailing dots or spaces are ignored only where the route says so.
    #[test]
    fn windows_matching_ignores_case_and_trailing_dots() {
        for p in [&b"/ADMIN"[..], b"/Admin/x", b"/admin.", b"/admin. . /x", b"/admin "] {
            assert!(prefix_matches(b"/admin", WINDOWS, p), "{}", String::from_utf8_lossy(p));
            assert!(!prefix_matches(b"/admin", EXACT, p), "{}", String::from_utf8_lossy(p));
        }
        assert!(!prefix_matches(b"/admin", WINDOWS, b"/admin.x"));
    }
}
