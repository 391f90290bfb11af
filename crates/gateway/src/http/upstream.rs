//! Upstreams: one pooled hyper client each (keep-alive, HTTP/1.1 or HTTP/2, plain or TLS).
//! TLS upstreams are verified by default, against the configured CA or the system roots and
//! the URL's host (or `server_name`), and may be sent a client certificate (seed 001's
//! `proxy_ssl_certificate` + `proxy_ssl_verify on`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http::uri::{Authority, Scheme};
use http_body_util::combinators::BoxBody;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::http::reject::Reject;

/// The body type the gateway sends upstream and back.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Where the system CA bundle lives on Debian/Ubuntu (and, via symlink, most distributions).
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

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
}

/// A pooled upstream.
pub struct Upstream {
    pub name: String,
    scheme: Scheme,
    authority: Authority,
    http2: bool,
    pub response_timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Body>,
}

impl Upstream {
    pub fn new(s: UpstreamSettings) -> Result<Upstream, String> {
        let authority = s.uri.authority().cloned().ok_or("the URL has no host")?;
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
                    .map_err(|_| format!("server_name {name:?} is not a valid DNS name or IP"))?;
                builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
            }
            None => builder,
        };
        let connector = if s.http2 {
            builder.enable_http2().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
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
            response_timeout: s.response_timeout,
            client,
        })
    }

    /// Sends `req` (whose URI holds only the path and query) and returns the response, or the
    /// refusal that explains why there is none.
    pub async fn send(
        &self,
        mut req: http::Request<Body>,
    ) -> Result<http::Response<hyper::body::Incoming>, Reject> {
        let path = req.uri().path_and_query().cloned();
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = path.or_else(|| Some(http::uri::PathAndQuery::from_static("/")));
        *req.uri_mut() = Uri::from_parts(parts).map_err(|e| Reject::UpstreamUnreachable {
            upstream: self.name.clone(),
            cause: format!("cannot build the upstream URI: {e}"),
        })?;
        *req.version_mut() =
            if self.http2 { http::Version::HTTP_2 } else { http::Version::HTTP_11 };
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Err(_) => Err(Reject::UpstreamTimeout {
                upstream: self.name.clone(),
                after: self.response_timeout,
            }),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.classify(&e)),
        }
    }

    fn classify(&self, e: &hyper_util::client::legacy::Error) -> Reject {
        let cause = causes(e);
        if cause.contains("timed out")
            || cause.contains("timeout")
            || cause.contains("deadline has elapsed")
        {
            return Reject::UpstreamTimeout {
                upstream: self.name.clone(),
                after: self.response_timeout,
            };
        }
        let what = if e.is_connect() { "cannot connect" } else { "request failed" };
        Reject::UpstreamUnreachable {
            upstream: format!("{} ({}://{})", self.name, self.scheme, self.authority),
            cause: format!("{what}: {cause}"),
        }
    }
}

/// The innermost causes of an error, joined: "connection refused", "invalid peer certificate:
/// UnknownIssuer", ...
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
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

fn client_tls(s: &UpstreamSettings) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    if s.tls {
        let anchors = if s.roots.is_empty() {
            certgate_pki::pem::read_certs(std::path::Path::new(SYSTEM_ROOTS)).map_err(|e| {
                let e = certgate_pki::error::with_causes(&e);
                format!("no ca configured and the system CA bundle is unusable ({e}); set ca")
            })?
        } else {
            s.roots.clone()
        };
        let (_, ignored) = roots.add_parsable_certificates(anchors);
        if roots.is_empty() {
            return Err(format!(
                "none of the {ignored} CA certificates can be used as a trust anchor"
            ));
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match &s.client_identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| format!("client certificate: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}
