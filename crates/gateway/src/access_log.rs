//! One JSON line per request on stdout, with the client identity.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use crate::http::pipeline::ConnState;
use crate::http::route::Route;

/// What a log line is made from.
pub struct Entry<'a> {
    pub listener: &'a str,
    pub peer: SocketAddr,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub duration: Duration,
    pub route: Option<&'a Route>,
    pub conn: &'a ConnState,
}

/// Writes one line. A failed write (closed stdout) is ignored: logging never fails a request.
pub fn write(e: &Entry<'_>) {
    let id = e.conn.identity.forwarded_identity();
    let line = serde_json::json!({
        "time": certgate_pki::validity::rfc3339(time::OffsetDateTime::now_utc()),
        "listener": e.listener,
        "client": e.peer.to_string(),
        "sni": e.conn.sni,
        "method": e.method,
        "host": e.host,
        "path": e.path,
        "status": e.status,
        "duration_ms": (e.duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        "route": e.route.map(|r| format!("{}{}", r.host.as_deref().unwrap_or("*"), r.path)),
        "upstream": e.route.map(|r| r.upstream.name.as_str()),
        "client_verify": e.conn.identity.verify_status(),
        "client_subject": id.map(|i| i.subject.as_str()),
        "client_spiffe_id": id.and_then(|i| i.spiffe_id()),
        "client_sans": id.map(|i| i.sans.labelled()),
        "client_fingerprint": id.map(|i| i.fingerprint_sha256.as_str()),
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}
