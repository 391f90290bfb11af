//! certgate-bench: an mTLS load generator that measures any HTTPS server the same way, so
//! certgate and nginx can be compared in one run.
//!
//! - `keepalive`: N connections, each sending requests back to back over HTTP/1.1 keep-alive;
//!   reports requests/s, p50/p99 latency, errors and non-2xx answers.
//! - `handshake`: N loops that each open a connection, complete a full TLS 1.3 mTLS handshake
//!   (resumption off), send one request, read the answer and close; reports handshakes/s and
//!   handshake latency.
//! - `upstream`: a minimal plain-HTTP/1.1 keep-alive server answering `200 ok`, the upstream
//!   every gateway under test forwards to.
//!
//! The client offers exactly one key-exchange group (X25519) and one cipher suite
//! (TLS_AES_128_GCM_SHA256) so every server negotiates the same thing. With
//! `--no-verify-server` it does not check the server certificate (as h2load and wrk do not),
//! so its CPU goes to load; the servers under test still verify the client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, Parser)]
#[command(
    name = "certgate-bench",
    about = "mTLS load generator (keep-alive and full-handshake modes)"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// N keep-alive connections sending requests back to back.
    Keepalive(Target),
    /// N loops of connect + full TLS 1.3 mTLS handshake + one request + close.
    Handshake(Target),
    /// A plain HTTP/1.1 upstream answering every request with 200 "ok".
    Upstream(UpstreamArgs),
}

#[derive(Debug, Args, Clone)]
struct UpstreamArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:9080")]
    listen: SocketAddr,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Debug, Args, Clone)]
struct Target {
    /// Server address.
    #[arg(long)]
    addr: SocketAddr,
    /// SNI and Host header.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Client certificate chain (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Client private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// CA that signed the server certificate.
    #[arg(long, required_unless_present = "no_verify_server")]
    cacert: Option<PathBuf>,
    /// Do not verify the server certificate (as h2load and wrk do not), so the load
    /// generator spends its CPU on load rather than on checking the server's chain; the
    /// servers under test still verify the client. Only for benchmarks on loopback.
    #[arg(long)]
    no_verify_server: bool,
    /// Concurrent connections (keepalive) or loops (handshake).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measurement time in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Runtime worker threads of the load generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// A label copied into the JSON result.
    #[arg(long, default_value = "")]
    label: String,
    /// An extra request header, `NAME: VALUE` (repeatable), e.g. an Authorization token.
    #[arg(long = "header")]
    headers: Vec<String>,
}

/// What one worker measured.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    non_2xx: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (mode, target) = match cli.mode {
        Mode::Keepalive(t) => ("keepalive", t),
        Mode::Handshake(t) => ("handshake", t),
        Mode::Upstream(u) => return serve_upstream(&u),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(target.threads.max(1))
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(mode, target))?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

async fn run(mode: &'static str, t: Target) -> anyhow::Result<serde_json::Value> {
    let connector = TlsConnector::from(Arc::new(client_config(&t)?));
    let name = ServerName::try_from(t.server_name.clone())
        .with_context(|| format!("--server-name {:?} is not a valid name", t.server_name))?;
    let duration = Duration::from_secs_f64(t.duration);
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::with_capacity(t.connections);
    for _ in 0..t.connections {
        let (connector, name, t) = (connector.clone(), name.clone(), t.clone());
        workers.push(tokio::spawn(async move {
            match mode {
                "keepalive" => keepalive(&connector, &name, &t, deadline).await,
                _ => handshakes(&connector, &name, &t, deadline).await,
            }
        }));
    }
    let mut total = Tally::default();
    for w in workers {
        let tally = w.await?;
        total.latencies_us.extend(tally.latencies_us);
        total.errors += tally.errors;
        total.non_2xx += tally.non_2xx;
    }
    let elapsed = started.elapsed().as_secs_f64();
    total.latencies_us.sort_unstable();
    let count = total.latencies_us.len();
    let pct = |p: f64| -> f64 {
        if count == 0 {
            return 0.0;
        }
        let idx = ((count as f64 - 1.0) * p).round() as usize;
        f64::from(total.latencies_us[idx.min(count - 1)]) / 1000.0
    };
    Ok(serde_json::json!({
        "mode": mode,
        "label": t.label,
        "connections": t.connections,
        "seconds": elapsed,
        "completed": count,
        "per_second": count as f64 / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
        "errors": total.errors,
        "non_2xx": total.non_2xx,
    }))
}

/// TLS 1.3 only, X25519 only, AES-128-GCM only, no resumption, with the client certificate.
fn client_config(t: &Target) -> anyhow::Result<rustls::ClientConfig> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    provider.cipher_suites =
        vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256];
    let chain = CertificateDer::pem_file_iter(&t.cert)
        .with_context(|| format!("reading {}", t.cert.display()))?
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&t.key)
        .with_context(|| format!("reading {}", t.key.display()))?;
    let provider = Arc::new(provider);
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match (&t.cacert, t.no_verify_server) {
        (_, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoServerVerification(provider))),
        (Some(cacert), false) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(cacert)
                .with_context(|| format!("reading {}", cacert.display()))?
            {
                roots.add(cert?)?;
            }
            builder.with_root_certificates(roots)
        }
        (None, false) => anyhow::bail!("--cacert is required unless --no-verify-server"),
    };
    let mut config = builder.with_client_auth_cert(chain, key)?;
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

async fn keepalive(
    connector: &TlsConnector,
    name: &ServerName<'static>,
    t: &Target,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    while Instant::now() < deadline {
        let sender = async {
            let tcp = TcpStream::connect(t.addr).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name.clone(), tcp).await?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            anyhow::Ok(sender)
        };
        let mut sender = match sender.await {
            Ok(s) => s,
            Err(_) => {
                tally.errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while Instant::now() < deadline {
            // A server may end a keep-alive connection on purpose (`Connection: close` after
            // its per-connection request limit); that is a reconnect, not an error.
            if sender.ready().await.is_err() {
                break;
            }
            let mut req = hyper::Request::get(t.path.as_str())
                .header(hyper::header::HOST, t.server_name.as_str());
            for h in &t.headers {
                if let Some((name, value)) = h.split_once(':') {
                    req = req.header(name.trim(), value.trim());
                }
            }
            let req = req.body(Empty::<Bytes>::new());
            let Ok(req) = req else {
                tally.errors += 1;
                return tally;
            };
            let t0 = Instant::now();
            let answer = async {
                let resp = sender.send_request(req).await?;
                let status = resp.status();
                resp.into_body().collect().await?;
                anyhow::Ok(status)
            };
            match answer.await {
                Ok(status) => {
                    tally.latencies_us.push(micros(t0.elapsed()));
                    if !status.is_success() {
                        tally.non_2xx += 1;
                    }
                }
                Err(_) => {
                    tally.errors += 1;
                    break;
                }
            }
        }
    }
    tally
}

async fn handshakes(
    connector: &TlsConnector,
    name: &ServerName<'static>,
    t: &Target,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let request =
        format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", t.path, t.server_name);
    let mut buf = Vec::with_capacity(4096);
    while Instant::now() < deadline {
        let t0 = Instant::now();
        let exchange = async {
            let tcp = TcpStream::connect(t.addr).await?;
            tcp.set_nodelay(true)?;
            let mut tls = connector.connect(name.clone(), tcp).await?;
            let handshake = t0.elapsed();
            tls.write_all(request.as_bytes()).await?;
            buf.clear();
            // A server may close without close_notify after `Connection: close`; what was
            // read until then is the answer.
            let _ = tls.read_to_end(&mut buf).await;
            anyhow::Ok(handshake)
        };
        let outcome = exchange.await;
        // "HTTP/1.x 200 ...": the status class is the tenth byte.
        let status_class = buf.starts_with(b"HTTP/1.").then(|| buf.get(9).copied()).flatten();
        match (outcome, status_class) {
            (Ok(handshake), Some(class)) => {
                tally.latencies_us.push(micros(handshake));
                if class != b'2' {
                    tally.non_2xx += 1;
                }
            }
            _ => tally.errors += 1,
        }
    }
    tally
}

/// Serves `200 ok` over HTTP/1.1 keep-alive until killed.
fn serve_upstream(args: &UpstreamArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        eprintln!("upstream listening on {}", args.listen);
        loop {
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    let body = http_body_util::Full::new(Bytes::from_static(b"ok"));
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    })
}

/// Accepts any server certificate and signature (`--no-verify-server`).
#[derive(Debug)]
struct NoServerVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}
