//! The online CA as a route target (`upstream = "@ca"`, run by `certgate ca serve`).
//!
//! - `GET /health`: `{"status":"ok"}` while the CA thread takes jobs;
//! - `GET /roots`: the root certificate, PEM (`?format=json`: `{"crts":[PEM]}`);
//! - `GET /crl/<issuer>.crl`: the DER CRL of `intermediate` or `root` (also at the path of
//!   the CA's `--crl-url` base, which the certificates' CRL distribution points name);
//! - `POST /sign`: `{"csr": PEM, "ott": token, "notBefore"?, "notAfter"?}`, a CSR with a
//!   one-time token (`certgate ca token`), answered `201 {"crt","ca","certChain"}`;
//! - `POST /renew`: the client certificate of this connection renewed (same key, subject,
//!   SANs and profile), answered like `/sign`;
//! - `POST /rekey`: `{"csr": PEM}` over mTLS: the client certificate of this connection
//!   renewed for the CSR's (new) key, answered like `/sign`.
//!
//! `certgate ca serve --crl-listen ADDR` also serves `GET /crl/<issuer>.crl` and `GET /roots`
//! (and nothing else) over plain HTTP ([`serve_plain`]), the scheme of the CRL distribution
//! points in the certificates; CRLs carry `Cache-Control: max-age` up to their nextUpdate.
//!
//! Requests reach it after the route's phases; it answers itself and never forwards. Work on
//! the CA (signing, the inventory) runs on the CA thread ([`actor`]), never on the runtime.
//! Every refusal is a [`CaError`], answered in one exhaustive map ([`CaError::status`]) as
//! `{"status":N,"message":"..."}` (step-ca's error shape).

pub mod actor;
pub mod fault;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use certgate_pki::PkiError;
use certgate_pki::ca::Authority;
use certgate_pki::crl::CrlIssuer;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::config::{Config, ConfigErrors};
use crate::http::pipeline::{ConnInfo, text};
use crate::http::reject::Reject;
use crate::http::upstream::Body;
use crate::tls::server::ClientCert;

pub use actor::{CaHandle, CaState, Presented};

/// The largest `POST /sign` or `/rekey` body read.
const MAX_SIGN_BODY: usize = 64 * 1024;

/// The body of `POST /sign` (step-ca's SignRequest).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct SignRequest {
    pub csr: String,
    pub ott: String,
    #[serde(rename = "notBefore")]
    pub not_before: Option<String>,
    #[serde(rename = "notAfter")]
    pub not_after: Option<String>,
}

/// The body of `POST /rekey`: a CSR for the new key (its names are not used).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct RekeyRequest {
    pub csr: String,
}

/// A certificate signed for `POST /sign`, `/renew` or `/rekey`.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The leaf, PEM.
    pub crt: String,
    /// The CA that signed it, PEM.
    pub ca: String,
    /// The leaf and the intermediates, PEM each.
    pub chain: Vec<String>,
    pub serial: String,
    pub name: String,
}

/// Jobs waiting for the CA thread before new ones are refused with 503.
pub const DEFAULT_QUEUE: usize = 64;

/// Seconds a client told 503 (queue full) is asked to wait.
const RETRY_AFTER_SECONDS: u64 = 1;

/// Why the CA service refused or failed a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    #[error("the CA is busy; try again in {RETRY_AFTER_SECONDS} s")]
    Busy,
    #[error("the CA service has stopped")]
    Stopped,
    #[error("cannot start the CA thread")]
    Thread {
        #[source]
        source: std::io::Error,
    },
    #[error("no CRL issuer named {name:?}; this CA publishes {}", issuer_list(known))]
    UnknownIssuer { name: String, known: Vec<CrlIssuer> },
    #[error(
        "the {issuer}'s CRL has not been made yet; its key stays offline: run `certgate crl \
         --issuer {issuer}` in the CA directory"
    )]
    NoOfflineCrl { issuer: CrlIssuer },
    #[error("method not allowed here (allowed: {allow})")]
    MethodNotAllowed { allow: &'static str },
    #[error(
        "only GET /crl/<issuer>.crl and GET /roots are served over plain HTTP; the rest is on \
         the CA's HTTPS listener"
    )]
    NotOnPlainHttp,
    #[error("the format must be pem or json, not {value:?}")]
    BadFormat { value: String },
    #[error("{0}")]
    Token(certgate_token::ott::OttError),
    #[error("token already used")]
    TokenUsed,
    #[error(
        "missing client certificate: renew or rekey over mTLS, presenting the certificate to \
         renew (it needs the clientAuth usage)"
    )]
    NoClientCertificate,
    #[error("{reason}")]
    RenewRefused { reason: String },
    #[error("{reason}")]
    NameNotAllowed { reason: String },
    #[error("{reason}")]
    BadRequest { reason: String },
    #[error("{}", certgate_pki::error::with_causes(.0))]
    BadCsr(PkiError),
    #[error("the CA failed")]
    Pki(#[from] PkiError),
}

impl CaError {
    /// An issuance failure: a used token (401), a request the CA's rules refuse (400), or a
    /// failure of the CA itself (500).
    fn from_issuance(e: PkiError) -> CaError {
        if let PkiError::TokenUsed { .. } = e {
            return CaError::TokenUsed;
        }
        let refused = matches!(
            e,
            PkiError::InvalidName { .. }
                | PkiError::InvalidSan { .. }
                | PkiError::CsrRejected { .. }
                | PkiError::OutsideNameConstraints { .. }
                | PkiError::InvalidValidity { .. }
                | PkiError::LifetimeTooLong { .. }
                | PkiError::TimeOutOfRange { .. }
                | PkiError::RekeySameKey { .. }
        );
        match refused {
            true => CaError::BadCsr(e),
            false => CaError::Pki(e),
        }
    }
}

impl CaError {
    /// The HTTP status of each refusal; one match, no catch-all.
    pub fn status(&self) -> StatusCode {
        match self {
            CaError::Busy | CaError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            CaError::UnknownIssuer { .. }
            | CaError::NoOfflineCrl { .. }
            | CaError::NotOnPlainHttp => StatusCode::NOT_FOUND,
            CaError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            CaError::BadFormat { .. } | CaError::BadRequest { .. } | CaError::BadCsr(_) => {
                StatusCode::BAD_REQUEST
            }
            CaError::Token(_) | CaError::TokenUsed | CaError::RenewRefused { .. } => {
                StatusCode::UNAUTHORIZED
            }
            CaError::NoClientCertificate => StatusCode::BAD_REQUEST,
            CaError::NameNotAllowed { .. } => StatusCode::FORBIDDEN,
            CaError::Thread { .. } | CaError::Pki(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told: the reason for a refusal; nothing internal for a failure
    /// (that goes to the log).
    fn message(&self) -> String {
        match self.status() {
            StatusCode::INTERNAL_SERVER_ERROR => "the CA failed; its log says why".into(),
            _ => self.to_string(),
        }
    }
}

fn issuer_list(issuers: &[CrlIssuer]) -> String {
    issuers.iter().map(|i| format!("{i}.crl")).collect::<Vec<_>>().join(" and ")
}

/// The CA service: the CA thread's handle and what every request may read without it.
pub struct CaService {
    ca: CaHandle,
    root_pem: String,
    /// Where CRLs are served besides `/crl/`: the path of the `--crl-url` base (`/pki` for
    /// `http://host/pki`, `""` for `http://host:8080`), when it is another.
    crl_base_path: Option<String>,
}

impl CaService {
    /// Moves `ca` (with its provisioners) onto its own thread, with a queue of `queue` jobs.
    /// `names` are the names the service is reached at (a token's audience may name them).
    pub fn start(ca: Authority, names: Vec<String>, queue: usize) -> Result<CaService, CaError> {
        let root_pem = ca.root_pem();
        let crl_base_path = ca.crl_url().map(url_path).filter(|p| p != "/crl");
        let state = CaState::new(ca, names)?;
        Ok(CaService { ca: CaHandle::start(state, queue)?, root_pem, crl_base_path })
    }

    /// What `path` asks for, or `None` (404).
    fn endpoint<'p>(&self, path: &'p str) -> Option<Endpoint<'p>> {
        match path {
            "/health" => return Some(Endpoint::Health),
            "/roots" | "/roots.pem" => return Some(Endpoint::Roots),
            "/sign" | "/1.0/sign" => return Some(Endpoint::Sign),
            "/renew" | "/1.0/renew" => return Some(Endpoint::Renew),
            "/rekey" | "/1.0/rekey" => return Some(Endpoint::Rekey),
            _ => {}
        }
        let crl_file = |rest: &'p str| rest.strip_prefix('/').and_then(|f| f.strip_suffix(".crl"));
        if let Some(name) = path.strip_prefix("/crl").and_then(crl_file) {
            return Some(Endpoint::Crl(name));
        }
        let base = self.crl_base_path.as_deref()?;
        path.strip_prefix(base).and_then(crl_file).map(Endpoint::Crl)
    }
}

/// What a request asks the CA service for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint<'p> {
    Health,
    Roots,
    Sign,
    Renew,
    Rekey,
    /// The CRL of the issuer named (not yet checked).
    Crl(&'p str),
}

/// Answers one request to the CA service.
///
/// Not an `async fn`: what it needs from the connection is taken (owned) before the returned
/// future starts, so that future borrows nothing from it.
pub fn answer(
    req: Request<Body>,
    conn: &ConnInfo,
    service: &Arc<CaService>,
    body_timeout: std::time::Duration,
) -> impl Future<Output = Result<Response<Body>, Reject>> + Send + 'static {
    // The identity is the certificate of this TLS connection, never a header.
    let presented = match &conn.identity.client {
        ClientCert::Verified { identity, .. } => {
            Some(Presented { der: identity.der.clone(), failure: None })
        }
        ClientCert::Failed { reason, identity: Some(identity) } => {
            Some(Presented { der: identity.der.clone(), failure: Some(reason.clone()) })
        }
        ClientCert::Failed { identity: None, .. } | ClientCert::None => None,
    };
    serve(req, service.clone(), body_timeout, presented, Scheme::Https)
}

/// Where a request to the CA service arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    /// The HTTPS listener: every endpoint.
    Https,
    /// The plain-HTTP listener (`--crl-listen`): CRLs and roots only.
    Plain,
}

async fn serve(
    req: Request<Body>,
    service: Arc<CaService>,
    body_timeout: std::time::Duration,
    presented: Option<Presented>,
    scheme: Scheme,
) -> Result<Response<Body>, Reject> {
    let path = req.uri().path().to_string();
    let endpoint = service
        .endpoint(&path)
        .filter(|e| scheme == Scheme::Https || matches!(e, Endpoint::Roots | Endpoint::Crl(_)));
    let Some(endpoint) = endpoint else {
        return match scheme {
            Scheme::Https => Err(Reject::NoRoute),
            Scheme::Plain => {
                let (_, body) = req.into_parts();
                crate::http::pipeline::drain_refused(body).await;
                Ok(error(&CaError::NotOnPlainHttp))
            }
        };
    };
    let post = matches!(endpoint, Endpoint::Sign | Endpoint::Renew | Endpoint::Rekey);
    let reads_body = matches!(endpoint, Endpoint::Sign | Endpoint::Rekey);
    let method_ok = match post {
        true => req.method() == Method::POST,
        false => matches!(*req.method(), Method::GET | Method::HEAD),
    };
    // Only /sign and /rekey read their body. Any other body is read and dropped first: ending
    // a request with its body unread resets an HTTP/2 stream, and the client would lose the
    // answer.
    let req = if method_ok && reads_body {
        req
    } else {
        let (parts, body) = req.into_parts();
        crate::http::pipeline::drain_refused(body).await;
        Request::from_parts(parts, crate::http::upstream::boxed(http_body_util::Empty::new()))
    };
    if !method_ok {
        let allow = if post { "POST" } else { "GET, HEAD" };
        return Ok(error(&CaError::MethodNotAllowed { allow }));
    }
    let outcome = match endpoint {
        Endpoint::Health => Ok(health(&service)),
        Endpoint::Roots => roots(&service, req.uri().query()),
        Endpoint::Crl(name) => crl(&service, name).await,
        Endpoint::Sign => sign(&service, req, body_timeout).await,
        Endpoint::Renew => match presented {
            Some(presented) => {
                let signed = service.ca.ask(|reply| actor::Job::Renew { presented, reply }).await;
                signed.map(|s| signed_response(&s))
            }
            None => Err(CaError::NoClientCertificate),
        },
        Endpoint::Rekey => rekey(&service, req, body_timeout, presented).await,
    };
    Ok(outcome.unwrap_or_else(|e| {
        if e.status() != StatusCode::INTERNAL_SERVER_ERROR {
            tracing::info!(error = %e, "CA service refused a request");
        }
        error(&e)
    }))
}

/// `POST /sign`: the JSON body (at most [`MAX_SIGN_BODY`], within the listener's body
/// timeout) goes to the CA thread; the answer is `201` with step-ca's SignResponse.
async fn sign(
    service: &CaService,
    req: Request<Body>,
    timeout: std::time::Duration,
) -> Result<Response<Body>, CaError> {
    let body = read_body(req, timeout).await?;
    let request: SignRequest = serde_json::from_slice(&body).map_err(|e| CaError::BadRequest {
        reason: format!("the body is not a sign request ({{\"csr\", \"ott\"}}): {e}"),
    })?;
    let signed = service.ca.ask(|reply| actor::Job::Sign { request, reply }).await?;
    Ok(signed_response(&signed))
}

/// `POST /rekey`: over mTLS, the JSON body `{"csr": PEM}` (read like `/sign`'s) goes to the CA
/// thread with the certificate presented; answered like `/sign`.
async fn rekey(
    service: &CaService,
    req: Request<Body>,
    timeout: std::time::Duration,
    presented: Option<Presented>,
) -> Result<Response<Body>, CaError> {
    let body = read_body(req, timeout).await?;
    let Some(presented) = presented else {
        return Err(CaError::NoClientCertificate);
    };
    let request: RekeyRequest = serde_json::from_slice(&body).map_err(|e| CaError::BadRequest {
        reason: format!("the body is not a rekey request ({{\"csr\": PEM}}): {e}"),
    })?;
    let csr = request.csr;
    let signed = service.ca.ask(|reply| actor::Job::Rekey { presented, csr, reply }).await?;
    Ok(signed_response(&signed))
}

/// `201` with step-ca's SignResponse: `{"crt","ca","certChain"}`.
fn signed_response(signed: &Signed) -> Response<Body> {
    let body = serde_json::json!({ "crt": signed.crt, "ca": signed.ca, "certChain": signed.chain });
    json(StatusCode::CREATED, body.to_string())
}

async fn read_body(req: Request<Body>, timeout: std::time::Duration) -> Result<Vec<u8>, CaError> {
    use http_body_util::BodyExt;
    let mut body = req.into_body();
    let read = async {
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| (false, "the request body could not be read".into()))?;
            if let Some(data) = frame.data_ref() {
                if bytes.len() + data.len() > MAX_SIGN_BODY {
                    return Err((true, format!("the body is larger than {MAX_SIGN_BODY} bytes")));
                }
                bytes.extend_from_slice(data);
            }
        }
        Ok(bytes)
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err((too_large, reason))) => {
            if too_large {
                // The rest is read briefly so the answer reaches an HTTP/2 client.
                crate::http::pipeline::drain_refused(body).await;
            }
            Err(CaError::BadRequest { reason })
        }
        Err(_) => Err(CaError::BadRequest { reason: "the body did not arrive in time".into() }),
    }
}

fn health(service: &CaService) -> Response<Body> {
    match service.ca.alive() {
        true => json(StatusCode::OK, "{\"status\":\"ok\"}".into()),
        false => error(&CaError::Stopped),
    }
}

fn roots(service: &CaService, query: Option<&str>) -> Result<Response<Body>, CaError> {
    let format = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("format="))
        .unwrap_or("pem");
    match format {
        "pem" => {
            let mut resp = text(StatusCode::OK, service.root_pem.clone());
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-pem-file"));
            Ok(resp)
        }
        "json" => {
            let body = serde_json::json!({ "crts": [service.root_pem] }).to_string();
            Ok(json(StatusCode::OK, body))
        }
        other => Err(CaError::BadFormat { value: other.chars().take(64).collect() }),
    }
}

async fn crl(service: &CaService, name: &str) -> Result<Response<Body>, CaError> {
    let Some(issuer) = CrlIssuer::parse(name) else {
        return Err(CaError::UnknownIssuer {
            name: name.chars().take(64).collect(),
            known: CrlIssuer::ALL.to_vec(),
        });
    };
    let der = service.ca.ask(|reply| actor::Job::Crl { issuer, reply }).await?;
    // Cacheable until its nextUpdate, never past it (RFC 5019 §6 for OCSP, the same idea).
    let max_age = certgate_pki::crl::next_update(&der)
        .map(|next| (next - time::OffsetDateTime::now_utc()).whole_seconds().max(0))
        .unwrap_or(0);
    let mut resp = text(StatusCode::OK, Bytes::from(der));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/pkix-crl"));
    // Digits and ASCII: always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    Ok(resp)
}

/// The answer to a refusal or failure; failures are logged with their causes.
fn error(e: &CaError) -> Response<Body> {
    let status = e.status();
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %certgate_pki::error::with_causes(e), "CA service");
    }
    let body = serde_json::json!({ "status": status.as_u16(), "message": e.message() });
    let mut resp = json(status, body.to_string());
    if let CaError::Busy = e {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    }
    if let CaError::MethodNotAllowed { allow } = e {
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    resp
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = text(status, body);
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The path of an `http://host[:port]/path` URL without its trailing `/`; `""` for none.
fn url_path(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    path.trim_end_matches('/').to_string()
}

/// Serves the CA's public, cacheable endpoints over plain HTTP/1.1 on `listener` (`certgate
/// ca serve --crl-listen`): `GET`/`HEAD /crl/<issuer>.crl` (and at the `--crl-url` base's
/// path) and `/roots`, answered by the same handlers and CA thread as the HTTPS listener.
/// Anything else is `404` naming what is served here. Each connection may last a minute.
pub async fn serve_plain(listener: tokio::net::TcpListener, service: Arc<CaService>) {
    use hyper_util::rt::TokioIo;
    /// Requests are small and answers cached; a stuck client is dropped after this.
    const CONNECTION_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let service = service.clone();
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let req = req.map(crate::http::upstream::boxed);
                let outcome = serve(req, service.clone(), CONNECTION_LIMIT, None, Scheme::Plain);
                async move {
                    let resp = outcome.await.unwrap_or_else(|_| error(&CaError::NotOnPlainHttp));
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), handler);
            let _ = tokio::time::timeout(CONNECTION_LIMIT, conn).await;
        });
    }
}

/// What `certgate ca serve` listens with.
pub struct ServeSettings {
    pub listen: SocketAddr,
    /// The service's own certificate (chain) and key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA's root: client certificates are verified against it (optional: `/sign` and the
    /// public endpoints need none).
    pub root: PathBuf,
    /// Named in configuration errors (the CA directory).
    pub origin: PathBuf,
}

/// The gateway configuration of `certgate ca serve`, built in code: one listener (client
/// certificates optional, trusting the CA's root) whose every request goes to `service`.
pub fn config(settings: &ServeSettings, service: Arc<CaService>) -> Result<Config, ConfigErrors> {
    let path = |p: &PathBuf| toml::Value::String(p.display().to_string());
    let mut cert = toml::Table::new();
    cert.insert("cert".into(), path(&settings.cert));
    cert.insert("key".into(), path(&settings.key));
    let mut client_auth = toml::Table::new();
    client_auth.insert("mode".into(), "optional".into());
    client_auth.insert("trust".into(), toml::Value::Array(vec![path(&settings.root)]));
    let mut listener = toml::Table::new();
    listener.insert("name".into(), "ca".into());
    listener.insert("listen".into(), settings.listen.to_string().into());
    listener.insert("certificates".into(), toml::Value::Array(vec![cert.into()]));
    listener.insert("client_auth".into(), client_auth.into());
    // Clients reach a CA by IP address as often as by name; one service, nothing to confuse.
    listener.insert("sni_host_check".into(), false.into());
    let mut route = toml::Table::new();
    route.insert("name".into(), "ca".into());
    route.insert("upstream".into(), "@ca".into());
    route.insert("client_cert".into(), "optional".into());
    let mut raw = toml::Table::new();
    raw.insert("listener".into(), toml::Value::Array(vec![listener.into()]));
    raw.insert("route".into(), toml::Value::Array(vec![route.into()]));
    let raw: crate::config::raw::RawConfig = toml::Value::Table(raw).try_into().map_err(|e| {
        ConfigErrors(vec![crate::config::ConfigError {
            file: settings.origin.clone(),
            field: String::new(),
            reason: format!("the built-in configuration: {e}"),
        }])
    })?;
    crate::config::build_with(raw, &settings.origin, Some(service))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRL paths: `/crl/<issuer>.crl`, and the `--crl-url` base's path when it differs.
    #[test]
    fn crl_paths_follow_the_crl_url_base() {
        assert_eq!(url_path("http://pki.example.com/crl"), "/crl");
        assert_eq!(url_path("http://pki.example.com:8080/a/b/"), "/a/b");
        assert_eq!(url_path("http://pki.example.com"), "");
        assert_eq!(url_path("http://pki.example.com/"), "");
    }

    /// Every refusal has its status; failures never show their cause to the client.
    #[test]
    fn refusals_map_to_statuses_and_failures_hide_their_cause() {
        assert_eq!(CaError::Busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        let unknown = CaError::UnknownIssuer {
            name: "leaf".into(),
            known: vec![CrlIssuer::Intermediate, CrlIssuer::Root],
        };
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        assert!(unknown.message().contains("intermediate.crl and root.crl"), "{unknown}");
        let failed = CaError::Pki(PkiError::NoCa { dir: "/secret/dir".into(), reason: "x" });
        assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!failed.message().contains("/secret/dir"));
    }
}
