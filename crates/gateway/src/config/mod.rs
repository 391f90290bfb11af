//! Configuration: the TOML file ([`raw`]) is read once and built into a [`Config`] whose types
//! cannot hold an invalid state. Building loads every certificate, key, CA and CRL it names and
//! reports every problem at once, each with the file, the field and the reason.

mod managed;
mod oauth;
pub mod raw;

pub use managed::{CrlSource, Fetched, ManagedSpec, fetched};

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use certgate_pki::error::with_causes;
use certgate_pki::verify::{DEFAULT_MAX_DEPTH, TrustStore, VerifyPolicy};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use certgate_pki::chain_cache::{self, CachingVerifier};

use crate::http::authz::Acl;
use crate::http::error_page::{
    ErrorPage, ErrorPages, GATEWAY_STATUSES, JSON_SAMPLE, Language, Template,
};
use crate::http::headers::{HeaderFormat, IdentityHeaderNames};
use crate::http::route::{PathMatching, Route, RouteTable};
use crate::http::upstream::{Target, Upstream, UpstreamSettings};
use crate::server::IpNet;
use crate::tls::passthrough::{NoSni, Passthrough, SniTable};
use crate::tls::server::SniPolicies;
use crate::tls::server::{ClientAuth, ListenerTls};

/// The longest timeout the configuration accepts: anything longer is a mistake, not a bound.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// The TOML path of the field, e.g. `listener[0].client_auth.trust[1]`.
    pub field: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.field, self.reason)
        }
    }
}

/// Every problem found, in file order.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "{n} problem{} in the configuration:", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// A certificate the configuration loaded: where from, whose, and its validity.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadedCert {
    pub file: PathBuf,
    /// The TOML field that names it (`listener[0].certificates[0].cert`).
    pub field: String,
    pub subject: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: time::OffsetDateTime,
}

/// A problem that does not stop the configuration from being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// A problem of time (an expired or not-yet-valid certificate, a CRL past its next
    /// update, a chain that clients cannot complete): `serve --check` fails on it; start and
    /// reload serve with a loud warning, failing closed where the certificate or CRL matters,
    /// so one stale file never blocks every later reload.
    Check,
    /// Worth knowing in time (a certificate past two thirds of its lifetime, a CRL within a
    /// day of its next update): printed, never refused.
    Warning,
}

/// A built configuration's problems of time and warnings, in file order.
pub type Notes = Vec<(Severity, ConfigError)>;

/// The admin listener.
pub struct Admin {
    pub addr: SocketAddr,
    /// `Some`: mTLS, a client certificate from its trust anchors required.
    pub tls: Option<Arc<ListenerTls>>,
}

/// The built configuration.
pub struct Config {
    /// Problems that did not stop the build (see [`Severity`]).
    pub notes: Notes,
    pub listeners: Vec<Listener>,
    /// Every file the configuration read (the file itself first), for the reload watcher.
    pub files: Vec<PathBuf>,
    /// Each loaded CRL's file and nextUpdate: when to look for a fresher one.
    pub crl_updates: Vec<(PathBuf, rustls_pki_types::UnixTime)>,
    /// Where the access log goes; `None`: no access log.
    pub access_log: Option<crate::access_log::Sink>,
    /// How long open connections get to finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// The admin listener; `None`: none.
    pub admin: Option<Admin>,
    /// Every certificate the configuration loaded, for expiry metrics and /status.
    pub certificates: Vec<LoadedCert>,
    /// Runtime worker threads; `None`: one per core.
    pub worker_threads: Option<usize>,
    /// Certificates requested from the online CA and kept renewed ([`crate::managed`]).
    pub managed: Vec<ManagedSpec>,
    /// CRLs fetched by URL and cached in state_dir ([`crate::managed`]).
    pub crl_sources: Vec<CrlSource>,
}

/// Timeouts and limits of a listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub handshake_timeout: Duration,
    /// Time to receive a request head. For HTTP/1.1 this also bounds the wait for the next
    /// request on a kept-alive connection.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight, and none started or ended, for this long is
    /// closed (HTTP/1.1 and HTTP/2).
    pub idle_timeout: Duration,
    /// A request or response body that sends nothing for this long is ended (408).
    pub body_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per client connection.
    pub max_streams: u32,
    /// A connection older than this is closed gracefully; `None`: no limit.
    pub max_connection_age: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(120),
            body_timeout: Duration::from_secs(60),
            max_header_bytes: 16 * 1024,
            max_connections: 10_000,
            max_streams: 100,
            max_connection_age: None,
        }
    }
}

/// One TLS listener and what it serves.
pub struct Listener {
    pub name: String,
    pub addr: SocketAddr,
    /// The listener's TLS, and the client-certificate policies some server names have.
    pub tls: SniPolicies,
    pub limits: Limits,
    /// Answer 421 when Host differs from SNI.
    pub sni_host_check: bool,
    /// Peers whose forwarding headers are kept.
    pub trusted_proxies: Vec<IpNet>,
    pub routes: RouteTable,
    /// Custom answers for refusals on this listener (after any route's own).
    pub error_pages: Option<Arc<ErrorPages>>,
    /// Server names relayed undecrypted, and what a ClientHello without SNI gets.
    pub passthrough: Arc<SniTable>,
    /// Peers whose connections must start with a PROXY protocol header.
    pub proxy_protocol_from: Vec<IpNet>,
}

/// Reads and builds the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    build(parse(path)?, path)
}

/// Reads the file at `path` as TOML into the raw structs.
fn parse(path: &Path) -> Result<raw::RawConfig, ConfigErrors> {
    let fail = |field: &str, reason: String| {
        ConfigErrors(vec![ConfigError { file: path.to_path_buf(), field: field.into(), reason }])
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail("", format!("cannot read: {e}")))?;
    if let Some(line) = too_deep(&text, MAX_NESTING) {
        return Err(fail(
            &format!("line {line}"),
            format!("arrays and tables are nested more than {MAX_NESTING} levels deep"),
        ));
    }
    toml::from_str(&text).map_err(|e| {
        let location = e
            .span()
            .map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}")
            })
            .unwrap_or_default();
        fail(&location, e.message().to_string())
    })
}

/// Deeper nesting than any configuration needs; the TOML parser recurses once per level, so
/// an absurdly nested file would otherwise exhaust a thread's stack instead of being refused.
const MAX_NESTING: usize = 64;

/// The line where `[`/`{` nesting first exceeds `max`, outside strings and comments (TOML's
/// rules: basic and literal strings, their multi-line forms, `#` comments; a single-line
/// string ends at the line's end, as the parser ends it).
fn too_deep(text: &str, max: usize) -> Option<usize> {
    let b = text.as_bytes();
    let (mut depth, mut line, mut i) = (0usize, 1usize, 0usize);
    while i < b.len() {
        let rest = &b[i..];
        match b[i] {
            b'\n' => line += 1,
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' => {
                let quote = b[i];
                let multi = rest.starts_with(&[quote; 3]);
                i += if multi { 3 } else { 1 };
                while i < b.len() {
                    if multi && b[i..].starts_with(&[quote; 3]) {
                        i += 3;
                        break;
                    }
                    match b[i] {
                        b'\n' if !multi => break,
                        b'\n' => line += 1,
                        b'\\' if quote == b'"' => i += 1,
                        c if c == quote && !multi => {
                            i += 1;
                            break;
                        }
                        _ => {}
                    }
                    i += 1;
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Some(line);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Builds a raw configuration; relative paths are taken from `path`'s directory.
pub fn build(raw: raw::RawConfig, path: &Path) -> Result<Config, ConfigErrors> {
    build_with(raw, path, None)
}

/// As [`build`], with the online CA that routes reach with `upstream = "@ca"` (only
/// `certgate ca serve` has one; elsewhere `"@ca"` is an error).
pub fn build_with(
    raw: raw::RawConfig,
    path: &Path,
    ca: Option<Arc<crate::ca::CaService>>,
) -> Result<Config, ConfigErrors> {
    let mut b = Builder::new(path, ca);
    b.set_state_dir(&raw);
    if raw.listeners.is_empty() {
        b.error("", "no [[listener]] is configured".into());
    }
    if raw.routes.is_empty() {
        b.error("", "no [[route]] is configured".into());
    }

    let mut upstreams: HashMap<String, Arc<Upstream>> = HashMap::new();
    for (i, u) in raw.upstreams.iter().enumerate() {
        let field = format!("upstream[{i}]");
        if upstreams.contains_key(&u.name) {
            b.error(&format!("{field}.name"), format!("duplicate upstream name {:?}", u.name));
            continue;
        }
        if let Some(up) = b.upstream(&field, u) {
            upstreams.insert(u.name.clone(), up);
        }
    }

    let oauth = raw.oauth.as_ref().and_then(|o| {
        let store = o.store.as_ref().and_then(|file| b.token_store(file));
        b.oauth(o, store)
    });
    let service = match (&raw.oauth, &oauth) {
        (_, Some(built)) => oauth::OAuthService::Built(built),
        (Some(o), None) => oauth::OAuthService::Broken { issuer: &o.issuer },
        (None, None) => oauth::OAuthService::Absent,
    };

    let listener_names: Vec<String> = raw
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| l.name.clone().unwrap_or_else(|| format!("listener-{i}")))
        .collect();
    let mut routes_by_listener: Vec<Vec<Arc<Route>>> = vec![Vec::new(); raw.listeners.len()];
    let mut all_header_names = Vec::new();
    let mut route_names = HashSet::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let field = format!("route[{i}]");
        if let Some(name) = &r.name {
            if let Err(reason) = route_name_problem(name) {
                b.error(&format!("{field}.name"), reason);
            } else if !route_names.insert(name.as_str()) {
                b.error(&format!("{field}.name"), format!("{name:?} names two routes"));
            }
        }
        let Some(route) = b.route(&field, r, &upstreams, service) else { continue };
        let route = Arc::new(route);
        all_header_names.extend(route.headers.names());
        match &r.listener {
            Some(name) => match listener_names.iter().position(|n| n == name) {
                Some(li) => routes_by_listener[li].push(route),
                None => {
                    b.error(&format!("{field}.listener"), format!("no listener named {name:?}"))
                }
            },
            None => routes_by_listener.iter_mut().for_each(|v| v.push(route.clone())),
        }
    }
    // A route that needs a client certificate on a listener that never asks for one would
    // answer 496 to every request, certificate or not.
    for (i, r) in raw.routes.iter().enumerate() {
        if !matches!(r.client_cert.as_deref(), None | Some("required")) {
            continue;
        }
        for (l, name) in raw.listeners.iter().zip(&listener_names) {
            let asks_for =
                |ca: &Option<raw::RawClientAuth>| ca.as_ref().is_some_and(|ca| ca.mode != "off");
            let asks =
                asks_for(&l.client_auth) || l.sni_policies.iter().any(|p| asks_for(&p.client_auth));
            let applies = r.listener.as_deref().is_none_or(|n| n == name);
            if applies && !asks {
                b.error(
                    &format!("route[{i}].client_cert"),
                    format!(
                        "the route needs a client certificate, but listener {name} never asks \
                         for one; add [listener.client_auth] to it, or set client_cert = \
                         \"optional\""
                    ),
                );
            }
        }
    }
    let strip = Arc::new(crate::http::headers::StripSet::new(all_header_names));
    let passthroughs = b.passthroughs(&raw.passthroughs, &listener_names);

    let mut listeners = Vec::new();
    let mut seen_addrs = HashSet::new();
    for ((i, l), routes) in raw.listeners.iter().enumerate().zip(routes_by_listener) {
        let field = format!("listener[{i}]");
        let sni = b.sni_table(&field, l, &listener_names[i], &passthroughs);
        let Some(listener) = b.listener(&field, l, &listener_names[i], routes, strip.clone(), sni)
        else {
            continue;
        };
        // Port 0 asks the system for a free port: two such listeners never clash.
        if listener.addr.port() != 0 && !seen_addrs.insert(listener.addr) {
            b.error(
                &format!("{field}.listen"),
                format!("{} is used by two listeners", listener.addr),
            );
        }
        listeners.push(listener);
    }
    let admin = raw.admin.as_ref().and_then(|a| b.admin(a));
    let shutdown_grace = b.duration(
        "runtime.shutdown_grace",
        raw.runtime.shutdown_grace.as_ref(),
        Duration::from_secs(10),
    );
    if raw.runtime.worker_threads == Some(0) {
        b.error(
            "runtime.worker_threads",
            "must be at least 1 (leave it out for one per core)".into(),
        );
    }
    let managed = b.managed_specs();
    if !b.errors.is_empty() {
        return Err(ConfigErrors(b.errors));
    }
    let mut files = vec![path.to_path_buf()];
    for f in b.files.drain(..) {
        if !files.contains(&f) {
            files.push(f);
        }
    }
    Ok(Config {
        notes: std::mem::take(&mut b.notes),
        listeners,
        files,
        crl_updates: std::mem::take(&mut b.crl_updates),
        access_log: raw.access_log.enabled.unwrap_or(true).then(|| match &raw.access_log.path {
            Some(p) => crate::access_log::Sink::File(
                path.parent().map(Path::to_path_buf).unwrap_or_default().join(p),
            ),
            None => crate::access_log::Sink::Stdout,
        }),
        worker_threads: raw.runtime.worker_threads,
        shutdown_grace,
        admin,
        certificates: std::mem::take(&mut b.certificates),
        managed,
        crl_sources: std::mem::take(&mut b.crl_sources),
    })
}

/// Requests in flight to one upstream by default (each a connection over HTTP/1.1).
const DEFAULT_UPSTREAM_CONNECTIONS: usize = 1024;

/// `10.0.0.0/8`, `::1/128`, or a single address.
fn parse_net(s: &str) -> Option<IpNet> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a.parse::<std::net::IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
        None => (s.parse().ok()?, None),
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(max);
    (prefix <= max).then_some(IpNet { addr, prefix })
}

struct Builder {
    /// The online CA, for `"@ca"` routes.
    ca: Option<Arc<crate::ca::CaService>>,
    file: PathBuf,
    base: PathBuf,
    errors: Vec<ConfigError>,
    /// Every file named, in order.
    files: Vec<PathBuf>,
    /// Each loaded CRL's file and nextUpdate.
    crl_updates: Vec<(PathBuf, rustls_pki_types::UnixTime)>,
    notes: Notes,
    certificates: Vec<LoadedCert>,
    /// `state_dir`, resolved; `None` when not configured.
    state_dir: Option<PathBuf>,
    /// The managed certificates declared so far.
    declared: managed::Declared,
    /// The CRLs given by URL so far.
    crl_sources: Vec<CrlSource>,
}

impl Builder {
    fn new(path: &Path, ca: Option<Arc<crate::ca::CaService>>) -> Builder {
        Builder {
            ca,
            file: path.to_path_buf(),
            base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            errors: Vec::new(),
            files: Vec::new(),
            crl_updates: Vec::new(),
            notes: Vec::new(),
            certificates: Vec::new(),
            state_dir: None,
            declared: managed::Declared::default(),
            crl_sources: Vec::new(),
        }
    }

    fn set_state_dir(&mut self, raw: &raw::RawConfig) {
        self.state_dir = raw.state_dir.as_deref().map(|d| self.resolve(d));
    }

    fn error(&mut self, field: &str, reason: String) {
        self.errors.push(ConfigError { file: self.file.clone(), field: field.into(), reason });
    }

    fn note(&mut self, severity: Severity, field: &str, reason: String) {
        let problem = ConfigError { file: self.file.clone(), field: field.into(), reason };
        self.notes.push((severity, problem));
    }

    /// Checks a certificate this configuration serves or presents: its usage for `purpose`
    /// (an error), its validity now (a problem of time), and how much of its lifetime is
    /// left (a warning past two thirds, so a 90-day and a 24-hour certificate both warn in
    /// time). Returns its summary.
    fn check_cert(
        &mut self,
        field: &str,
        file: &str,
        der: &[u8],
        purpose: Option<(&str, &str)>,
    ) -> Option<certgate_pki::inspect::CertInfo> {
        let info = match certgate_pki::inspect::cert_info(der) {
            Ok(info) => info,
            Err(e) => {
                self.error(field, with_causes(&e));
                return None;
            }
        };
        if let Some((eku, what)) = purpose {
            let ekus = &info.extended_key_usage;
            if !ekus.is_empty() && !ekus.iter().any(|e| e == eku || e == "anyExtendedKeyUsage") {
                self.error(
                    field,
                    format!(
                        "{} is not a {what} certificate: its extended key usage is {}, without {eku}",
                        info.subject,
                        ekus.join(", ")
                    ),
                );
            }
        }
        self.certificates.push(LoadedCert {
            file: self.resolve(file),
            field: field.to_string(),
            subject: info.subject.clone(),
            not_before: info.not_before,
            not_after: info.not_after,
        });
        let now = time::OffsetDateTime::now_utc();
        let until = certgate_pki::validity::format_time(info.not_after);
        if info.not_after <= now {
            self.note(Severity::Check, field, format!("{} expired on {until}", info.subject));
        } else if info.not_before > now {
            let from = certgate_pki::validity::format_time(info.not_before);
            self.note(
                Severity::Check,
                field,
                format!("{} is not valid before {from}", info.subject),
            );
        } else if (now - info.not_before) * 3 > (info.not_after - info.not_before) * 2 {
            self.note(
                Severity::Warning,
                field,
                format!(
                    "{} is past two thirds of its lifetime: it expires on {until}",
                    info.subject
                ),
            );
        }
        Some(info)
    }

    /// A file the configuration names, resolved against its directory and remembered.
    fn path(&mut self, p: &str) -> PathBuf {
        let path = self.resolve(p);
        self.files.push(path.clone());
        path
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() { p.to_path_buf() } else { self.base.join(p) }
    }

    fn duration(&mut self, field: &str, value: Option<&String>, default: Duration) -> Duration {
        let Some(v) = value else { return default };
        match certgate_pki::validity::parse_duration(v) {
            Ok(d) if d.is_positive() && d.unsigned_abs() <= MAX_TIMEOUT => d.unsigned_abs(),
            Ok(d) if d.is_positive() => {
                self.error(field, format!("{v}: at most 1d"));
                default
            }
            Ok(_) => {
                self.error(field, "must be positive".into());
                default
            }
            Err(e) => {
                self.error(field, with_causes(&e));
                default
            }
        }
    }

    fn certs(&mut self, field: &str, file: &str) -> Option<Vec<CertificateDer<'static>>> {
        match certgate_pki::pem::read_certs(&self.path(file)) {
            Ok(c) => Some(c),
            Err(e) => {
                self.error(field, with_causes(&e));
                None
            }
        }
    }

    fn key(&mut self, field: &str, file: &str) -> Option<PrivateKeyDer<'static>> {
        let path = self.path(file);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                self.error(field, format!("cannot read {}: {e}", path.display()));
                return None;
            }
        };
        match certgate_pki::keys::pkcs8_der_from_pem(&path, &bytes, None) {
            Ok(der) => Some(PrivateKeyDer::Pkcs8(der.into())),
            Err(e) => {
                self.error(field, with_causes(&e));
                None
            }
        }
    }

    fn listener(
        &mut self,
        field: &str,
        l: &raw::RawListener,
        name: &str,
        routes: Vec<Arc<Route>>,
        strip: Arc<crate::http::headers::StripSet>,
        passthrough: SniTable,
    ) -> Option<Listener> {
        let errors_before = self.errors.len();
        let addr = match l.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    &format!("{field}.listen"),
                    format!("{:?} is not an address:port such as 127.0.0.1:8443", l.listen),
                );
                None
            }
        };
        let min_tls13 = match l.min_tls_version.as_deref() {
            None | Some("1.2") => false,
            Some("1.3") => true,
            Some(other) => {
                self.error(
                    &format!("{field}.min_tls_version"),
                    format!("{other:?}: use \"1.2\" or \"1.3\""),
                );
                false
            }
        };
        let certs = self.server_certs(field, &l.certificates);
        let client_auth = match &l.client_auth {
            None => Some(ClientAuth::Off),
            Some(ca) => self.client_auth(&format!("{field}.client_auth"), ca),
        };
        let mut limits = Limits::default();
        let lf = format!("{field}.limits");
        limits.handshake_timeout = self.duration(
            &format!("{lf}.handshake_timeout"),
            l.limits.handshake_timeout.as_ref(),
            limits.handshake_timeout,
        );
        limits.header_read_timeout = self.duration(
            &format!("{lf}.header_read_timeout"),
            l.limits.header_read_timeout.as_ref(),
            limits.header_read_timeout,
        );
        limits.idle_timeout = self.duration(
            &format!("{lf}.idle_timeout"),
            l.limits.idle_timeout.as_ref(),
            limits.idle_timeout,
        );
        limits.body_timeout = self.duration(
            &format!("{lf}.body_timeout"),
            l.limits.body_timeout.as_ref(),
            limits.body_timeout,
        );
        if let Some(age) = &l.limits.max_connection_age {
            limits.max_connection_age =
                Some(self.duration(&format!("{lf}.max_connection_age"), Some(age), MAX_TIMEOUT));
        }
        if let Some(n) = l.limits.max_streams {
            if n == 0 {
                self.error(&format!("{lf}.max_streams"), "must be at least 1".into());
            }
            limits.max_streams = n.max(1);
        }
        let mut proxy_protocol_from = Vec::new();
        for (i, p) in l.proxy_protocol_from.iter().enumerate() {
            match parse_net(p) {
                Some(net) => proxy_protocol_from.push(net),
                None => self.error(
                    &format!("{field}.proxy_protocol_from[{i}]"),
                    format!("{p:?} is not an IP address or network such as 10.0.0.0/8"),
                ),
            }
        }
        let mut trusted_proxies = Vec::new();
        for (i, p) in l.trusted_proxies.iter().enumerate() {
            match parse_net(p) {
                Some(net) => trusted_proxies.push(net),
                None => self.error(
                    &format!("{field}.trusted_proxies[{i}]"),
                    format!("{p:?} is not an IP address or network such as 10.0.0.0/8"),
                ),
            }
        }
        if let Some(n) = l.limits.max_header_bytes {
            // Below 8 KiB, ordinary browser requests (cookies, long referers) are refused.
            if n < 8192 {
                self.error(&format!("{lf}.max_header_bytes"), "must be at least 8192".into());
            }
            limits.max_header_bytes = n.max(8192);
        }
        if let Some(n) = l.limits.max_connections {
            if n == 0 {
                self.error(&format!("{lf}.max_connections"), "must be at least 1".into());
            }
            limits.max_connections = n.max(1);
        }
        if routes.is_empty() {
            self.error(field, format!("listener {name:?} has no route"));
        }
        let error_pages = self.error_pages(&format!("{field}.error_page"), &l.error_pages);
        if self.errors.len() > errors_before {
            return None;
        }
        let (addr, client_auth) = (addr?, client_auth?);
        let mut by_name = Vec::new();
        let mut seen_names = HashSet::new();
        for (i, p) in l.sni_policies.iter().enumerate() {
            let pf = format!("{field}.sni[{i}]");
            let mut names = Vec::new();
            for (j, n) in p.names.iter().enumerate() {
                let lower = n.to_ascii_lowercase();
                if !server_name_ok(&lower) {
                    self.error(
                        &format!("{pf}.names[{j}]"),
                        format!("{n:?} is not a server name (api.example.com or *.example.com)"),
                    );
                } else if !seen_names.insert(lower.clone()) {
                    self.error(&format!("{pf}.names[{j}]"), format!("{n} has two policies"));
                } else {
                    names.push(lower);
                }
            }
            let auth = match &p.client_auth {
                None => Some(ClientAuth::Off),
                Some(ca) => self.client_auth(&format!("{pf}.client_auth"), ca),
            };
            let Some(auth) = auth else { continue };
            match ListenerTls::new(certs.clone(), auth, min_tls13) {
                Ok(tls) => by_name.push((names, tls)),
                Err(e) => self.error(&pf, with_causes(&e)),
            }
        }
        if self.errors.len() > errors_before {
            return None;
        }
        let tls = match ListenerTls::new(certs, client_auth, min_tls13) {
            Ok(t) => t,
            Err(e) => {
                self.error(field, with_causes(&e));
                return None;
            }
        };
        let tls = SniPolicies::new(tls, by_name);
        let asks_for_certs = tls.asks_for_certs();
        Some(Listener {
            name: name.to_string(),
            addr,
            sni_host_check: l.sni_host_check.unwrap_or(asks_for_certs),
            tls,
            limits,
            trusted_proxies,
            routes: RouteTable::new(routes, strip),
            error_pages,
            passthrough: Arc::new(passthrough),
            proxy_protocol_from,
        })
    }

    /// A listener's server certificates with their keys, each checked as `--check` does.
    fn server_certs(
        &mut self,
        field: &str,
        certificates: &[raw::RawCertificate],
    ) -> Vec<Arc<rustls::sign::CertifiedKey>> {
        if certificates.is_empty() {
            self.error(
                &format!("{field}.certificates"),
                "at least one server certificate is needed".into(),
            );
        }
        let mut certs = Vec::new();
        for (j, c) in certificates.iter().enumerate() {
            let cf = format!("{field}.certificates[{j}]");
            let Some((cert, key)) = self.cert_and_key(&cf, c) else { continue };
            let chain = self.certs(&format!("{cf}.cert"), &cert);
            let key_der = self.key(&format!("{cf}.key"), &key);
            if let Some(leaf) = chain.as_ref().and_then(|c| c.first()) {
                let cert_field = format!("{cf}.cert");
                let info =
                    self.check_cert(&cert_field, &cert, leaf, Some(("serverAuth", "TLS server")));
                if let Some(info) = info
                    && chain.as_ref().is_some_and(|c| c.len() == 1)
                    && !info.self_signed
                {
                    self.note(
                        Severity::Check,
                        &cert_field,
                        format!(
                            "{}: the file holds only the leaf, issued by {}; clients that do not \
                             have that intermediate cannot verify it (append the intermediate \
                             after the leaf)",
                            cert, info.issuer
                        ),
                    );
                }
            }
            if let (Some(chain), Some(key_der)) = (chain, key_der) {
                match crate::tls::server::certified_key(chain, key_der) {
                    Ok(ck) => certs.push(ck),
                    Err(e) => {
                        self.error(&format!("{cf}.key"), format!("{key}: {}", with_causes(&e)))
                    }
                }
            }
        }
        certs
    }

    /// The certificate and key files of `c`: its own, or a managed certificate's in
    /// `state_dir` (which must exist by now: `serve` requests missing ones before loading).
    fn cert_and_key(&mut self, field: &str, c: &raw::RawCertificate) -> Option<(String, String)> {
        match c {
            raw::RawCertificate::Files(f) => Some((f.cert.clone(), f.key.clone())),
            raw::RawCertificate::Managed(m) => self.managed_present(field, m),
        }
    }

    /// The files of managed certificate `m` as strings, when they exist.
    fn managed_present(&mut self, field: &str, m: &raw::RawManaged) -> Option<(String, String)> {
        let files = self.managed_files(field, m)?;
        if !files.cert.exists() {
            self.error(
                &format!("{field}.managed"),
                format!(
                    "managed certificate {}: {} does not exist yet; `certgate serve` requests it \
                     from the online CA with token_file at start",
                    m.managed,
                    files.cert.display()
                ),
            );
            return None;
        }
        Some((files.cert.display().to_string(), files.key.display().to_string()))
    }

    /// The admin listener: plain HTTP on loopback, or mTLS (a client certificate required)
    /// anywhere; plain HTTP elsewhere only when named dangerous.
    fn admin(&mut self, a: &raw::RawAdmin) -> Option<Admin> {
        let before = self.errors.len();
        let addr = match a.listen.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    "admin.listen",
                    format!("{:?} is not an address:port such as 127.0.0.1:9901", a.listen),
                );
                None
            }
        };
        let tls = match (a.certificates.is_empty(), &a.client_auth) {
            (true, None) => None,
            (true, Some(_)) => {
                self.error(
                    "admin.certificates",
                    "client_auth on the admin listener needs its server certificates".into(),
                );
                None
            }
            (false, None) => {
                self.error(
                    "admin.client_auth",
                    "an admin listener with TLS requires client certificates: add client_auth = \
                     { mode = \"required\", trust = [...] }"
                        .into(),
                );
                None
            }
            (false, Some(ca)) => {
                if ca.mode != "required" {
                    self.error(
                        "admin.client_auth.mode",
                        format!("{:?}: the admin listener's mode is \"required\"", ca.mode),
                    );
                }
                let certs = self.server_certs("admin", &a.certificates);
                let client_auth = self.client_auth("admin.client_auth", ca);
                match client_auth {
                    Some(auth) if self.errors.len() == before => {
                        match ListenerTls::new(certs, auth, false) {
                            Ok(tls) => Some(Arc::new(tls)),
                            Err(e) => {
                                self.error("admin", with_causes(&e));
                                None
                            }
                        }
                    }
                    _ => None,
                }
            }
        };
        let addr = addr?;
        if tls.is_none() && !addr.ip().is_loopback() && !a.dangerous_non_loopback {
            self.error(
                "admin.listen",
                format!(
                    "{addr} is not a loopback address: the admin listener can reload the gateway; \
                     give it certificates and client_auth (mTLS), keep it on 127.0.0.1 or ::1, \
                     or set dangerous_non_loopback = true behind your own access control"
                ),
            );
        }
        if self.errors.len() > before {
            return None;
        }
        Some(Admin { addr, tls })
    }

    /// Every `[[passthrough]]` route, with the listener it is limited to (`None`: all).
    fn passthroughs(
        &mut self,
        raw: &[raw::RawPassthrough],
        listener_names: &[String],
    ) -> Vec<(Option<String>, Vec<String>, Arc<Passthrough>)> {
        let mut out = Vec::new();
        let mut names = HashSet::new();
        for (i, p) in raw.iter().enumerate() {
            let field = format!("passthrough[{i}]");
            let before = self.errors.len();
            if let Err(reason) = route_name_problem(&p.name) {
                self.error(&format!("{field}.name"), reason.replace("route name", "name"));
            } else if !names.insert(p.name.as_str()) {
                self.error(
                    &format!("{field}.name"),
                    format!("{:?} names two passthrough routes", p.name),
                );
            }
            if let Some(l) = &p.listener
                && !listener_names.contains(l)
            {
                self.error(&format!("{field}.listener"), format!("no listener named {l:?}"));
            }
            let mut sni = Vec::new();
            for (j, name) in p.sni.iter().enumerate() {
                let lower = name.to_ascii_lowercase();
                if server_name_ok(&lower) {
                    sni.push(lower);
                } else {
                    self.error(
                        &format!("{field}.sni[{j}]"),
                        format!("{name:?} is not a server name (api.example.com or *.example.com)"),
                    );
                }
            }
            let host_port = p.upstream.rsplit_once(':').filter(|(h, port)| {
                !h.is_empty() && !h.contains('/') && port.parse::<u16>().is_ok_and(|n| n > 0)
            });
            if host_port.is_none() {
                self.error(
                    &format!("{field}.upstream"),
                    format!(
                        "{:?} is not host:port such as 10.0.0.5:8443 (TLS is the upstream's own)",
                        p.upstream
                    ),
                );
            }
            let connect_timeout = self.duration(
                &format!("{field}.connect_timeout"),
                p.connect_timeout.as_ref(),
                Duration::from_secs(5),
            );
            let idle_timeout = self.duration(
                &format!("{field}.idle_timeout"),
                p.idle_timeout.as_ref(),
                Duration::from_secs(300),
            );
            let proxy_v2 = match p.proxy_protocol.as_deref() {
                None => false,
                Some("v2") => true,
                Some(other) => {
                    self.error(
                        &format!("{field}.proxy_protocol"),
                        format!("{other:?}: the only version sent is \"v2\""),
                    );
                    false
                }
            };
            let mut allow = Vec::new();
            for (j, a) in p.allow.iter().enumerate() {
                match parse_net(a) {
                    Some(net) => allow.push(net),
                    None => self.error(
                        &format!("{field}.allow[{j}]"),
                        format!("{a:?} is not an IP address or network such as 10.0.0.0/8"),
                    ),
                }
            }
            if self.errors.len() > before {
                continue;
            }
            let route = Passthrough {
                name: p.name.clone(),
                upstream: p.upstream.clone(),
                connect_timeout,
                idle_timeout,
                proxy_v2,
                allow,
            };
            out.push((p.listener.clone(), sni, Arc::new(route)));
        }
        out
    }

    /// A listener's passthrough table: the routes that apply to it, each name once.
    fn sni_table(
        &mut self,
        field: &str,
        l: &raw::RawListener,
        name: &str,
        all: &[(Option<String>, Vec<String>, Arc<Passthrough>)],
    ) -> SniTable {
        let mine: Vec<&(Option<String>, Vec<String>, Arc<Passthrough>)> =
            all.iter().filter(|(only, _, _)| only.as_deref().is_none_or(|o| o == name)).collect();
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for (_, names, route) in &mine {
            for n in names {
                if let Some(other) = seen.insert(n, &route.name) {
                    self.error(
                        &format!("{field}.passthrough"),
                        format!(
                            "{n} is passed through by both {other} and {} on listener {name}",
                            route.name
                        ),
                    );
                }
            }
        }
        let no_sni = match l.no_sni.as_deref() {
            None | Some("terminate") => NoSni::Terminate,
            Some("refuse") => NoSni::Refuse,
            Some(other) => match mine.iter().find(|(_, _, r)| r.name == other) {
                Some((_, _, route)) => NoSni::Relay(route.clone()),
                None => {
                    self.error(
                        &format!("{field}.no_sni"),
                        format!(
                            "{other:?}: use \"terminate\", \"refuse\", or the name of a passthrough \
                             route on this listener"
                        ),
                    );
                    NoSni::Terminate
                }
            },
        };
        SniTable::new(mine.into_iter().map(|(_, n, r)| (n.clone(), r.clone())).collect(), no_sni)
    }

    /// Error page rules, their templates read and checked now; `None` when there are none.
    fn error_pages(&mut self, field: &str, raw: &[raw::RawErrorPage]) -> Option<Arc<ErrorPages>> {
        let mut rules = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let f = format!("{field}[{i}]");
            for code in &r.on {
                if !GATEWAY_STATUSES.contains(code) {
                    self.error(
                        &format!("{f}.on"),
                        format!(
                            "{code} is not an answer of the gateway's own (those are {})",
                            GATEWAY_STATUSES.map(|s| s.to_string()).join(", ")
                        ),
                    );
                }
            }
            let status = r.status.and_then(|s| match http::StatusCode::from_u16(s) {
                Ok(status) if (400..600).contains(&s) => Some(status),
                _ => {
                    self.error(
                        &format!("{f}.status"),
                        format!("{s}: use a 4xx or 5xx status (an error stays an error)"),
                    );
                    None
                }
            });
            let html = r
                .html
                .as_ref()
                .and_then(|file| self.error_template(&format!("{f}.html"), file, Language::Html));
            let json = r
                .json
                .as_ref()
                .and_then(|file| self.error_template(&format!("{f}.json"), file, Language::Json));
            if r.status.is_none() && r.html.is_none() && r.json.is_none() {
                self.error(&f, "give html, json or status (or remove the rule)".into());
            }
            rules.push(ErrorPage { on: r.on.clone(), status, html, json });
        }
        (!rules.is_empty()).then(|| Arc::new(ErrorPages { rules }))
    }

    /// Reads an error page template (UTF-8, at most 64 KiB); a JSON one must be JSON once
    /// filled in, whatever the values.
    fn error_template(&mut self, field: &str, file: &str, language: Language) -> Option<Template> {
        let path = self.path(file);
        let text = match std::fs::read(&path) {
            Ok(bytes) if bytes.len() > 64 * 1024 => {
                self.error(field, format!("{file}: larger than 64 KiB"));
                return None;
            }
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(_) => {
                    self.error(field, format!("{file}: not UTF-8"));
                    return None;
                }
            },
            Err(e) => {
                self.error(field, format!("cannot read {}: {e}", path.display()));
                return None;
            }
        };
        let template = match Template::parse(&text) {
            Ok(t) => t,
            Err(reason) => {
                self.error(field, format!("{file}: {reason}"));
                return None;
            }
        };
        if language == Language::Json {
            let sample = template.render(language, 495, JSON_SAMPLE, JSON_SAMPLE);
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&sample) {
                self.error(
                    field,
                    format!(
                        "{file}: not JSON once filled in ({e}); placeholders other than \
                         {{{{status}}}} go inside strings: \"{{{{reason}}}}\""
                    ),
                );
                return None;
            }
        }
        Some(template)
    }

    /// The listener's client-certificate mode with its verifier; `None` after an error (a
    /// mode that asks for certificates never exists without trust anchors).
    fn client_auth(&mut self, field: &str, ca: &raw::RawClientAuth) -> Option<ClientAuth> {
        enum Mode {
            Required,
            Optional,
            DangerousOptionalNoCa,
        }
        let mode = match ca.mode.as_str() {
            "required" => Mode::Required,
            "optional" => Mode::Optional,
            "dangerous_optional_no_ca" => Mode::DangerousOptionalNoCa,
            "off" => return Some(ClientAuth::Off),
            "optional_no_ca" => {
                self.error(&format!("{field}.mode"), "accepting certificates from any CA is dangerous; write \"dangerous_optional_no_ca\" if that is what you want".into());
                return None;
            }
            other => {
                self.error(&format!("{field}.mode"), format!("{other:?}: use \"required\", \"optional\", \"dangerous_optional_no_ca\" or \"off\""));
                return None;
            }
        };
        let policy = VerifyPolicy {
            max_depth: ca.max_chain_depth.unwrap_or(DEFAULT_MAX_DEPTH),
            allow_unknown_revocation: ca.allow_unknown_revocation,
            full_chain_crls: ca.full_chain_crls,
            dangerous_stale_crl_grace: match &ca.dangerous_stale_crl_grace {
                Some(grace) => self.duration(
                    &format!("{field}.dangerous_stale_crl_grace"),
                    Some(grace),
                    Duration::ZERO,
                ),
                None => Duration::ZERO,
            },
            ..VerifyPolicy::client()
        };
        if ca.crl_refresh.is_some() && !ca.crls.iter().any(|c| managed::is_url(c)) {
            self.note(
                Severity::Warning,
                &format!("{field}.crl_refresh"),
                "has no effect: no CRL is given by URL".into(),
            );
        }
        if ca.dangerous_stale_crl_grace.is_some() && ca.crls.is_empty() {
            self.note(
                Severity::Warning,
                &format!("{field}.dangerous_stale_crl_grace"),
                "has no effect: the listener loads no CRL".into(),
            );
        }
        let before = self.errors.len();
        if ca.max_chain_depth == Some(0) {
            self.error(
                &format!("{field}.max_chain_depth"),
                "must be at least 1 (the trust anchor counts)".into(),
            );
        }
        if ca.trust.is_empty() {
            self.error(
                &format!("{field}.trust"),
                "client certificates need at least one trust anchor file".into(),
            );
        }
        let mut anchors = Vec::new();
        for (i, t) in ca.trust.iter().enumerate() {
            let tf = format!("{field}.trust[{i}]");
            if let Some(c) = self.certs(&tf, t) {
                for der in &c {
                    // A non-CA certificate in a trust file (a client's own bundle) would make
                    // the anchor out of whatever it holds: refused outright.
                    if let Some(info) = self.check_cert(&tf, t, der, None)
                        && !info.is_ca
                    {
                        self.error(
                            &tf,
                            format!(
                                "{t}: {} is not a CA certificate; trust files hold the CA \
                                 certificates that issue client certificates",
                                info.subject
                            ),
                        );
                    }
                }
                anchors.extend(c);
            }
        }
        let mut crls = Vec::new();
        for (i, c) in ca.crls.iter().enumerate() {
            let path = if managed::is_url(c) {
                let cf = format!("{field}.crls[{i}]");
                let Some(cache) = self.crl_source(&cf, c, &anchors, ca.crl_refresh.as_ref()) else {
                    continue;
                };
                if !cache.exists() {
                    self.error(
                        &cf,
                        format!(
                            "{c}: not fetched yet (no copy in {}); `certgate serve` fetches it \
                             at start",
                            cache.display()
                        ),
                    );
                    continue;
                }
                self.files.push(cache.clone());
                cache
            } else {
                self.path(c)
            };
            match certgate_pki::pem::read_crls(&path) {
                Ok(list) => {
                    for der in &list {
                        if let Some(next) = certgate_pki::verify::crl_next_update(der) {
                            self.crl_updates.push((path.clone(), next));
                            let now = rustls_pki_types::UnixTime::now().as_secs();
                            let cf = format!("{field}.crls[{i}]");
                            if next.as_secs() <= now {
                                self.note(Severity::Check, &cf, format!(
                                    "{c}: the CRL is past its next update ({} minutes ago); the \
                                     certificates it covers are refused until a fresher one is \
                                     published", (now - next.as_secs()) / 60));
                            } else if next.as_secs() - now < 24 * 3600 {
                                self.note(
                                    Severity::Warning,
                                    &cf,
                                    format!(
                                        "{c}: the CRL's next update is due in {} minutes",
                                        (next.as_secs() - now) / 60
                                    ),
                                );
                            }
                        }
                    }
                    crls.extend(list);
                }
                Err(e) => self.error(&format!("{field}.crls[{i}]"), with_causes(&e)),
            }
        }
        if self.errors.len() > before {
            return None;
        }
        let store = match TrustStore::from_der(anchors, crls) {
            Ok(store) => store,
            Err(e) => {
                self.error(field, with_causes(&e));
                return None;
            }
        };
        let verifier = Arc::new(CachingVerifier::new(store, policy, chain_cache::DEFAULT_CAPACITY));
        Some(match mode {
            Mode::Required => ClientAuth::Required(verifier),
            Mode::Optional => ClientAuth::Optional(verifier),
            Mode::DangerousOptionalNoCa => ClientAuth::DangerousOptionalNoCa(verifier),
        })
    }

    fn upstream(&mut self, field: &str, u: &raw::RawUpstream) -> Option<Arc<Upstream>> {
        let before = self.errors.len();
        let uri: http::Uri = match u.url.parse() {
            Ok(uri) => uri,
            Err(e) => {
                self.error(&format!("{field}.url"), format!("{:?} is not a URL: {e}", u.url));
                return None;
            }
        };
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                self.error(
                    &format!("{field}.url"),
                    format!("{:?}: use http:// or https://", u.url),
                );
                return None;
            }
        };
        if uri.authority().is_none() {
            self.error(&format!("{field}.url"), format!("{:?} has no host", u.url));
            return None;
        }
        let connect_timeout = self.duration(
            &format!("{field}.connect_timeout"),
            u.connect_timeout.as_ref(),
            Duration::from_secs(5),
        );
        let response_timeout = self.duration(
            &format!("{field}.response_timeout"),
            u.response_timeout.as_ref(),
            Duration::from_secs(60),
        );
        let mut roots = Vec::new();
        for (i, ca) in u.ca.iter().enumerate() {
            if let Some(c) = self.certs(&format!("{field}.ca[{i}]"), ca) {
                roots.extend(c);
            }
        }
        let client_cert = match &u.client_cert {
            None => None,
            Some(raw::RawClientCert::File(c)) => Some((c.clone(), u.client_key.clone())),
            Some(raw::RawClientCert::Managed(_)) if u.client_key.is_some() => {
                self.error(
                    &format!("{field}.client_key"),
                    "a managed client_cert has its key in state_dir; leave client_key out".into(),
                );
                None
            }
            Some(raw::RawClientCert::Managed(m)) => {
                self.managed_present(&format!("{field}.client_cert"), m).map(|(c, k)| (c, Some(k)))
            }
        };
        // A failed managed client_cert was reported already: no second error for its key.
        let (cert_file, key_file) = match client_cert {
            Some((cert, key)) => (Some(cert), key),
            None if u.client_cert.is_none() => (None, u.client_key.clone()),
            None => (None, None),
        };
        let client_identity = match (&cert_file, &key_file) {
            (Some(c), Some(k)) => {
                let chain = self.certs(&format!("{field}.client_cert"), c);
                if let Some(leaf) = chain.as_ref().and_then(|c| c.first()) {
                    let purpose = Some(("clientAuth", "TLS client"));
                    self.check_cert(&format!("{field}.client_cert"), c, leaf, purpose);
                }
                let key = self.key(&format!("{field}.client_key"), k);
                chain.zip(key)
            }
            (None, None) => None,
            (Some(_), None) => {
                self.error(&format!("{field}.client_key"), "client_cert needs client_key".into());
                None
            }
            (None, Some(_)) => {
                self.error(&format!("{field}.client_cert"), "client_key needs client_cert".into());
                None
            }
        };
        if !tls && (!u.ca.is_empty() || client_identity.is_some() || u.server_name.is_some()) {
            self.error(
                &format!("{field}.url"),
                "ca, server_name and client_cert apply to https:// upstreams only".into(),
            );
        }
        if self.errors.len() > before {
            return None;
        }
        let settings = UpstreamSettings {
            name: u.name.clone(),
            uri,
            tls,
            roots,
            server_name: u.server_name.clone(),
            client_identity,
            http2: u.http2,
            connect_timeout,
            response_timeout,
            max_idle: u.max_idle_connections.unwrap_or(256),
            max_connections: u.max_connections.unwrap_or(DEFAULT_UPSTREAM_CONNECTIONS),
        };
        if u.max_connections == Some(0) {
            self.error(&format!("{field}.max_connections"), "must be at least 1".into());
            return None;
        }
        match Upstream::shared(settings) {
            Ok(up) => Some(up),
            Err(e) => {
                self.error(field, with_causes(&e));
                None
            }
        }
    }

    fn route(
        &mut self,
        field: &str,
        r: &raw::RawRoute,
        upstreams: &HashMap<String, Arc<Upstream>>,
        oauth: oauth::OAuthService<'_>,
    ) -> Option<Route> {
        let before = self.errors.len();
        let target = match r.upstream.as_str() {
            "@echo" => Some(Target::Echo),
            "@oauth" => {
                // A broken [oauth] has reported its own errors.
                if matches!(oauth, oauth::OAuthService::Absent) {
                    self.error(
                        &format!("{field}.upstream"),
                        "\"@oauth\" is the built-in token service: configure it in [oauth]".into(),
                    );
                }
                if r.client_cert.as_deref() != Some("optional") {
                    self.error(
                        &format!("{field}.client_cert"),
                        "the token service authenticates clients itself (answering \
                         invalid_client), and its JWKS and metadata are public: set \
                         client_cert = \"optional\" on its route"
                            .into(),
                    );
                }
                oauth.built().cloned().map(Target::Token)
            }
            "@ca" => {
                if self.ca.is_none() {
                    self.error(
                        &format!("{field}.upstream"),
                        "\"@ca\" is the online CA, served by `certgate ca serve` only".into(),
                    );
                }
                self.ca.clone().map(Target::Ca)
            }
            name => {
                let found = upstreams.get(name).cloned().map(Target::Http);
                if found.is_none() {
                    self.error(
                        &format!("{field}.upstream"),
                        format!(
                            "no upstream named {name:?} (the built-in services are \"@echo\" \
                             and \"@oauth\")"
                        ),
                    );
                }
                found
            }
        };
        let path = r.path.clone().unwrap_or_else(|| "/".into());
        match crate::http::path::normalize(&path) {
            Err(reason) => self.error(&format!("{field}.path"), format!("{path:?}: {reason}")),
            Ok(normal) if normal != path.as_bytes() || path.contains(';') => self.error(
                &format!("{field}.path"),
                format!(
                    "{path:?} is not a normalized path (write it as {:?}, without escapes or \
                     ';' parameters)",
                    String::from_utf8_lossy(&normal).split(';').next().unwrap_or("/")
                ),
            ),
            Ok(_) => {}
        }
        let matching = PathMatching {
            ignore_case: r.path_ignore_case,
            ignore_trailing_dots: r.path_ignore_trailing_dots,
        };
        if matching.ignore_trailing_dots
            && path.split('/').any(|seg| seg.ends_with('.') || seg.ends_with(' '))
        {
            self.error(
                &format!("{field}.path"),
                format!("{path:?}: with path_ignore_trailing_dots, no segment may end with '.'"),
            );
        }
        let host = match r.host.as_deref() {
            None | Some("*") => None,
            Some(h) if h.contains(':') || h.contains('/') || h.is_empty() => {
                self.error(
                    &format!("{field}.host"),
                    format!("{h:?} is not a host name (no port, no scheme)"),
                );
                None
            }
            Some(h) => Some(h.to_ascii_lowercase()),
        };
        let require_cert = match r.client_cert.as_deref() {
            None | Some("required") => true,
            Some("optional") => false,
            Some(other) => {
                self.error(
                    &format!("{field}.client_cert"),
                    format!("{other:?}: use \"required\" or \"optional\""),
                );
                true
            }
        };
        let acl = match &r.allow {
            None => None,
            Some(_) if !require_cert => {
                self.error(
                    &format!("{field}.allow"),
                    "an allow-list needs client_cert = \"required\"".into(),
                );
                None
            }
            Some(allow) => match Acl::new(allow) {
                Ok(acl) => Some(acl),
                Err((key, reason)) => {
                    self.error(&format!("{field}.allow.{key}"), reason);
                    None
                }
            },
        };
        let names = match IdentityHeaderNames::new(&r.header_names) {
            Ok(n) => n,
            Err((key, reason)) => {
                self.error(&format!("{field}.header_names.{key}"), reason);
                IdentityHeaderNames::default()
            }
        };
        let headers = match r.identity_headers.as_deref() {
            None | Some("nginx") => HeaderFormat::Nginx(Box::new(names)),
            Some("xfcc") => HeaderFormat::Xfcc,
            Some("rfc9440") => HeaderFormat::Rfc9440,
            Some("none") => HeaderFormat::None,
            Some(other) => {
                self.error(
                    &format!("{field}.identity_headers"),
                    format!("{other:?}: use \"nginx\", \"xfcc\", \"rfc9440\" or \"none\""),
                );
                HeaderFormat::None
            }
        };
        let error_pages = self.error_pages(&format!("{field}.error_page"), &r.error_pages);
        let upgrades = self.upgrades(field, r, target.as_ref());
        let token = match &r.token {
            Some(t) => self.token_check(&format!("{field}.token"), t, oauth, upstreams),
            None => None,
        };
        if self.errors.len() > before {
            return None;
        }
        Some(Route {
            name: r.name.clone(),
            host,
            path,
            matching,
            target: target?,
            require_cert,
            acl,
            headers: Arc::new(headers),
            max_body_bytes: r.max_body_bytes,
            error_pages,
            upgrades,
            token,
        })
    }

    /// A route's `upgrades` and `upgrade_idle_timeout`: protocols that keep every request
    /// under the gateway's checks, to an upstream that speaks HTTP/1.1.
    fn upgrades(
        &mut self,
        field: &str,
        r: &raw::RawRoute,
        target: Option<&Target>,
    ) -> Option<Arc<crate::http::upgrade::Upgrades>> {
        use crate::http::upgrade;
        let idle_field = format!("{field}.upgrade_idle_timeout");
        if r.upgrades.is_empty() {
            if r.upgrade_idle_timeout.is_some() {
                self.error(
                    &idle_field,
                    "set upgrades too (it applies to upgraded connections)".into(),
                );
            }
            return None;
        }
        let mut protocols = Vec::new();
        for name in &r.upgrades {
            match upgrade::protocol_problem(name) {
                Some(problem) => self.error(&format!("{field}.upgrades"), problem),
                None => protocols.push(name.to_ascii_lowercase()),
            }
        }
        match target {
            Some(Target::Echo | Target::Token(_) | Target::Ca(_)) => self.error(
                &format!("{field}.upgrades"),
                "the built-in services do not take upgrades".into(),
            ),
            Some(Target::Http(up)) if up.http2() => self.error(
                &format!("{field}.upgrades"),
                format!(
                    "upstream {:?} has http2 = true; HTTP/1.1 upgrades need an HTTP/1.1 upstream",
                    up.name
                ),
            ),
            _ => {}
        }
        let idle_timeout = self.duration(
            &idle_field,
            r.upgrade_idle_timeout.as_ref(),
            upgrade::DEFAULT_IDLE_TIMEOUT,
        );
        Some(Arc::new(upgrade::Upgrades { protocols, idle_timeout }))
    }
}

/// Whether `name` (lowercase) is a server name a policy or passthrough can match: a DNS
/// name, or `*.` and one.
fn server_name_ok(name: &str) -> bool {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    !bare.is_empty()
        && !bare.contains('*')
        && rustls_pki_types::DnsName::try_from(bare).is_ok()
        && bare.parse::<std::net::IpAddr>().is_err()
}

/// Why `name` cannot name a route: it becomes a metric label, so it is short and plain.
fn route_name_problem(name: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
    if name.is_empty() || name.len() > 64 || !name.chars().all(plain) {
        return Err(format!(
            "{name:?}: a route name is 1 to 64 letters, digits, '-', '_', '.' or '/'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Absurd nesting is refused before parsing, naming the line; brackets in strings and
    /// comments do not count.
    #[test]
    fn absurd_nesting_is_refused_before_parsing() {
        let deep = format!("x = {}1{}\n", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(too_deep(&deep, MAX_NESTING), Some(1));
        let fine = "# [[[[\n[[route]]\npath = \"/[[[[{{{{\"\nx = '[[[['\ny = \"\"\"\n[[[[\n\"\"\"\nz = [[1], {a = [2]}]\n";
        assert_eq!(too_deep(fine, 3), None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep.toml");
        std::fs::write(&path, &deep).unwrap();
        let err = load(&path).err().unwrap();
        assert_eq!(err.0[0].field, "line 1");
        assert!(err.0[0].reason.contains("nested more than 64 levels"), "{err}");
    }

    /// Route names become metric labels: plain, short, and each used once.
    #[test]
    fn route_names_are_plain_and_unique() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("names.toml");
        let route = |name: &str| format!("[[route]]\nname = {name:?}\nupstream = \"@echo\"\n");
        let text = route("api") + &route("api") + &route("bad name") + &route("");
        std::fs::write(&path, text).unwrap();
        let err = load(&path).err().unwrap();
        let reason =
            |field: &str| err.0.iter().find(|e| e.field == field).map(|e| e.reason.clone());
        assert_eq!(reason("route[0].name"), None);
        assert_eq!(reason("route[1].name").as_deref(), Some("\"api\" names two routes"));
        assert!(reason("route[2].name").unwrap().contains("1 to 64 letters"), "{err}");
        assert!(reason("route[3].name").unwrap().contains("1 to 64 letters"), "{err}");
        assert_eq!(route_name_problem("team-a/api.v2"), Ok(()));
    }
}
