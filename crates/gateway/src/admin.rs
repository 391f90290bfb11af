//! The admin listener (`[admin] listen = "127.0.0.1:9901"`: plain HTTP on loopback, or mTLS
//! with `certificates` and `client_auth`; plain HTTP elsewhere only when named dangerous):
//! health, readiness, the state's status, reload, and OpenMetrics.
//!
//! - `GET /livez`: 200 while the process runs.
//! - `GET /readyz`: 200 once the listeners are bound and the state is loaded; 503 while
//!   draining after SIGTERM. Not tied to certificate or CRL freshness: a stale CRL on every
//!   replica must not empty the load balancer. Managed certificates whose renewal is failing
//!   are listed in the body; only one that has expired makes it 503 (it cannot serve).
//! - `GET /status`: JSON: the generation, when it was loaded, the last reload's result and
//!   problems, every file read with its SHA-256, every certificate with its validity, every
//!   CRL's next update, every managed certificate's renewal state. No secret is ever in it
//!   (keys appear only as file names).
//! - `POST /reload`: asks for a reload (202); its result appears in `/status` and `/metrics`.
//! - `GET /metrics`: OpenMetrics text for Prometheus.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::config::{Config, ConfigError, LoadedCert};

/// What the admin endpoints report, updated by the server and the reload loop.
pub struct AdminState {
    ready: AtomicBool,
    /// `Some`: mTLS; replaced by each reload, so its certificates rotate like a listener's.
    tls: arc_swap::ArcSwapOption<tokio_rustls::TlsAcceptor>,
    reload: Option<mpsc::Sender<()>>,
    status: Mutex<Status>,
    metrics: Metrics,
    registry: Registry,
    /// The managed certificates' state, shared with their renewal tasks.
    managed: Arc<crate::managed::Status>,
}

/// The `/status` document.
#[derive(Clone, serde::Serialize)]
struct Status {
    generation: u64,
    loaded_at: String,
    last_reload: Option<ReloadResult>,
    files: Vec<FileStatus>,
    certificates: Vec<LoadedCert>,
    crls: Vec<CrlStatus>,
    /// Settings that a reload could not apply (a moved listener, a changed connection limit).
    needs_restart: Vec<String>,
}

#[derive(Clone, serde::Serialize)]
struct ReloadResult {
    at: String,
    ok: bool,
    problems: Vec<String>,
}

#[derive(Clone, serde::Serialize)]
struct FileStatus {
    path: String,
    sha256: Option<String>,
}

#[derive(Clone, serde::Serialize)]
struct CrlStatus {
    file: String,
    next_update: String,
    stale: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabels {
    file: String,
    field: String,
    subject: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabel {
    file: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
}

#[derive(Default)]
struct Metrics {
    reloads: Family<ResultLabel, Counter>,
    last_reload_ok: Gauge,
    last_success: Gauge,
    generation: Gauge,
    not_after: Family<CertLabels, Gauge>,
    not_before: Family<CertLabels, Gauge>,
    crl_next_update: Family<FileLabel, Gauge>,
    open_connections: Family<ListenerLabel, Gauge>,
    access_log_dropped: Counter,
    access_log_dropped_seen: AtomicU64,
}

impl AdminState {
    /// The state for the configuration the gateway started with; `reload` receives `/reload`.
    pub fn new(
        config: &Config,
        reload: Option<mpsc::Sender<()>>,
        requests: Option<&crate::metrics::Metrics>,
        managed: Arc<crate::managed::Status>,
    ) -> AdminState {
        let metrics = Metrics::default();
        let mut registry = Registry::with_prefix("certgate");
        registry.register("reloads", "Configuration reloads by result", metrics.reloads.clone());
        registry.register(
            "config_last_reload_successful",
            "Whether the last reload succeeded (1) or kept the old state (0)",
            metrics.last_reload_ok.clone(),
        );
        registry.register_with_unit(
            "config_last_reload_success_timestamp",
            "When the configuration was last loaded successfully",
            Unit::Seconds,
            metrics.last_success.clone(),
        );
        registry.register(
            "config_generation",
            "The generation new connections get (1 at start, +1 per successful reload)",
            metrics.generation.clone(),
        );
        registry.register_with_unit(
            "certificate_not_after_timestamp",
            "End of validity of each loaded certificate (listener, trust anchor, upstream client)",
            Unit::Seconds,
            metrics.not_after.clone(),
        );
        registry.register_with_unit(
            "certificate_not_before_timestamp",
            "Start of validity of each loaded certificate",
            Unit::Seconds,
            metrics.not_before.clone(),
        );
        registry.register_with_unit(
            "crl_next_update_timestamp",
            "Next update of each loaded CRL",
            Unit::Seconds,
            metrics.crl_next_update.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open, by listener",
            metrics.open_connections.clone(),
        );
        registry.register(
            "access_log_dropped_lines",
            "Access-log lines dropped because the log output was slower than the requests",
            metrics.access_log_dropped.clone(),
        );
        if let Some(requests) = requests {
            requests.register(&mut registry);
        }
        managed.register(&mut registry);
        let state = AdminState {
            ready: AtomicBool::new(false),
            tls: arc_swap::ArcSwapOption::empty(),
            reload,
            status: Mutex::new(Status {
                generation: 1,
                loaded_at: now_text(),
                last_reload: None,
                files: vec![],
                certificates: vec![],
                crls: vec![],
                needs_restart: vec![],
            }),
            metrics,
            registry,
            managed,
        };
        state.loaded(config, 1);
        state.metrics.last_reload_ok.set(1);
        state
    }

    /// Marks the gateway ready (listeners bound) or not (draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Records a configuration now serving as `generation`.
    pub fn loaded(&self, config: &Config, generation: u64) {
        let tls = config.admin.as_ref().and_then(|a| a.tls.as_ref());
        self.tls.store(tls.map(|t| Arc::new(tokio_rustls::TlsAcceptor::from(t.config.clone()))));
        let m = &self.metrics;
        m.generation.set(i64::try_from(generation).unwrap_or(i64::MAX));
        m.last_success.set(time::OffsetDateTime::now_utc().unix_timestamp());
        m.not_after.clear();
        m.not_before.clear();
        for c in &config.certificates {
            let labels = CertLabels {
                file: c.file.display().to_string(),
                field: c.field.clone(),
                subject: c.subject.clone(),
            };
            m.not_after.get_or_create(&labels).set(c.not_after.unix_timestamp());
            m.not_before.get_or_create(&labels).set(c.not_before.unix_timestamp());
        }
        m.crl_next_update.clear();
        let now = rustls_pki_types::UnixTime::now().as_secs();
        let mut crls = Vec::new();
        for (file, next) in &config.crl_updates {
            let secs = i64::try_from(next.as_secs()).unwrap_or(i64::MAX);
            m.crl_next_update
                .get_or_create(&FileLabel { file: file.display().to_string() })
                .set(secs);
            crls.push(CrlStatus {
                file: file.display().to_string(),
                next_update: time::OffsetDateTime::from_unix_timestamp(secs)
                    .map(certgate_pki::validity::rfc3339)
                    .unwrap_or_default(),
                stale: next.as_secs() <= now,
            });
        }
        let files = config
            .files
            .iter()
            .map(|f| FileStatus { path: f.display().to_string(), sha256: sha256_of(f) })
            .collect();
        let mut status = self.lock();
        status.generation = generation;
        status.loaded_at = now_text();
        status.files = files;
        status.certificates = config.certificates.clone();
        status.crls = crls;
        status.needs_restart.clear();
    }

    /// Records a reload's outcome (`problems` empty: it succeeded).
    pub fn reloaded(&self, problems: &[ConfigError], needs_restart: Vec<String>) {
        let ok = problems.is_empty();
        let result = if ok { "success" } else { "failure" };
        self.metrics.reloads.get_or_create(&ResultLabel { result: result.into() }).inc();
        self.metrics.last_reload_ok.set(i64::from(ok));
        let mut status = self.lock();
        status.last_reload = Some(ReloadResult {
            at: now_text(),
            ok,
            problems: problems.iter().map(ToString::to_string).collect(),
        });
        if ok {
            status.needs_restart = needs_restart;
        }
    }

    /// Updates what is read at scrape time: open connections and dropped log lines.
    pub fn observe(&self, open: &[(String, usize)], access_log_dropped: u64) {
        for (listener, n) in open {
            let labels = ListenerLabel { listener: listener.clone() };
            self.metrics
                .open_connections
                .get_or_create(&labels)
                .set(i64::try_from(*n).unwrap_or(0));
        }
        let seen = self.metrics.access_log_dropped_seen.swap(access_log_dropped, Ordering::Relaxed);
        if access_log_dropped > seen {
            self.metrics.access_log_dropped.inc_by(access_log_dropped - seen);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        // Status updates are whole-field assignments: a panic cannot leave it half-written.
        self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Answers one admin request. `observe` refreshes the scrape-time figures first.
    pub fn answer<B>(
        &self,
        req: &Request<B>,
        observe: impl FnOnce(&AdminState),
    ) -> Response<Full<Bytes>> {
        let text = |status: StatusCode, body: String| {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        };
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/livez") => text(StatusCode::OK, "ok\n".into()),
            (&Method::GET, "/readyz") => {
                let (expired, failing) = self.managed.readiness(time::OffsetDateTime::now_utc());
                let lines = |mut body: String, list: &[String]| {
                    for line in list {
                        body.push_str(line);
                        body.push('\n');
                    }
                    body
                };
                if !expired.is_empty() {
                    let body = lines("not ready: a managed certificate expired\n".into(), &expired);
                    text(StatusCode::SERVICE_UNAVAILABLE, lines(body, &failing))
                } else if self.ready.load(Ordering::Relaxed) {
                    text(StatusCode::OK, lines("ready\n".into(), &failing))
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: starting or draining\n".into(),
                    )
                }
            }
            (&Method::GET, "/status") => {
                let mut doc = serde_json::to_value(&*self.lock()).unwrap_or_default();
                doc["managed"] = serde_json::to_value(self.managed.snapshot()).unwrap_or_default();
                let body = serde_json::to_string_pretty(&doc).unwrap_or_default();
                let mut r = text(StatusCode::OK, body + "\n");
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                r
            }
            (&Method::POST, "/reload") => match &self.reload {
                Some(tx) => {
                    let _ = tx.try_send(());
                    text(
                        StatusCode::ACCEPTED,
                        "reload requested; see /status for its result\n".into(),
                    )
                }
                None => text(StatusCode::NOT_FOUND, "this gateway does not reload\n".into()),
            },
            (&Method::GET, "/metrics") => {
                observe(self);
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &self.registry) {
                    Ok(()) => {
                        let mut r = text(StatusCode::OK, body);
                        r.headers_mut().insert(
                            header::CONTENT_TYPE,
                            header::HeaderValue::from_static(
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            ),
                        );
                        r
                    }
                    Err(_) => {
                        text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n".into())
                    }
                }
            }
            (_, "/livez" | "/readyz" | "/status" | "/metrics" | "/reload") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".into())
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: /livez, /readyz, /status, /metrics, POST /reload\n".into(),
            ),
        }
    }
}

/// Serves the admin endpoints on `listener` (HTTP/1.1, over mTLS when configured) until the
/// task is dropped.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    observe: Arc<dyn Fn(&AdminState) + Send + Sync>,
) {
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let (state, observe) = (state.clone(), observe.clone());
        let tls = state.tls.load_full();
        tokio::spawn(async move {
            // Admin requests are small; a stuck client is dropped after a minute.
            let limit = std::time::Duration::from_secs(60);
            let _ = tokio::time::timeout(limit, async move {
                match tls {
                    None => serve_connection(tcp, state, observe).await,
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(stream) => serve_connection(stream, state, observe).await,
                        Err(error) => {
                            tracing::info!(%peer, %error, "admin handshake refused");
                        }
                    },
                }
            })
            .await;
        });
    }
}

async fn serve_connection<S>(
    io: S,
    state: Arc<AdminState>,
    observe: Arc<dyn Fn(&AdminState) + Send + Sync>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let resp = state.answer(&req, |s| observe(s));
        async move { Ok::<_, std::convert::Infallible>(resp) }
    });
    // HTTP/1.1 or HTTP/2 (over TLS, the listener's ALPN offers both).
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let _ = builder.serve_connection(TokioIo::new(io), service).await;
}

fn now_text() -> String {
    certgate_pki::validity::rfc3339(time::OffsetDateTime::now_utc())
}

/// The file's SHA-256 (hex), so an operator can tell which version is loaded.
fn sha256_of(path: &std::path::Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    Some(certgate_pki::identity::hex(digest.as_ref()))
}
