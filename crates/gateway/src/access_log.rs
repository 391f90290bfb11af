//! One JSON line per request on stdout, with the client identity, written by a thread of its
//! own: a request only formats its line and hands it over a bounded channel, so a slow log
//! reader can never stall a runtime thread. When the channel is full the line is dropped and
//! counted ([`AccessLog::dropped`]), and a warning says how many were lost.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The handle requests write through; cloning shares the writer.
#[derive(Clone)]
pub struct AccessLog {
    lines: SyncSender<String>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Starts the writer thread on `out` (stdout in production).
    pub fn start(out: impl Write + Send + 'static) -> std::io::Result<AccessLog> {
        let (lines, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        std::thread::Builder::new()
            .name("certgate-access-log".into())
            .spawn(move || writer(rx, out, counter))?;
        Ok(AccessLog { lines, dropped })
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues one line; never blocks.
    pub fn write(&self, e: &Entry<'_>) {
        let line = format_line(e);
        match self.lines.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Writes lines as they come, flushing whenever the queue is empty; reports drops at most
/// every 10 s.
fn writer(rx: Receiver<String>, out: impl Write, dropped: Arc<AtomicU64>) {
    let mut out = std::io::BufWriter::new(out);
    let mut reported = 0u64;
    let mut last_report = std::time::Instant::now();
    while let Ok(first) = rx.recv() {
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
    })
    .to_string()
}
