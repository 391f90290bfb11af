//! HTTPS to the online CA (`certgate ca serve`): its `/roots`, `/sign`, `/renew` and `/rekey`,
//! trusting only the pinned root, and the checks made on what it answers.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::RenewalError;

/// How long one request to the CA may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer read from the CA (a chain of a few certificates is a few KiB).
const MAX_ANSWER: usize = 256 * 1024;

/// How the CA's root is known.
#[derive(Debug, Clone)]
pub enum RootPin {
    /// The root certificate itself (from a file the user gave).
    Root(CertificateDer<'static>),
    /// Its SHA-256 fingerprint (hex, colons allowed): the root is fetched from `/roots` and
    /// used only when it matches.
    Fingerprint(String),
}

/// A connection to the online CA at `url`, trusting its pinned root only.
pub struct CaClient {
    url: String,
    root: CertificateDer<'static>,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// What the CA answered to `/sign`, `/renew` or `/rekey`: the leaf first, then the
/// intermediates.
#[derive(Debug, Clone)]
pub struct Answer {
    pub chain: Vec<CertificateDer<'static>>,
}

/// A TLS identity to present: the certificate chain and its key.
pub type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

impl CaClient {
    /// Connects (lazily) to `url`, presenting `identity` when given (for `/renew` and
    /// `/rekey`). With a fingerprint, the root is fetched first and checked against it.
    pub async fn new(
        url: &str,
        pin: &RootPin,
        identity: Option<Identity>,
    ) -> Result<CaClient, RenewalError> {
        let url = url.trim_end_matches('/').to_string();
        if !url.starts_with("https://") {
            return Err(RenewalError::Url {
                url,
                reason: "the online CA is reached over https://",
            });
        }
        let root = match pin {
            RootPin::Root(root) => root.clone(),
            RootPin::Fingerprint(fingerprint) => fetch_pinned_root(&url, fingerprint).await?,
        };
        let config = tls_config(Some(std::slice::from_ref(&root)), identity)?;
        Ok(CaClient { client: http_client(config, Scheme::Https), url, root })
    }

    /// The pinned root.
    pub fn root(&self) -> &CertificateDer<'static> {
        &self.root
    }

    /// The CA's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// POSTs `body` to `path` and returns the certificate chain the CA answered.
    pub async fn post(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Answer, RenewalError> {
        let url = self.url(path);
        let mut req = http::Request::post(&url);
        let body = match body {
            Some(json) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(json.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req
            .body(body)
            .map_err(|_| RenewalError::Url { url: url.clone(), reason: "not a valid URL" })?;
        let (status, bytes) = send(&self.client, &url, req, MAX_ANSWER).await?;
        if !status.is_success() {
            return Err(RenewalError::Refused {
                url,
                status: status.as_u16(),
                message: ca_message(&bytes),
            });
        }
        let bad = |reason: String| RenewalError::Answer { url: url.clone(), reason };
        let json: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        let pems = json["certChain"]
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| bad("no \"certChain\"".into()))?;
        let mut chain = Vec::new();
        for pem in pems {
            let pem = pem.as_str().ok_or_else(|| bad("\"certChain\" holds a non-string".into()))?;
            let certs = certgate_pki::pem::certs_from_bytes(pem.as_bytes())
                .map_err(|reason| bad(format!("\"certChain\": {reason}")))?;
            chain.extend(certs);
        }
        Ok(Answer { chain })
    }
}

/// The CA's reason from a `{"status":N,"message":"..."}` answer, or the body itself.
fn ca_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().chars().take(300).collect())
}

async fn send(
    client: &Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: &str,
    req: http::Request<Full<Bytes>>,
    limit: usize,
) -> Result<(http::StatusCode, Bytes), RenewalError> {
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| RenewalError::Connect {
            url: url.to_string(),
            // The connection error's own text is generic; its causes say what failed.
            reason: certgate_pki::error::with_causes(&e),
        })?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .map_err(|e| RenewalError::Answer {
                url: url.to_string(),
                reason: format!("reading it: {e}"),
            })?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| RenewalError::Timeout { url: url.to_string(), after: REQUEST_TIMEOUT })?
}

/// `GET url` over http:// or https:// (the server's certificate must chain to one of
/// `roots`), with the answer's body up to `limit` bytes; anything but 200 is an error.
pub async fn fetch(
    url: &str,
    roots: &[CertificateDer<'static>],
    limit: usize,
) -> Result<Bytes, RenewalError> {
    let client = http_client(tls_config(Some(roots), None)?, Scheme::HttpOrHttps);
    let req = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|_| RenewalError::Url { url: url.to_string(), reason: "not a valid URL" })?;
    let (status, body) = send(&client, url, req, limit).await?;
    if status != http::StatusCode::OK {
        return Err(RenewalError::Refused {
            url: url.to_string(),
            status: status.as_u16(),
            message: ca_message(&body),
        });
    }
    Ok(body)
}

/// `GET URL/roots` without trusting the server yet, and the root it answers only if its
/// SHA-256 is `fingerprint`: the answer is checked, not the connection.
async fn fetch_pinned_root(
    url: &str,
    fingerprint: &str,
) -> Result<CertificateDer<'static>, RenewalError> {
    let want = normalize_fingerprint(fingerprint);
    if want.len() != 64 || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RenewalError::Fingerprint {
            value: fingerprint.to_string(),
            reason: "not a SHA-256 fingerprint (64 hex digits)".into(),
        });
    }
    let client = http_client(tls_config(None, None)?, Scheme::Https);
    let roots_url = format!("{url}/roots");
    let req = http::Request::get(&roots_url)
        .body(Full::new(Bytes::new()))
        .map_err(|_| RenewalError::Url { url: roots_url.clone(), reason: "not a valid URL" })?;
    let (status, body) = send(&client, &roots_url, req, MAX_ANSWER).await?;
    if !status.is_success() {
        return Err(RenewalError::Refused {
            url: roots_url,
            status: status.as_u16(),
            message: ca_message(&body),
        });
    }
    let certs = certgate_pki::pem::certs_from_bytes(&body)
        .map_err(|reason| RenewalError::Answer { url: roots_url.clone(), reason })?;
    for cert in certs {
        let info = certgate_pki::inspect::cert_info(&cert)?;
        if normalize_fingerprint(&info.sha256_fingerprint) == want {
            return Ok(cert);
        }
    }
    Err(RenewalError::Fingerprint {
        value: fingerprint.to_string(),
        reason: format!(
            "{roots_url}: the CA's root does not have this SHA-256 fingerprint; refusing to \
             trust it"
        ),
    })
}

fn normalize_fingerprint(s: &str) -> String {
    s.trim().trim_start_matches("sha256:").replace(':', "").to_ascii_lowercase()
}

/// The URL schemes a client may use.
enum Scheme {
    Https,
    HttpOrHttps,
}

fn http_client(
    config: rustls::ClientConfig,
    scheme: Scheme,
) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(REQUEST_TIMEOUT));
    http.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config);
    let builder = match scheme {
        Scheme::Https => builder.https_only(),
        Scheme::HttpOrHttps => builder.https_or_http(),
    };
    let connector = builder.enable_http1().wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// TLS to the CA: its server certificate must chain to one of `roots` (none: any server,
/// only for fetching a root that is then checked against its fingerprint).
fn tls_config(
    roots: Option<&[CertificateDer<'static>]>,
    identity: Option<Identity>,
) -> Result<rustls::ClientConfig, RenewalError> {
    let tls = |what: &'static str| {
        move |e: rustls::Error| RenewalError::Tls { what, reason: e.to_string() }
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(tls("the TLS protocol versions"))?;
    let builder = match roots {
        Some(roots) => {
            let mut store = rustls::RootCertStore::empty();
            for root in roots {
                store.add(root.clone()).map_err(tls("a trust anchor"))?;
            }
            builder.with_root_certificates(store)
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnswerCheckedLater(provider))),
    };
    Ok(match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(tls("the certificate and key to present"))?,
        None => builder.with_no_client_auth(),
    })
}

/// Accepts any server certificate (signatures are still checked): used only to fetch the
/// root, whose fingerprint is then compared with the one the user gave.
#[derive(Debug)]
struct AnswerCheckedLater(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnswerCheckedLater {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Checks what the CA answered: the leaf certifies `key`'s public key (the key made here)
/// and the chain verifies to the pinned root now, as a TLS client or server certificate.
pub fn check_answer(
    url: &str,
    answer: &Answer,
    root: &CertificateDer<'static>,
    key: &rcgen::KeyPair,
) -> Result<(), RenewalError> {
    let bad = |reason: String| RenewalError::Answer { url: url.to_string(), reason };
    let Some(leaf) = answer.chain.first() else {
        return Err(bad("no certificate".into()));
    };
    if !certgate_pki::keys::matches_cert(key, leaf) {
        return Err(bad("the certificate is not for our key; not written".into()));
    }
    let store = certgate_pki::verify::TrustStore::from_der(vec![root.clone()], Vec::new())?;
    let now = certgate_pki::verify::unix_time(time::OffsetDateTime::now_utc());
    let mut last = None;
    for purpose in
        [certgate_pki::verify::Purpose::ClientAuth, certgate_pki::verify::Purpose::ServerAuth]
    {
        let policy = certgate_pki::verify::VerifyPolicy {
            purpose,
            allow_unknown_revocation: true,
            ..certgate_pki::verify::VerifyPolicy::client()
        };
        match store.verify(&answer.chain, &policy, now) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(bad(format!(
            "the certificate does not verify to the pinned root: {e}; not written"
        ))),
        None => Ok(()),
    }
}
