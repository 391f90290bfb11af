//! Where a route sends requests ([`Target`]): a pooled upstream, or a built-in service.
//!
//! An [`Upstream`] is one pooled hyper client (keep-alive, HTTP/1.1 or HTTP/2, plain or TLS).
//! TLS upstreams are verified by default, against the configured CA or the system roots and the
//! URL's host (or `server_name`), and may be sent a client certificate (seed 001's
//! `proxy_ssl_certificate` + `proxy_ssl_verify on`). Requests in flight to one upstream are
//! capped (`max_connections`): over HTTP/1.1 each is a connection.
//!
//! Upstreams whose settings a reload leaves unchanged are shared across generations
//! ([`Upstream::shared`]), so their pools survive reloads.
//!
//! Failures are answered with the upstream's configured name only; the cause (addresses,
//! TLS errors) goes to the log, never to the client.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http::uri::{Authority, Scheme};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::http::body::{BodyError, Guarded};
use crate::http::reject::Reject;
use crate::metrics::{UpstreamErrorKind, upstream_error};

/// Any error a body can fail with.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The body type the gateway sends upstream and back.
pub type Body = BoxBody<Bytes, BoxError>;

/// Where the system CA bundle lives on Debian/Ubuntu (and, via symlink, most distributions).
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Where a route's requests go. Matched exhaustively in the forward phase.
pub enum Target {
    /// A configured upstream.
    Http(Arc<Upstream>),
    /// The built-in echo service (`upstream = "@echo"`): answers with the request as an
    /// upstream would have received it.
    Echo,
    /// The built-in OAuth token service (`upstream = "@oauth"`).
    Token(Arc<certgate_token::service::TokenService>),
    /// The online CA (`upstream = "@ca"`), served by `certgate ca serve`.
    Ca(Arc<crate::ca::CaService>),
}

impl Target {
    /// The name as configured (`@echo` for the built-in service).
    pub fn name(&self) -> &str {
        match self {
            Target::Http(u) => &u.name,
            Target::Echo => "@echo",
            Target::Token(_) => "@oauth",
            Target::Ca(_) => "@ca",
        }
    }
}

/// Why an upstream could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the URL has no host")]
    NoHost,
    #[error("server_name {0:?} is not a valid DNS name or IP address")]
    ServerName(String),
    #[error("no ca is configured and the system CA bundle {SYSTEM_ROOTS} is unusable; set ca")]
    SystemRoots(#[source] certgate_pki::PkiError),
    #[error("none of the {0} CA certificates can be used as a trust anchor")]
    NoUsableRoots(usize),
    #[error("client certificate")]
    ClientCert(#[source] rustls::Error),
    #[error("TLS settings")]
    Tls(#[source] rustls::Error),
}

/// Everything needed to build an upstream.
pub struct UpstreamSettings {
    pub name: String,
    pub uri: Uri,
    pub tls: bool,
    /// Trust anchors for a TLS upstream; empty: the system roots.
    pub roots: Vec<CertificateDer<'static>>,
    pub server_name: Option<String>,
    pub client_identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    pub http2: bool,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub max_idle: usize,
    /// Requests in flight at once (each a connection over HTTP/1.1).
    pub max_connections: usize,
}

impl UpstreamSettings {
    /// SHA-256 over every setting, key material included (never stored, only hashed).
    fn digest(&self) -> [u8; 32] {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut field = |bytes: &[u8]| {
            ctx.update(&(bytes.len() as u64).to_be_bytes());
            ctx.update(bytes);
        };
        field(self.name.as_bytes());
        field(self.uri.to_string().as_bytes());
        field(&[u8::from(self.tls), u8::from(self.http2)]);
        for root in &self.roots {
            field(root);
        }
        field(self.server_name.as_deref().unwrap_or("").as_bytes());
        if let Some((chain, key)) = &self.client_identity {
            for cert in chain {
                field(cert);
            }
            field(key.secret_der());
        }
        for n in [
            self.connect_timeout.as_nanos(),
            self.response_timeout.as_nanos(),
            self.max_idle as u128,
            self.max_connections as u128,
        ] {
            field(&n.to_be_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

/// A pooled upstream.
pub struct Upstream {
    pub name: String,
    scheme: Scheme,
    authority: Authority,
    http2: bool,
    connect_timeout: Duration,
    pub response_timeout: Duration,
    in_flight: Arc<Semaphore>,
    client: Client<HttpsConnector<HttpConnector>, Body>,
}

/// Upstreams alive in this process, by a digest of their settings: a reload that leaves an
/// upstream's settings unchanged gets the same upstream back, with its pool of open
/// connections, instead of reconnecting. A changed setting (a renewed client certificate, a
/// new CA) gives a new upstream, whose connections present and verify the new files.
static SHARED: std::sync::OnceLock<std::sync::Mutex<HashMap<[u8; 32], Weak<Upstream>>>> =
    std::sync::OnceLock::new();

impl Upstream {
    /// The upstream for `s`: the one already serving with identical settings, or a new one.
    pub fn shared(s: UpstreamSettings) -> Result<Arc<Upstream>, UpstreamError> {
        let key = s.digest();
        let map = SHARED.get_or_init(Default::default);
        // The map only holds weak references and digests: a panic elsewhere cannot leave it
        // in a state worth refusing to read.
        let mut map = map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(up) = map.get(&key).and_then(Weak::upgrade) {
            return Ok(up);
        }
        let up = Arc::new(Upstream::new(s)?);
        map.retain(|_, weak| weak.strong_count() > 0);
        map.insert(key, Arc::downgrade(&up));
        Ok(up)
    }

    pub fn new(s: UpstreamSettings) -> Result<Upstream, UpstreamError> {
        let authority = s.uri.authority().cloned().ok_or(UpstreamError::NoHost)?;
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(s.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let tls = client_tls(&s)?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
        let builder = if s.tls { builder.https_only() } else { builder.https_or_http() };
        let builder = match &s.server_name {
            Some(name) => {
                let name = rustls_pki_types::ServerName::try_from(name.clone())
                    .map_err(|_| UpstreamError::ServerName(name.clone()))?;
                builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
            }
            None => builder,
        };
        let connector = if s.http2 {
            builder.enable_http2().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
        // Idle pooled connections are closed after 90 s: below the 100-120 s keep-alive of
        // common upstream servers, so the gateway, not the upstream, closes them, and a
        // request never races an upstream's close.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(s.max_idle)
            .pool_idle_timeout(Duration::from_secs(90))
            .http2_only(s.http2)
            .build(connector);
        Ok(Upstream {
            name: s.name,
            scheme: if s.tls { Scheme::HTTPS } else { Scheme::HTTP },
            authority,
            http2: s.http2,
            connect_timeout: s.connect_timeout,
            response_timeout: s.response_timeout,
            in_flight: Arc::new(Semaphore::new(s.max_connections.max(1))),
            client,
        })
    }

    /// Sends `req` (whose URI holds only the path and query) and returns the response, or the
    /// refusal that explains why there is none. The response body holds a slot of the
    /// upstream's `max_connections` until it ends.
    pub async fn send(
        &self,
        mut req: http::Request<Body>,
    ) -> Result<http::Response<Guarded>, Reject> {
        let permit = self.permit().await?;
        let path = req.uri().path_and_query().cloned();
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = path.or_else(|| Some(http::uri::PathAndQuery::from_static("/")));
        *req.uri_mut() = Uri::from_parts(parts).map_err(|e| {
            tracing::warn!(upstream = %self.name, error = %e, "cannot build the upstream URI");
            Reject::UpstreamUnreachable { upstream: self.name.clone() }
        })?;
        *req.version_mut() =
            if self.http2 { http::Version::HTTP_2 } else { http::Version::HTTP_11 };
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Err(_) => {
                tracing::warn!(upstream = %self.name, after = ?self.response_timeout,
                    "upstream did not answer in time");
                upstream_error(&self.name, UpstreamErrorKind::timeout);
                Err(Reject::UpstreamTimeout {
                    upstream: self.name.clone(),
                    after: self.response_timeout,
                })
            }
            Ok(Ok(resp)) => Ok(resp.map(|body| Guarded::new(boxed(body), Some(permit)))),
            Ok(Err(e)) => Err(self.classify(&e)),
        }
    }

    /// Whether requests go over HTTP/2 (`http2 = true`).
    pub fn http2(&self) -> bool {
        self.http2
    }

    /// A slot of `max_connections`, waiting at most `connect_timeout` for one.
    async fn permit(&self) -> Result<OwnedSemaphorePermit, Reject> {
        if let Ok(p) = self.in_flight.clone().try_acquire_owned() {
            return Ok(p);
        }
        match tokio::time::timeout(self.connect_timeout, self.in_flight.clone().acquire_owned())
            .await
        {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(upstream = %self.name, "upstream at its max_connections");
                upstream_error(&self.name, UpstreamErrorKind::busy);
                Err(Reject::UpstreamBusy { upstream: self.name.clone() })
            }
        }
    }

    /// What the client is told; the cause goes to the log.
    fn classify(&self, e: &hyper_util::client::legacy::Error) -> Reject {
        let mut source: Option<&(dyn StdError + 'static)> = e.source();
        while let Some(err) = source {
            if let Some(body) = err.downcast_ref::<BodyError>() {
                return match body {
                    BodyError::Stalled { after } => Reject::BodyTimeout { after: *after },
                    BodyError::TooLarge { limit } => Reject::BodyTooLarge { limit: *limit },
                };
            }
            if err.downcast_ref::<std::io::Error>().map(std::io::Error::kind)
                == Some(std::io::ErrorKind::TimedOut)
            {
                tracing::warn!(upstream = %self.name, address = %self.authority,
                    "cannot connect: timed out after {:?}", self.connect_timeout);
                upstream_error(&self.name, UpstreamErrorKind::timeout);
                return Reject::UpstreamTimeout {
                    upstream: self.name.clone(),
                    after: self.connect_timeout,
                };
            }
            source = err.source();
        }
        let what = if e.is_connect() { "cannot connect" } else { "request failed" };
        upstream_error(&self.name, error_kind(e));
        tracing::warn!(upstream = %self.name, address = %format!("{}://{}", self.scheme, self.authority),
            cause = %causes(e), "{what}");
        Reject::UpstreamUnreachable { upstream: self.name.clone() }
    }
}

/// The `kind` label of a failed upstream request that is not a timeout: TLS if rustls
/// refused, connect if no connection was made, reset otherwise (the upstream closed or reset
/// the connection before its response was complete).
fn error_kind(e: &hyper_util::client::legacy::Error) -> UpstreamErrorKind {
    let mut source: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(err) = source {
        // An io::Error's source() skips the error it wraps (the TLS connector wraps rustls's
        // error in two of them), so look inside each.
        let mut inner: &(dyn StdError + 'static) = err;
        while let Some(wrapped) = inner.downcast_ref::<std::io::Error>().and_then(|e| e.get_ref()) {
            inner = wrapped;
        }
        if err.is::<rustls::Error>() || inner.is::<rustls::Error>() {
            return UpstreamErrorKind::tls;
        }
        source = err.source();
    }
    if e.is_connect() { UpstreamErrorKind::connect } else { UpstreamErrorKind::reset }
}

/// The innermost causes of an error, joined: "connection refused", "invalid peer certificate:
/// UnknownIssuer", ... (for the log).
fn causes(e: &(dyn StdError + 'static)) -> String {
    let mut parts = Vec::new();
    let mut current = e.source();
    while let Some(err) = current {
        let text = err.to_string();
        if !text.is_empty() && !parts.contains(&text) {
            parts.push(text);
        }
        current = err.source();
    }
    if parts.is_empty() { e.to_string() } else { parts.join(": ") }
}

fn client_tls(s: &UpstreamSettings) -> Result<rustls::ClientConfig, UpstreamError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    if s.tls {
        let anchors = if s.roots.is_empty() {
            certgate_pki::pem::read_certs(std::path::Path::new(SYSTEM_ROOTS))
                .map_err(UpstreamError::SystemRoots)?
        } else {
            s.roots.clone()
        };
        let (_, ignored) = roots.add_parsable_certificates(anchors);
        if roots.is_empty() {
            return Err(UpstreamError::NoUsableRoots(ignored));
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(UpstreamError::Tls)?
        .with_root_certificates(roots);
    let config = match &s.client_identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(UpstreamError::ClientCert)?,
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}
