//! Fuzz target bodies (cargo feature `fuzz`): each `pub fn(&[u8])` makes the call under test and
//! checks its oracle, so the libFuzzer targets in `fuzz/` and the stable replay test
//! (`tests/fuzz_replay.rs`) run identical code. See `fuzz/README.md`.
//!
//! This is test support: an oracle failure is what it exists to report, so it panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arbitrary::Unstructured;
use certgate_pki::chain_cache::{self, CachingVerifier};
use certgate_pki::identity::PeerIdentity;
use certgate_pki::testkit::TestPki;
use certgate_pki::verify::{TrustStore, VerifyPolicy};
use http::{HeaderMap, HeaderValue};
use rcgen::{CertifiedIssuer, KeyPair};
use rustls::ServerConnection;

use crate::config::raw::RawConfig;
use crate::http::headers::{ConnIdentity, HeaderFormat, StripSet};
use crate::http::path::{normalize, readings};
use crate::http::route::{PathMatching, Route, RouteTable};
use crate::http::upstream::Target;
use crate::tls::server::{ClientAuth, ClientCert, ListenerTls, certified_key};

// ---------------------------------------------------------------------------------------------
// config

/// TOML text → `RawConfig` → `config::build`, in a directory holding a TestPki (`root.crt`,
/// `server.crt`/`.key`, `client.crt`/`.key`, `crl.pem`). Every error names the file and a field
/// or a reason; a configuration that builds has every listener timeout at most one day.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(raw) = toml::from_str::<RawConfig>(text) else { return };
    match crate::config::build(raw, config_path()) {
        Err(errors) => {
            assert!(!errors.0.is_empty(), "a refused configuration with no error");
            for e in &errors.0 {
                assert!(!e.file.as_os_str().is_empty(), "an error names no file: {e:?}");
                assert!(!e.field.is_empty() || !e.reason.is_empty(), "an empty error: {e:?}");
            }
        }
        Ok(config) => {
            const DAY: Duration = Duration::from_secs(24 * 3600);
            for l in &config.listeners {
                let lim = &l.limits;
                for d in [
                    lim.handshake_timeout,
                    lim.header_read_timeout,
                    lim.idle_timeout,
                    lim.body_timeout,
                ] {
                    assert!(!d.is_zero() && d <= DAY, "listener {:?}: timeout {d:?}", l.name);
                }
            }
        }
    }
}

/// `certgate.toml` in a directory, made once, that holds the files a configuration can name.
fn config_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("certgate-fuzz-config").tempdir().unwrap();
        let dir = dir.keep();
        let pki = TestPki::new();
        pki.write_root(&dir);
        pki.server(&["localhost", "127.0.0.1"]).write(&dir, "server");
        pki.client("client", &["spiffe://example.test/client"]).write(&dir, "client");
        std::fs::write(dir.join("crl.pem"), pki.crl(&[])).unwrap();
        dir.join("certgate.toml")
    })
}

// ---------------------------------------------------------------------------------------------
// identity_headers

/// Fragments that break naive header formats.
const HOSTILE: &[&str] = &[
    "\"",
    "\\",
    ",",
    ";",
    "=",
    "\r",
    "\n",
    "\0",
    "\t",
    " ",
    "+",
    "#",
    "<",
    ">",
    "%",
    "\u{7f}",
    "é",
    "\u{2028}",
    "💥",
    "URI=spiffe://evil",
    "\";URI=spiffe://evil",
    ",Hash=00",
    "Subject=\"CN=evil\"",
    "\\\"",
    "CN=evil,",
    "spiffe://x/a",
    "x.example.test",
];

/// A certificate with hostile subject and SAN values, signed by a test CA: every identity
/// header format stays one well-formed value. No value holds CR, LF or NUL; XFCC parses (with
/// an independent reader of Envoy's grammar) to one element whose `URI`, `DNS` and `Subject`
/// are the certificate's; `Client-Cert` is an RFC 8941 byte sequence equal to the DER; the
/// nginx-style SAN lists are JSON arrays of the SANs.
pub fn identity_headers(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(spec) = CertSpec::arbitrary(&mut u) else { return };
    let issuer = header_issuer();
    let Some(der) = spec.sign(issuer) else { return };
    let Ok(id) = PeerIdentity::from_der(&der) else { return };
    assert_eq!(id.sans.uri, spec.uri, "URI SANs read back differently");
    assert_eq!(id.sans.dns, spec.dns, "DNS SANs read back differently");
    let ca_der = issuer.ca.der().clone();
    let client = ClientCert::Verified {
        identity: Arc::new(id.clone()),
        intermediates: vec![ca_der.clone()],
    };
    let conn = ConnIdentity::new(client, false);
    let formats = [
        HeaderFormat::Nginx(Box::default()),
        HeaderFormat::Xfcc,
        HeaderFormat::Rfc9440,
        HeaderFormat::None,
    ];
    let mut all = HeaderMap::new();
    for format in &formats {
        let mut h = HeaderMap::new();
        conn.write(format, &mut h);
        for (name, value) in &h {
            assert!(
                !value.as_bytes().iter().any(|b| matches!(b, b'\r' | b'\n' | b'\0')),
                "{name}: CR, LF or NUL in {value:?}"
            );
        }
        all.extend(h);
    }

    // XFCC.
    let has_control = |s: &str| s.chars().any(|c| c.is_ascii_control() && c != '\t');
    match all.get("x-forwarded-client-cert") {
        None => assert!(
            has_control(&id.subject)
                || id.sans.uri.iter().any(|v| has_control(v))
                || id.sans.dns.iter().any(|v| has_control(v)),
            "XFCC left out though every value can be written"
        ),
        Some(v) => {
            let text = std::str::from_utf8(v.as_bytes()).expect("XFCC is UTF-8");
            let elements = parse_xfcc(text).unwrap_or_else(|e| panic!("XFCC {text:?}: {e}"));
            assert_eq!(elements.len(), 1, "XFCC {text:?} is not one element");
            let values = |key: &str| -> Vec<String> {
                elements[0].iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect()
            };
            assert_eq!(values("URI"), spec.uri, "XFCC URI of {text:?}");
            assert_eq!(values("DNS"), spec.dns, "XFCC DNS of {text:?}");
            assert_eq!(values("Subject"), vec![id.subject.clone()], "XFCC Subject of {text:?}");
            assert_eq!(values("Hash"), vec![id.fingerprint_sha256.clone()]);
            assert_eq!(values("Cert"), vec![id.escaped_pem()]);
            for (k, _) in &elements[0] {
                assert!(["Hash", "Cert", "Subject", "URI", "DNS"].contains(&k.as_str()), "{k}");
            }
        }
    }

    // RFC 9440, read with the sfv crate.
    let cert = all.get("client-cert").expect("Client-Cert is always written");
    let item: sfv::Item = sfv::Parser::new(cert.as_bytes()).parse().expect("Client-Cert parses");
    assert_eq!(item.bare_item.as_byte_sequence(), Some(der.as_slice()));
    let chain = all.get("client-cert-chain").expect("Client-Cert-Chain is written");
    let list: sfv::List = sfv::Parser::new(chain.as_bytes()).parse().expect("chain parses");
    assert_eq!(list.len(), 1);
    match &list[0] {
        sfv::ListEntry::Item(i) => {
            assert_eq!(i.bare_item.as_byte_sequence(), Some(ca_der.as_ref()));
        }
        sfv::ListEntry::InnerList(_) => panic!("Client-Cert-Chain holds an inner list"),
    }

    // nginx style.
    assert_eq!(all.get("x-client-verify").map(HeaderValue::as_bytes), Some(&b"SUCCESS"[..]));
    match all.get("x-client-subject") {
        Some(v) => assert_eq!(v.as_bytes(), id.subject.as_bytes()),
        None => assert!(has_control(&id.subject), "subject left out though it can be written"),
    }
    for (name, sans) in [("x-client-san-uri", &spec.uri), ("x-client-san-dns", &spec.dns)] {
        match all.get(name) {
            None => assert!(sans.is_empty(), "{name} left out"),
            Some(v) => {
                let list: Vec<String> = serde_json::from_slice(v.as_bytes()).expect("JSON list");
                assert_eq!(&list, sans, "{name}");
            }
        }
    }
}

/// What the fuzzer chose to put in a certificate.
#[derive(Debug)]
struct CertSpec {
    cn: Option<String>,
    o: Vec<String>,
    ou: Vec<String>,
    uri: Vec<String>,
    dns: Vec<String>,
    email: Vec<String>,
}

impl CertSpec {
    fn arbitrary(u: &mut Unstructured<'_>) -> arbitrary::Result<CertSpec> {
        let texts = |u: &mut Unstructured<'_>, max: u32, ascii: bool| {
            let n = u.int_in_range(0..=max)?;
            (0..n).map(|_| hostile_text(u, ascii)).collect::<arbitrary::Result<Vec<_>>>()
        };
        Ok(CertSpec {
            cn: if u.arbitrary()? { Some(hostile_text(u, false)?) } else { None },
            o: texts(u, 2, false)?,
            ou: texts(u, 2, false)?,
            uri: texts(u, 3, true)?,
            dns: texts(u, 3, true)?,
            email: texts(u, 1, true)?,
        })
    }

    /// The DER of a client certificate with these values, or `None` when rcgen refuses them.
    fn sign(&self, issuer: &HeaderIssuer) -> Option<Vec<u8>> {
        use rcgen::{DnType, DnValue, SanType, string::Ia5String};
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = &self.cn {
            params.distinguished_name.push(DnType::CommonName, DnValue::Utf8String(cn.clone()));
        }
        for o in &self.o {
            params
                .distinguished_name
                .push(DnType::OrganizationName, DnValue::Utf8String(o.clone()));
        }
        for ou in &self.ou {
            params
                .distinguished_name
                .push(DnType::OrganizationalUnitName, DnValue::Utf8String(ou.clone()));
        }
        let ia5 = |s: &String| Ia5String::try_from(s.clone()).ok();
        for v in &self.uri {
            params.subject_alt_names.push(SanType::URI(ia5(v)?));
        }
        for v in &self.dns {
            params.subject_alt_names.push(SanType::DnsName(ia5(v)?));
        }
        for v in &self.email {
            params.subject_alt_names.push(SanType::Rfc822Name(ia5(v)?));
        }
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&issuer.leaf_key, &issuer.ca).ok()?;
        Some(cert.der().to_vec())
    }
}

/// A string of hostile fragments and arbitrary text; ASCII only when `ascii` (IA5String).
fn hostile_text(u: &mut Unstructured<'_>, ascii: bool) -> arbitrary::Result<String> {
    let mut out = String::new();
    if ascii && u.arbitrary()? {
        out.push_str("spiffe://x/");
    }
    for _ in 0..u.int_in_range(0..=6)? {
        if u.arbitrary()? {
            out.push_str(u.choose(HOSTILE)?);
        } else {
            let s: &str = u.arbitrary()?;
            out.extend(s.chars().take(16));
        }
    }
    if ascii {
        out.retain(|c| c.is_ascii());
    }
    Ok(out)
}

/// A test CA and one leaf key, made once (key generation would dominate each run).
struct HeaderIssuer {
    ca: CertifiedIssuer<'static, KeyPair>,
    leaf_key: KeyPair,
}

fn header_issuer() -> &'static HeaderIssuer {
    static ISSUER: OnceLock<HeaderIssuer> = OnceLock::new();
    ISSUER.get_or_init(|| {
        let now = time::OffsetDateTime::now_utc();
        let subject = certgate_pki::issue::Subject::cn("certgate fuzz CA");
        let params = certgate_pki::issue::root_params(
            &subject,
            None,
            now - time::Duration::days(1),
            now + time::Duration::days(365),
        )
        .unwrap();
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        HeaderIssuer { ca, leaf_key: KeyPair::generate().unwrap() }
    })
}

/// One XFCC element: its key/value pairs in order.
type XfccElement = Vec<(String, String)>;

/// A minimal reader of Envoy's `x-forwarded-client-cert` grammar, written from its
/// documentation and independent of the writer in `http::headers`: elements separated by `,`,
/// key/value pairs by `;`, `key=value`; a value is either bare (no `,`, `;`, `=`, `"` or `\`)
/// or double-quoted, with `\"` and `\\` the only escapes inside the quotes.
fn parse_xfcc(s: &str) -> Result<Vec<XfccElement>, String> {
    let mut elements = Vec::new();
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut key = String::new();
        loop {
            match chars.next() {
                Some('=') => break,
                Some(c @ (',' | ';' | '"' | '\\')) => return Err(format!("{c:?} in a key")),
                Some(c) => key.push(c),
                None => return Err(format!("key {key:?} has no '='")),
            }
        }
        if key.is_empty() {
            return Err("an empty key".into());
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c @ ('"' | '\\')) => value.push(c),
                        other => return Err(format!("bad escape \\{other:?}")),
                    },
                    Some(c) => value.push(c),
                    None => return Err("unterminated quoted value".into()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                match c {
                    ',' | ';' => break,
                    '=' | '"' | '\\' => return Err(format!("{c:?} in a bare value")),
                    _ => value.push(c),
                }
                chars.next();
            }
        }
        pairs.push((key, value));
        match chars.next() {
            None => {
                elements.push(pairs);
                return Ok(elements);
            }
            Some(';') => {}
            Some(',') => elements.push(std::mem::take(&mut pairs)),
            Some(c) => return Err(format!("{c:?} after a value")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// path

/// Path readings and routing. `normalize` is idempotent; when every reading agrees on a route,
/// the fully normalized path finds that same route; a path with `%2F` or `%5C` (any case) has
/// no reading, and no reading has more `/` than the raw path (no decoded separator).
pub fn path(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let raw = raw.as_ref();
    let host = "fuzz.test";
    let table = route_table();

    if let Ok(once) = normalize(raw) {
        let text = String::from_utf8_lossy(&once);
        let twice = normalize(&text);
        assert_eq!(twice.as_deref(), Ok(text.as_bytes()), "normalize is not idempotent on {raw:?}");
    }
    let lower = raw.to_ascii_lowercase();
    let Ok(r) = readings(raw) else { return };
    assert!(
        !lower.contains("%2f") && !lower.contains("%5c"),
        "an encoded separator has a reading: {raw:?}"
    );
    let slashes = |p: &[u8]| p.iter().filter(|b| **b == b'/').count();
    for reading in r.all() {
        assert!(slashes(reading) <= slashes(raw.as_bytes()), "a reading of {raw:?} gained a '/'");
    }
    if let Ok(Some(route)) = table.route(host, &r) {
        let normal = normalize(raw).expect("a path with readings normalizes");
        let found = table.find(host, &normal).expect("the normalized path finds no route");
        assert!(
            Arc::ptr_eq(route, found),
            "{raw:?} is routed to {} but its normal form {:?} to {}",
            route.label(),
            String::from_utf8_lossy(&normal),
            found.label()
        );
    }
}

/// `/`, `/admin` (client certificate), `/api/`, and `/Admin2` matched as Windows does.
fn route_table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let route = |path: &str, require_cert: bool, matching: PathMatching| {
            Arc::new(Route {
                name: None,
                host: None,
                path: path.into(),
                matching,
                target: Target::Echo,
                require_cert,
                acl: None,
                headers: Arc::new(HeaderFormat::Nginx(Box::default())),
                max_body_bytes: None,
                upgrades: None,
                token: None,
                error_pages: None,
            })
        };
        let windows = PathMatching { ignore_case: true, ignore_trailing_dots: true };
        let routes = vec![
            route("/", false, PathMatching::default()),
            route("/admin", true, PathMatching::default()),
            route("/api/", false, PathMatching::default()),
            route("/Admin2", true, windows),
        ];
        RouteTable::new(routes, Arc::new(StripSet::new(vec![])))
    })
}

// ---------------------------------------------------------------------------------------------
// client_hello

/// TLS records fed to a listener's server connection (client certificates optional): fed in
/// one piece and split at a position taken from the first byte, the outcome (error or not) is
/// the same. Never panics.
pub fn client_hello(data: &[u8]) {
    let config = listener_tls().config.clone();
    let whole = feed(ServerConnection::new(config.clone()).unwrap(), &[data]);
    let at = data.first().map_or(0, |b| usize::from(*b) * data.len() / 256);
    let (a, b) = data.split_at(at);
    let split = feed(ServerConnection::new(config).unwrap(), &[a, b]);
    assert_eq!(whole.is_err(), split.is_err(), "split at {at}: whole {whole:?}, split {split:?}");
}

/// Reads each chunk into the connection and processes what arrived; the first error ends it.
fn feed(mut conn: ServerConnection, chunks: &[&[u8]]) -> Result<(), String> {
    for chunk in chunks {
        let mut rest: &[u8] = chunk;
        while !rest.is_empty() {
            match conn.read_tls(&mut rest) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(format!("read_tls: {e}")),
            }
            conn.process_new_packets().map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// A listener's TLS: a TestPki server certificate, client certificates optional.
fn listener_tls() -> &'static ListenerTls {
    static TLS: OnceLock<ListenerTls> = OnceLock::new();
    TLS.get_or_init(|| {
        let pki = TestPki::new();
        let server = pki.server(&["localhost"]);
        let key = certified_key(server.chain_der(), server.key_der()).unwrap();
        let store = TrustStore::from_der(vec![pki.root_der()], vec![]).unwrap();
        let verifier = Arc::new(CachingVerifier::new(
            store,
            VerifyPolicy::client(),
            chain_cache::DEFAULT_CAPACITY,
        ));
        ListenerTls::new(vec![key], ClientAuth::Optional(verifier), false).unwrap()
    })
}

// ---------------------------------------------------------------------------------------------
// error_page

/// Error page templates and `Accept`: the input is a template, a NUL, and a value. A value
/// never adds markup to an HTML page (as many `<`, `>` and `"` as with an empty value), and a
/// JSON template that is JSON when filled with the hostile sample (as load time checks) stays
/// JSON with any value, which reads back unchanged. Reading the value as `Accept` never
/// panics.
pub fn error_page(data: &[u8]) {
    use crate::http::error_page::{JSON_SAMPLE, Language, Template, wanted};

    let text = String::from_utf8_lossy(data);
    let (template, value) = text.split_once('\0').unwrap_or((&text, ""));
    if let Ok(value) = http::HeaderValue::from_str(value) {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::ACCEPT, value);
        let _ = wanted(&headers);
    }
    let Ok(t) = Template::parse(template) else { return };
    let markup = |s: &str| s.chars().filter(|c| matches!(c, '<' | '>' | '"')).count();
    let empty = t.render(Language::Html, 400, "", "");
    let filled = t.render(Language::Html, 400, value, value);
    assert_eq!(markup(&empty), markup(&filled), "a value added markup: {filled:?}");
    let sample = t.render(Language::Json, 495, JSON_SAMPLE, JSON_SAMPLE);
    // Only a template that puts the values somewhere (rendering them changes the page) and
    // is JSON with the hostile sample, as load time requires.
    let bare = t.render(Language::Json, 495, "", "");
    if serde_json::from_str::<serde_json::Value>(&sample).is_err() || sample == bare {
        return;
    }
    let filled = t.render(Language::Json, 495, value, value);
    let parsed: serde_json::Value =
        serde_json::from_str(&filled).unwrap_or_else(|e| panic!("{e}: {filled:?}"));
    assert!(holds(&parsed, value), "{value:?} does not read back from {filled:?}");
}

/// Whether a string (or key) of `v` contains `needle`.
fn holds(v: &serde_json::Value, needle: &str) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains(needle),
        serde_json::Value::Array(items) => items.iter().any(|i| holds(i, needle)),
        serde_json::Value::Object(map) => {
            map.iter().any(|(k, v)| k.contains(needle) || holds(v, needle))
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// passthrough_hello

/// The passthrough ClientHello reader: fed in one piece or in pieces (sizes from the first
/// byte), it accepts with the same SNI or refuses both times, and the bytes it keeps for a relay are
/// exactly a prefix of what was sent. Never panics.
pub fn passthrough_hello(data: &[u8]) {
    use crate::tls::passthrough::read_client_hello;

    let step = data.first().map_or(1, |b| usize::from(*b % 64) + 1);
    let whole = read_all(data, data.len().max(1));
    let pieces = read_all(data, step);
    // Accepted with the same SNI, or refused either way (the reason may differ by where the
    // bytes ran out).
    assert_eq!(whole.0.ok(), pieces.0.ok(), "verdict differs in pieces of {step}");
    for kept in [&whole.1, &pieces.1] {
        assert!(data.starts_with(kept), "kept bytes are not what was sent");
    }

    /// (verdict with the SNI, bytes kept) from reading `data` in reads of at most `step`.
    fn read_all(data: &[u8], step: usize) -> (Result<Option<String>, &'static str>, Vec<u8>) {
        let mut reader = Pieces { data, step };
        match poll_ready(read_client_hello(&mut reader, true)) {
            Some(Ok((accepted, kept))) => {
                let sni = accepted.client_hello().server_name().map(str::to_owned);
                (Ok(sni), kept)
            }
            Some(Err(e)) => (Err(e.outcome()), Vec::new()),
            None => (Err("pending"), Vec::new()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// proxy_header

/// The PROXY protocol header reader (v1 and v2): fed whole or in reads of 1–64 bytes, it
/// gives the same address or refuses both times, never reads past the header (what follows
/// is left for TLS), and never panics.
pub fn proxy_header(data: &[u8]) {
    let step = data.first().map_or(1, |b| usize::from(*b % 64) + 1);
    let whole = read(data, data.len().max(1));
    let pieces = read(data, step);
    assert_eq!(whole.0, pieces.0, "verdict differs in pieces of {step}");
    assert_eq!(whole.1, pieces.1, "consumed differs in pieces of {step}");
    if whole.0.is_some() {
        assert!(whole.1 <= data.len());
    }

    /// (address if a header was read, bytes consumed).
    fn read(data: &[u8], step: usize) -> (Option<Option<std::net::SocketAddr>>, usize) {
        let mut reader = Pieces { data, step };
        let verdict =
            poll_ready(crate::proxy_protocol::read_header(&mut reader)).and_then(Result::ok);
        (verdict, data.len() - reader.data.len())
    }
}

// ---------------------------------------------------------------------------------------------
// in-memory readers for the connection-reading targets

/// An in-memory connection that hands out at most `step` bytes per read, then EOF.
struct Pieces<'a> {
    data: &'a [u8],
    step: usize,
}

impl tokio::io::AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.step.min(self.data.len()).min(buf.remaining());
        let (now, rest) = self.data.split_at(n);
        buf.put_slice(now);
        self.data = rest;
        std::task::Poll::Ready(Ok(()))
    }
}

/// Polls `fut` once: a reader over [`Pieces`] is always ready, so one poll runs it to its
/// end. `None` if it was not done.
fn poll_ready<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

// ---------------------------------------------------------------------------------------------
// oauth

/// The token check and the OAuth parsers: the input is an `Authorization` value, a NUL, a
/// token-endpoint form body, a NUL, a distinguished name. The form and the DN parse or fail
/// without panicking (a parsed DN compares with a fixed certificate). The Authorization value
/// goes through a route's whole token check (bearer parsing, JWT verification with a fixed
/// key, binding, scope): it passes only when it carries the one token that key signed for the
/// connection's certificate. Every other input is refused with a 400, 401 or 403.
pub fn oauth(data: &[u8]) {
    oauth_passes(data);
}

/// [`oauth`], saying whether the Authorization value passed the token check.
pub fn oauth_passes(data: &[u8]) -> bool {
    use certgate_token::form::Form;

    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\0');
    let (authorization, form, dn) =
        (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if let Ok(form) = Form::parse(form.as_bytes()) {
        for name in ["grant_type", "client_id", "scope", "token"] {
            assert!(form.get(name).is_none_or(|v| !v.is_empty()));
        }
    }
    // The same text as a one-time token file, whose claims a managed certificate asks for.
    if let Ok((sub, _sans)) = crate::managed::token_claims(authorization) {
        assert!(!sub.is_empty());
    }
    let fixture = oauth_fixture();
    if let Ok(pattern) = certgate_pki::dn_match::DnPattern::parse(dn) {
        let _ = pattern.compare_cert(&fixture.leaf_der);
    }
    let Ok(value) = HeaderValue::from_str(authorization) else { return false };
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, value);
    let outcome =
        fixture.runtime.block_on(fixture.check.check(&headers, None, Some(fixture.x5t.as_str())));
    match outcome {
        Ok(passed) => {
            let token = authorization.trim()[7..].trim();
            assert_eq!(token, fixture.token, "a token the key never signed passed");
            assert_eq!(passed.verified.sub, "payments");
            true
        }
        Err(reject) => {
            let status = reject.answer().0.as_u16();
            assert!(matches!(status, 400 | 401 | 403), "{status} for {authorization:?}");
            false
        }
    }
}

/// An input whose Authorization value carries the fixture's signed token (it passes).
pub fn oauth_signed_input() -> Vec<u8> {
    format!("Bearer {}\0grant_type=client_credentials\0CN=payments", oauth_fixture().token)
        .into_bytes()
}

struct OauthFixture {
    runtime: tokio::runtime::Runtime,
    check: crate::oauth::check::TokenCheck,
    /// The one token that passes, and the certificate it is bound to.
    token: String,
    x5t: String,
    leaf_der: Vec<u8>,
}

fn oauth_fixture() -> &'static OauthFixture {
    use certgate_token::jwt::{AccessClaims, KeySet, Verifier};
    use certgate_token::keys::{KeyState, Keyring, SigningKey};
    static FIXTURE: OnceLock<OauthFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let pki = TestPki::new();
        let leaf = pki.client("payments", &["spiffe://example.org/payments"]);
        let identity = PeerIdentity::from_der(&leaf.der).unwrap();
        let pem = KeyPair::generate().unwrap().serialize_pem();
        let key = SigningKey::from_pem(pem.as_bytes(), None, KeyState::Active).unwrap();
        let ring = Keyring::new(vec![key], 300, None, 0).unwrap();
        let claims = AccessClaims {
            issuer: "https://auth.example.com",
            client_id: "payments",
            audience: &["https://api.example.com".into()],
            scopes: &["accounts:read".into()],
            issued_at: 0,
            // Far in the future: the fixture outlives any fuzz run.
            expires_at: 4_000_000_000,
            jti: "fuzz",
            x5t_s256: &identity.x5t_s256,
        }
        .to_json();
        let token = ring.active().sign(&claims, "at+jwt").unwrap();
        let verifier = Verifier {
            issuer: "https://auth.example.com".into(),
            audience: vec!["https://api.example.com".into()],
            algorithms: vec![ring.active().alg],
            leeway: 30,
            require_at_jwt: true,
        };
        let check = crate::oauth::check::TokenCheck::new(
            verifier,
            crate::oauth::check::Keys::Fixed(KeySet::from_keyring(&ring, 0)),
            None,
            vec!["accounts:read".into()],
            true,
            "api".into(),
            Duration::from_secs(60),
            64,
        );
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        OauthFixture {
            runtime,
            check,
            token,
            x5t: identity.x5t_s256.clone(),
            leaf_der: leaf.der.to_vec(),
        }
    })
}
