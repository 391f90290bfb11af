//! Routes by host and path prefix, looked up in a table built once at load time: a hash map
//! by exact host, then `*.parent` wildcard hosts, then routes for any host; within a host, the
//! longest matching path prefix wins. Prefixes match whole path segments: `/admin` matches
//! `/admin` and `/admin/x`, not `/administrator`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::http::authz::Acl;
use crate::http::headers::{HeaderFormat, StripSet};
use crate::http::upstream::Upstream;

/// One route.
#[derive(Clone)]
pub struct Route {
    /// Lowercase host (`api.example.com` or `*.example.com`); `None`: any host.
    pub host: Option<String>,
    pub path: String,
    pub upstream: Arc<Upstream>,
    /// Whether a verified client certificate is needed (496/495 otherwise).
    pub require_cert: bool,
    /// Who may pass; `None` with `require_cert`: any verified certificate.
    pub acl: Option<Acl>,
    pub headers: Arc<HeaderFormat>,
}

/// The routes of one listener.
pub struct RouteTable {
    exact: HashMap<String, Vec<Arc<Route>>>,
    wildcard: HashMap<String, Vec<Arc<Route>>>,
    any_host: Vec<Arc<Route>>,
    /// Inbound headers removed from every request on this listener.
    pub strip: Arc<StripSet>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>, strip: Arc<StripSet>) -> RouteTable {
        let mut table = RouteTable {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            any_host: Vec::new(),
            strip,
        };
        for route in routes {
            let route = Arc::new(route);
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

    /// The route for `host` (lowercase, without port) and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
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
}

/// The first route of `list` (sorted longest prefix first) whose prefix matches `path`.
fn longest_prefix<'a>(list: &'a [Arc<Route>], path: &str) -> Option<&'a Arc<Route>> {
    list.iter().find(|r| prefix_matches(&r.path, path))
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" || prefix == path {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// Whether a path could mean different things to the gateway and the upstream (dot segments,
/// empty segments, encoded `/`, `\` or `.`): such requests are refused, so a route's policy
/// cannot be sidestepped by a path the upstream normalizes differently.
pub fn is_ambiguous(path: &str) -> bool {
    if path.contains("//") || path.contains('\\') {
        return true;
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return true;
    }
    let lower = path.to_ascii_lowercase();
    ["%2e", "%2f", "%5c", "%00"].iter().any(|enc| lower.contains(enc))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prefixes match whole segments.
    #[test]
    fn prefix_matches_whole_segments() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/admin", "/admin"));
        assert!(prefix_matches("/admin", "/admin/users"));
        assert!(!prefix_matches("/admin", "/administrator"));
        assert!(prefix_matches("/api/", "/api/v1"));
        assert!(!prefix_matches("/api/", "/api"));
    }

    /// Paths an upstream might normalize differently are ambiguous.
    #[test]
    fn ambiguous_paths_are_detected() {
        for p in ["/public/../admin", "//admin", "/a/./b", "/%2e%2e/admin", "/admin%2Fx", "/a\\b"] {
            assert!(is_ambiguous(p), "{p}");
        }
        for p in ["/", "/admin/users", "/a.b/c..d", "/x%20y"] {
            assert!(!is_ambiguous(p), "{p}");
        }
    }
}
