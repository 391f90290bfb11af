//! One view of the path: the readings an upstream could give a request path, so that routing
//! and policy can insist they all lead to the same route.
//!
//! Upstreams read paths differently. Flask, Express and Go percent-decode the whole path;
//! servlet containers (Tomcat, Jetty, Spring) drop `;parameters` from each segment; most
//! resolve `.` and `..` segments and merge repeated `/`. A path that the gateway routes one way
//! and the upstream reads another way walks around the route's policy (`/%61dmin`,
//! `/admin;x=1`, `/x/..;/admin` reaching `/admin` through an open `/` route). So:
//!
//! - Some encodings have no safe reading at all and are refused outright ([`PathError`]):
//!   an encoded `/` or `\`, an encoded control character or NUL, a raw `\`, a `%` that does
//!   not start a valid escape, a path encoded twice (`%252e`, `%25%32e`), `..` above the root,
//!   and a request target that is not a path (`*`, authority-form).
//! - Otherwise [`readings`] gives the raw path and its normalized readings (percent-decoded
//!   except `%25`, which stays encoded so that a reading reads as itself again; dot segments
//!   resolved, repeated `/` merged; with and without `;parameters`), and the router must find
//!   the same route for every reading. The request is forwarded with the path exactly as the
//!   client sent it, so signed URLs and `;jsessionid` keep working.
//!
//! The common case costs one scan: a path without `%`, `;`, `//` or dot segments has only one
//! reading.

use std::borrow::Cow;
use std::fmt;

/// Why a request path is refused before routing (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The request target is not an absolute path (`*`, `host:port`, empty).
    NotAbsolute,
    /// A raw `\`: some upstreams read it as `/`.
    Backslash,
    /// `%2F` or `%5C`: some upstreams decode it into a separator.
    EncodedSeparator,
    /// An encoded control character or NUL (`%00`, `%0A`, `%7F`).
    EncodedControl,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%25` followed by two hex digits, plain or themselves encoded (`%2561`, `%25%36%31`): a
    /// path encoded twice, which an upstream that decodes twice reads differently.
    DoubleEncoded,
    /// A `..` segment that climbs above the root.
    AboveRoot,
}

impl PathError {
    /// A stable code for logs and metrics.
    pub fn code(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path_not_absolute",
            PathError::Backslash => "path_backslash",
            PathError::EncodedSeparator => "path_encoded_separator",
            PathError::EncodedControl => "path_encoded_control",
            PathError::BadEscape => "path_bad_escape",
            PathError::DoubleEncoded => "path_double_encoded",
            PathError::AboveRoot => "path_above_root",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "the request target is not a path starting with '/'",
            PathError::Backslash => "the path contains '\\', which some servers read as '/'",
            PathError::EncodedSeparator => {
                "the path contains an encoded '/' or '\\' (%2F, %5C), which some servers decode \
                 into a separator"
            }
            PathError::EncodedControl => {
                "the path contains an encoded control character or NUL (%00-%1F, %7F)"
            }
            PathError::BadEscape => {
                "the path contains a '%' that is not followed by two hex digits"
            }
            PathError::DoubleEncoded => {
                "the path is percent-encoded twice (%25 followed by two hex digits)"
            }
            PathError::AboveRoot => "the path climbs above the root with '..'",
        })
    }
}

/// The readings of one path: the raw path first, then each distinct normalized reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readings<'a> {
    pub raw: &'a str,
    /// Normalized readings that differ from `raw` (none for an already-normal path).
    pub normalized: Vec<Cow<'a, [u8]>>,
}

impl Readings<'_> {
    /// Every reading as bytes, the raw path first.
    pub fn all(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.raw.as_bytes()).chain(self.normalized.iter().map(|c| c.as_ref()))
    }
}

/// The readings of `raw` (the path of the request target, without the query), or the reason
/// it has no safe reading.
pub fn readings(raw: &str) -> Result<Readings<'_>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if bytes.contains(&b'\\') {
        return Err(PathError::Backslash);
    }
    if is_plain(bytes) {
        return Ok(Readings { raw, normalized: Vec::new() });
    }
    let decoded = decode(bytes)?;
    let mut normalized: Vec<Cow<'_, [u8]>> = Vec::with_capacity(2);
    for strip_params in [false, true] {
        let reading = resolve(&decoded, strip_params)?;
        if reading != bytes && !normalized.iter().any(|r| r.as_ref() == reading.as_slice()) {
            normalized.push(Cow::Owned(reading));
        }
    }
    Ok(Readings { raw, normalized })
}

/// The fully normalized reading (decoded, parameters dropped, dot segments resolved, `/`
/// merged): what the most eager upstream acts on.
pub fn normalize(raw: &str) -> Result<Vec<u8>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if raw.contains('\\') {
        return Err(PathError::Backslash);
    }
    resolve(&decode(raw.as_bytes())?, true)
}

/// Whether a path is its own only reading: no escapes, no parameters, no empty or dot
/// segments.
fn is_plain(path: &[u8]) -> bool {
    if path.iter().any(|b| matches!(b, b'%' | b';')) {
        return false;
    }
    // Segments after the leading '/': none may be empty (except a final one: "/a/"), "." or
    // "..".
    let mut segments = path[1..].split(|b| *b == b'/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if (seg.is_empty() && !last) || seg == b"." || seg == b".." {
            return false;
        }
    }
    true
}

/// Percent-decodes every escape but `%25`, refusing those without a safe reading.
fn decode(path: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) =
            (path.get(i + 1).and_then(hex_value), path.get(i + 2).and_then(hex_value))
        else {
            return Err(PathError::BadEscape);
        };
        let byte = hi << 4 | lo;
        match byte {
            b'/' | b'\\' => return Err(PathError::EncodedSeparator),
            0..=0x1f | 0x7f => return Err(PathError::EncodedControl),
            // An encoded '%' stays encoded, so the decoded path decodes to itself again.
            b'%' => out.extend_from_slice(b"%25"),
            _ => out.push(byte),
        }
        i += 3;
    }
    // `%25` followed by two hex digits, whether those were written plainly (`%2561`) or
    // encoded themselves (`%25%36%31`): an upstream that decodes twice reads another path.
    let twice = out
        .windows(5)
        .any(|w| w.starts_with(b"%25") && hex_value(&w[3]).is_some() && hex_value(&w[4]).is_some());
    if twice {
        return Err(PathError::DoubleEncoded);
    }
    Ok(out)
}

fn hex_value(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Merges repeated `/`, optionally drops `;parameters` from each segment, and resolves `.` and
/// `..` (RFC 3986 section 5.2.4). A trailing `/` is kept.
fn resolve(decoded: &[u8], strip_params: bool) -> Result<Vec<u8>, PathError> {
    let mut stack: Vec<&[u8]> = Vec::new();
    let mut trailing_slash = false;
    for raw_seg in decoded.split(|b| *b == b'/').skip(1) {
        let seg = if strip_params {
            raw_seg.split(|b| *b == b';').next().unwrap_or(raw_seg)
        } else {
            raw_seg
        };
        trailing_slash = false;
        match seg {
            b"" | b"." => trailing_slash = true,
            b".." => {
                if stack.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = true;
            }
            _ => stack.push(seg),
        }
    }
    let mut out = Vec::with_capacity(decoded.len());
    for seg in &stack {
        out.push(b'/');
        out.extend_from_slice(seg);
    }
    if out.is_empty() || trailing_slash {
        out.push(b'/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings_of(raw: &str) -> Vec<String> {
        readings(raw).unwrap().all().map(|r| String::from_utf8_lossy(r).into_owned()).collect()
    }

    /// A plain path has one reading: itself.
    #[test]
    fn plain_paths_have_one_reading() {
        for p in ["/", "/admin", "/admin/", "/static/app.min.js", "/a.b/c..d/", "/x-y_z~"] {
            assert_eq!(readings_of(p), vec![p.to_string()], "{p}");
        }
    }

    /// Encoded unreserved characters, parameters, dot segments and repeated slashes all give
    /// the reading an upstream would act on.
    #[test]
    fn normalized_readings_match_what_upstreams_act_on() {
        assert_eq!(readings_of("/%61dmin"), vec!["/%61dmin", "/admin"]);
        assert_eq!(readings_of("/admin;x=1"), vec!["/admin;x=1", "/admin"]);
        assert_eq!(readings_of("/x/..;/admin"), vec!["/x/..;/admin", "/admin"]);
        assert_eq!(readings_of("//admin"), vec!["//admin", "/admin"]);
        assert_eq!(readings_of("/public/../admin"), vec!["/public/../admin", "/admin"]);
        assert_eq!(readings_of("/a/./b/"), vec!["/a/./b/", "/a/b/"]);
        assert_eq!(readings_of("/a%3Bx/b"), vec!["/a%3Bx/b", "/a;x/b", "/a/b"]);
    }

    /// Encodings without one safe reading are refused with the reason.
    #[test]
    fn unsafe_encodings_are_refused() {
        for (p, err) in [
            ("*", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("/a\\b", PathError::Backslash),
            ("/admin%2Fx", PathError::EncodedSeparator),
            ("/admin%2fx", PathError::EncodedSeparator),
            ("/a%5cb", PathError::EncodedSeparator),
            ("/a%00", PathError::EncodedControl),
            ("/a%0d%0aX-Evil:1", PathError::EncodedControl),
            ("/a%7f", PathError::EncodedControl),
            ("/a%", PathError::BadEscape),
            ("/a%zz", PathError::BadEscape),
            ("/a%2", PathError::BadEscape),
            ("/%252e%252e/admin", PathError::DoubleEncoded),
            ("/..", PathError::AboveRoot),
            ("/a/../../admin", PathError::AboveRoot),
            ("/%2e%2e/admin", PathError::AboveRoot),
        ] {
            assert_eq!(readings(p), Err(err), "{p:?}");
        }
    }

    /// An encoded '%' stays encoded in every reading, and one that a second decoding would
    /// turn into another escape is refused, however its hex digits were written.
    #[test]
    fn encoded_percent_never_decodes_into_an_escape() {
        assert_eq!(readings_of("/a%25zz"), vec!["/a%25zz"]);
        assert_eq!(readings_of("/%25/%7e"), vec!["/%25/%7e", "/%25/~"]);
        assert_eq!(normalize("/%25"), Ok(b"/%25".to_vec()));
        for p in ["/%2561dmin", "/%25%361dmin", "/%25%36%31dmin", "/%256%31dmin", "/%25%3561"] {
            assert_eq!(readings(p), Err(PathError::DoubleEncoded), "{p:?}");
        }
    }

    /// Normalizing a normalized path changes nothing.
    #[test]
    fn normalize_is_idempotent() {
        for p in ["/%61dmin", "/x/..;/admin", "//a//b/", "/a/./b/../c;p=1/d", "/%7euser/", "/%25"] {
            let once = normalize(p).unwrap();
            let twice = normalize(std::str::from_utf8(&once).unwrap()).unwrap();
            assert_eq!(once, twice, "{p}");
        }
    }
}
