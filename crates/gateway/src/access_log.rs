//! One JSON line per request, with the client identity, on stdout or appended to a file,
//! written by a thread of its own: a request only formats its line and hands it over a bounded
//! channel, so a slow log reader can never stall a runtime thread. When the channel is full
//! the line is dropped and counted ([`AccessLog::dropped`]), and a warning says how many were
//! lost. A file is reopened on request ([`AccessLog::reopen`]: SIGUSR1 and reloads), so
//! logrotate can move it away.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;

use crate::http::pipeline::{ConnInfo, RequestCtx};

/// Lines waiting for the writer; beyond this, lines are dropped.
const QUEUE: usize = 16 * 1024;

/// What a log line is made from.
pub struct Entry<'a> {
    pub listener: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub duration: Duration,
    pub request: &'a RequestCtx,
    pub conn: &'a ConnInfo,
}

/// What a relayed (passthrough) connection's log line is made from.
pub struct RelayEntry<'a> {
    pub listener: &'a str,
    pub peer: std::net::SocketAddr,
    pub sni: Option<&'a str>,
    pub route: &'a crate::tls::passthrough::Passthrough,
    pub relayed: &'a crate::tls::passthrough::Relayed,
    pub duration: Duration,
}

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    Stdout,
    /// Appended to, created with mode 0640 when missing.
    File(PathBuf),
}

impl std::fmt::Display for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sink::Stdout => f.write_str("stdout"),
            Sink::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl Sink {
    fn open(&self) -> std::io::Result<Box<dyn Write + Send>> {
        match self {
            Sink::Stdout => Ok(Box::new(std::io::stdout())),
            Sink::File(path) => {
                use std::os::unix::fs::OpenOptionsExt;
                let file =
                    std::fs::OpenOptions::new().create(true).append(true).mode(0o640).open(path)?;
                Ok(Box::new(file))
            }
        }
    }
}

/// The handle requests write through; cloning shares the writer.
#[derive(Clone)]
pub struct AccessLog {
    pub sink: Sink,
    lines: SyncSender<String>,
    dropped: Arc<AtomicU64>,
    reopen: Arc<AtomicBool>,
}

impl AccessLog {
    /// Opens `sink` (failing now, with the OS error, rather than losing lines later) and
    /// starts the writer thread.
    pub fn start(sink: Sink) -> std::io::Result<AccessLog> {
        let out = sink.open()?;
        let (lines, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let reopen = Arc::new(AtomicBool::new(false));
        let (counter, wanted, target) = (dropped.clone(), reopen.clone(), sink.clone());
        std::thread::Builder::new()
            .name("certgate-access-log".into())
            .spawn(move || writer(rx, out, &target, &wanted, counter))?;
        Ok(AccessLog { sink, lines, dropped, reopen })
    }

    /// Asks the writer to reopen its file before its next line (after logrotate moved it).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues one line; never blocks.
    pub fn write(&self, e: &Entry<'_>) {
        self.send(format_line(e));
    }

    /// Queues the line of a relayed connection: no HTTP, so bytes and how it closed.
    pub fn relayed(&self, e: &RelayEntry<'_>) {
        let line = serde_json::json!({
            "time": certgate_pki::validity::rfc3339(time::OffsetDateTime::now_utc()),
            "listener": e.listener,
            "client": e.peer.to_string(),
            "sni": e.sni,
            "passthrough": e.route.name,
            "upstream": e.route.upstream,
            "bytes_to_upstream": e.relayed.to_upstream,
            "bytes_to_client": e.relayed.to_client,
            "duration_ms": (e.duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            "close": e.relayed.close,
        });
        self.send(line.to_string());
    }

    fn send(&self, line: String) {
        match self.lines.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Writes lines as they come, flushing whenever the queue is empty; reopens the sink when
/// asked; reports drops at most every 10 s.
fn writer(
    rx: Receiver<String>,
    out: Box<dyn Write + Send>,
    sink: &Sink,
    reopen: &AtomicBool,
    dropped: Arc<AtomicU64>,
) {
    let mut out = std::io::BufWriter::new(out);
    let mut reported = 0u64;
    let mut last_report = std::time::Instant::now();
    while let Ok(first) = rx.recv() {
        if reopen.swap(false, Ordering::Relaxed) {
            let _ = out.flush();
            match sink.open() {
                Ok(fresh) => out = std::io::BufWriter::new(fresh),
                Err(error) => tracing::error!(%sink, %error, "cannot reopen the access log"),
            }
        }
        let _ = writeln!(out, "{first}");
        while let Ok(line) = rx.try_recv() {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
        let now_dropped = dropped.load(Ordering::Relaxed);
        if now_dropped > reported && last_report.elapsed() >= Duration::from_secs(10) {
            tracing::warn!(
                dropped = now_dropped - reported,
                total = now_dropped,
                "access log lines dropped: the log output is slower than the requests"
            );
            reported = now_dropped;
            last_report = std::time::Instant::now();
        }
    }
}

fn format_line(e: &Entry<'_>) -> String {
    let id = e.conn.identity.forwarded_identity();
    let route = e.request.route.as_deref();
    serde_json::json!({
        "time": certgate_pki::validity::rfc3339(time::OffsetDateTime::now_utc()),
        "listener": e.listener,
        "client": e.conn.peer.to_string(),
        "sni": e.conn.sni,
        "method": e.method,
        "host": e.request.host.as_deref().unwrap_or(""),
        "path": e.path,
        "status": e.status,
        "reject": e.request.reject,
        "duration_ms": (e.duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        "route": route.map(|r| r.label()),
        "upstream": route.map(|r| r.target.name()),
        "client_verify": e.conn.identity.verify_status(),
        "client_subject": id.map(|i| i.subject.as_str()),
        "client_spiffe_id": id.and_then(|i| i.spiffe_id()),
        "client_sans": id.map(|i| i.sans.labelled()),
        "client_fingerprint": id.map(|i| i.fingerprint_sha256.as_str()),
        // The access token that passed, by its client and id, never by its text.
        "token_client_id": e.request.token.as_ref().and_then(|t| t.verified.client_id.as_deref()),
        "token_jti": e.request.token.as_ref().and_then(|t| t.verified.jti.as_deref()),
    })
    .to_string()
}
