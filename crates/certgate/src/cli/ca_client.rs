//! The client of the online CA (`certgate ca serve`): HTTPS to its `/roots`, `/sign` and
//! `/renew`, trusting only the pinned root, and the checks made on what it answers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// How long one request to the CA may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How the CA's root is known: a file, or its SHA-256 fingerprint (the root is then fetched
/// from `/roots` and must match).
#[derive(Debug, Clone, clap::Args)]
#[group(multiple = false)]
pub struct RootPin {
    /// The CA's root certificate (PEM), e.g. from `certgate ca root`.
    #[arg(long, value_name = "FILE")]
    pub root: Option<PathBuf>,
    /// The SHA-256 fingerprint of the CA's root (hex, colons allowed), as `certgate ca
    /// token` and `certgate inspect` print it: the root is fetched from URL/roots and used
    /// only when it matches.
    #[arg(long, value_name = "SHA256")]
    pub fingerprint: Option<String>,
}

/// A connection to the online CA at `url`, trusting `root` only.
pub struct CaClient {
    url: String,
    root: CertificateDer<'static>,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// What the CA answered to `/sign` or `/renew`: the leaf first, then the intermediates.
pub struct Answer {
    pub chain: Vec<CertificateDer<'static>>,
}

impl CaClient {
    /// Connects (lazily) to `url`, presenting `identity` when given (for `/renew`). With
    /// `--fingerprint`, the root is fetched first and checked against it.
    pub async fn new(
        url: &str,
        pin: &RootPin,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> anyhow::Result<CaClient> {
        let url = url.trim_end_matches('/').to_string();
        if !url.starts_with("https://") {
            anyhow::bail!("--ca-url {url}: the online CA is reached over https://");
        }
        let root = match (&pin.root, &pin.fingerprint) {
            (Some(path), _) => certgate_pki::pem::read_certs(path)?
                .into_iter()
                .next()
                .with_context(|| format!("{}: no certificate in the file", path.display()))?,
            (None, Some(fingerprint)) => fetch_pinned_root(&url, fingerprint).await?,
            (None, None) => anyhow::bail!("give the CA's root with --root FILE or --fingerprint"),
        };
        let config = tls_config(Some(&root), identity)?;
        Ok(CaClient { client: https_client(config), url, root })
    }

    /// The pinned root.
    pub fn root(&self) -> &CertificateDer<'static> {
        &self.root
    }

    /// POSTs `body` to `path` and returns the certificate chain the CA answered.
    pub async fn post(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.url);
        let mut req = http::Request::post(&url);
        let body = match body {
            Some(json) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(json.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).with_context(|| format!("POST {url}: not a valid URL"))?;
        let (status, bytes) = send(&self.client, &url, req).await?;
        if !status.is_success() {
            anyhow::bail!("POST {url}: the CA refused ({status}): {}", ca_message(&bytes));
        }
        let json: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("POST {url}: the answer is not JSON"))?;
        let pems = json["certChain"]
            .as_array()
            .filter(|a| !a.is_empty())
            .with_context(|| format!("POST {url}: the answer has no \"certChain\""))?;
        let mut chain = Vec::new();
        for pem in pems {
            let pem = pem
                .as_str()
                .with_context(|| format!("POST {url}: \"certChain\" holds a non-string"))?;
            let certs = certgate_pki::pem::certs_from_bytes(pem.as_bytes())
                .map_err(|reason| anyhow::anyhow!("POST {url}: \"certChain\": {reason}"))?;
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
) -> anyhow::Result<(http::StatusCode, Bytes)> {
    let method = req.method().clone();
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| {
            // The connection error's own text is generic; its cause says what failed.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            anyhow::anyhow!("{method} {url}: {text}")
        })?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .with_context(|| format!("{method} {url}: reading the answer"))?
            .to_bytes();
        Ok::<_, anyhow::Error>((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.map_err(|_| {
        anyhow::anyhow!("{method} {url}: no answer within {} s", REQUEST_TIMEOUT.as_secs())
    })?
}

/// `GET URL/roots` without trusting the server yet, and the root it answers only if its
/// SHA-256 is `fingerprint`: the answer is checked, not the connection.
async fn fetch_pinned_root(
    url: &str,
    fingerprint: &str,
) -> anyhow::Result<CertificateDer<'static>> {
    let want = normalize_fingerprint(fingerprint);
    if want.len() != 64 || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
        anyhow::bail!("--fingerprint {fingerprint}: not a SHA-256 fingerprint (64 hex digits)");
    }
    let client = https_client(tls_config(None, None)?);
    let roots_url = format!("{url}/roots");
    let req = http::Request::get(&roots_url)
        .body(Full::new(Bytes::new()))
        .with_context(|| format!("GET {roots_url}: not a valid URL"))?;
    let (status, body) = send(&client, &roots_url, req).await?;
    if !status.is_success() {
        anyhow::bail!("GET {roots_url}: the CA refused ({status}): {}", ca_message(&body));
    }
    let certs = certgate_pki::pem::certs_from_bytes(&body)
        .map_err(|reason| anyhow::anyhow!("GET {roots_url}: {reason}"))?;
    for cert in certs {
        let info = certgate_pki::inspect::cert_info(&cert)?;
        if normalize_fingerprint(&info.sha256_fingerprint) == want {
            return Ok(cert);
        }
    }
    anyhow::bail!(
        "GET {roots_url}: the CA's root does not have the SHA-256 fingerprint {fingerprint}; \
         refusing to trust it"
    )
}

fn normalize_fingerprint(s: &str) -> String {
    s.trim().trim_start_matches("sha256:").replace(':', "").to_ascii_lowercase()
}

fn https_client(
    config: rustls::ClientConfig,
) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(REQUEST_TIMEOUT));
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// TLS to the CA: its server certificate must chain to `root` (none: any server, only for
/// fetching a root that is then checked against its fingerprint).
fn tls_config(
    root: Option<&CertificateDer<'static>>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match root {
        Some(root) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(root.clone()).context("the CA's root is not a usable trust anchor")?;
            builder.with_root_certificates(roots)
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnswerCheckedLater(provider))),
    };
    Ok(match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .context("the certificate and key to present do not make a TLS identity")?,
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

/// Checks what the CA answered: the leaf certifies `public_key` (the key made here) and the
/// chain verifies to the pinned root now, as a TLS client or server certificate.
pub fn check_answer(
    url: &str,
    answer: &Answer,
    root: &CertificateDer<'static>,
    key: &rcgen::KeyPair,
) -> anyhow::Result<()> {
    let Some(leaf) = answer.chain.first() else {
        anyhow::bail!("{url}: the CA answered no certificate");
    };
    if !certgate_pki::keys::matches_cert(key, leaf) {
        anyhow::bail!("{url}: the certificate the CA answered is not for our key; not written");
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
        Some(e) => anyhow::bail!(
            "{url}: the certificate the CA answered does not verify to the pinned root: {e}; \
             not written"
        ),
        None => Ok(()),
    }
}
