//! HTTP/1.1 upgrades (WebSocket, and other protocols a route names in `upgrades`).
//!
//! An upgrade request goes through every phase like any request; only on a route that allows
//! its protocol is it forwarded as an upgrade. Then:
//!
//! - the upstream gets exactly `Connection: upgrade` and the client's `Upgrade` value (every
//!   other hop-by-hop header is gone, the gateway's identity headers are written);
//! - only a `101` naming the same protocol, answering an upgrade request, is relayed: any
//!   other `101` is a bad answer (502), so an upstream cannot switch a connection the gateway
//!   still reads as HTTP;
//! - any other answer is relayed with `Connection: close`: the client's connection ends after
//!   it, so no byte the client sent expecting a tunnel is ever read as a new request (nor sent
//!   to the upstream) after a refused upgrade;
//! - after the `101`, the two connections are spliced ([`Tunnel::run`]) by the task that
//!   serves the client's connection, which holds the listener's connection permit until the
//!   tunnel ends: when either side has closed and the other has finished, after the route's
//!   `upgrade_idle_timeout` without a byte either way, at the listener's
//!   `max_connection_age`, when a reload refuses the client's certificate, or when the
//!   gateway stops (after the shutdown grace period, like any connection).
//!
//! Elsewhere an `Upgrade` is hop-by-hop and removed: the upstream sees a plain request and
//! answers it (a WebSocket server answers 426 or 400, so the client's handshake fails).
//! `CONNECT` is refused (405): the gateway is not a forward proxy. HTTP/2 has no `Upgrade`
//! (its `upgrade`/`connection` headers are malformed and reset by the HTTP/2 layer); instead,
//! where a route of the listener forwards WebSockets, HTTP/2 connections offer extended
//! CONNECT (RFC 8441): a `CONNECT` with `:protocol = websocket` goes through the same phases
//! and reaches the HTTP/1.1 upstream as a `GET` upgrade with a fresh `Sec-WebSocket-Key`,
//! whose `Sec-WebSocket-Accept` is checked; the client gets `200` and the stream is spliced.
//! On a route without `websocket` in `upgrades` it gets 405 (it has no plain reading).
//!
//! Ordinary requests pay nothing: hyper marks requests that ask for an upgrade (an
//! [`OnUpgrade`] extension), and only those are looked at.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

use crate::http::body::Guarded;
use crate::http::reject::Reject;

/// What a route allows (`upgrades`, `upgrade_idle_timeout`).
#[derive(Debug, Clone)]
pub struct Upgrades {
    /// Lowercase protocol names (`websocket`).
    pub protocols: Vec<String>,
    /// An upgraded connection with no byte either way for this long is closed.
    pub idle_timeout: Duration,
}

/// The default `upgrade_idle_timeout`: longer than the HTTP idle timeout, since WebSocket
/// applications commonly ping every 30 to 60 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a protocol cannot be listed in `upgrades`, if it cannot.
pub fn protocol_problem(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    let token = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&b));
    if !token {
        return Some(format!("{name:?} is not a protocol name (an HTTP token such as websocket)"));
    }
    if lower == "h2c" || lower == "h2" || lower.starts_with("http/") {
        return Some(format!(
            "{name:?} cannot be allowed: after switching, further requests would reach the \
             upstream without the gateway's checks (h2c smuggling)"
        ));
    }
    None
}

/// An upgrade request as the client sent it: the `Upgrade` value and its protocol name.
#[derive(Debug)]
pub struct Asked {
    value: HeaderValue,
    protocol: String,
    /// A WebSocket over an HTTP/2 stream (RFC 8441 extended CONNECT), forwarded to the
    /// upstream as an HTTP/1.1 upgrade.
    pub h2: bool,
}

/// Reads a request hyper marked as wanting an upgrade (`Upgrade` on HTTP/1.1, or CONNECT).
/// `Ok(None)`: not a well-formed upgrade request; it is served as an ordinary request, whose
/// `Upgrade` is removed with the other hop-by-hop headers.
pub fn asked<B>(req: &Request<B>) -> Result<Option<Asked>, Reject> {
    if req.method() == Method::CONNECT {
        // Extended CONNECT (RFC 8441), offered only where a route forwards WebSockets.
        let websocket = req.version() == Version::HTTP_2
            && req
                .extensions()
                .get::<hyper::ext::Protocol>()
                .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
        if !websocket {
            return Err(Reject::Connect { websocket: false });
        }
        let value = HeaderValue::from_static("websocket");
        return Ok(Some(Asked { value, protocol: "websocket".into(), h2: true }));
    }
    let headers = req.headers();
    if req.version() != Version::HTTP_11 || !lists_upgrade(headers) {
        return Ok(None);
    }
    let mut values = headers.get_all(header::UPGRADE).iter();
    let (Some(value), None) = (values.next(), values.next()) else { return Ok(None) };
    let Ok(text) = value.to_str() else { return Ok(None) };
    let text = text.trim();
    // One protocol, `name` or `name/version`; a list offers several and is not forwarded.
    if text.is_empty() || text.contains(',') || text.contains(char::is_whitespace) {
        return Ok(None);
    }
    let protocol = text.split('/').next().unwrap_or(text).to_ascii_lowercase();
    Ok(Some(Asked { value: value.clone(), protocol, h2: false }))
}

impl Upgrades {
    /// Whether `asked` may go upstream as an upgrade: a protocol the route lists, on a request
    /// without a body (`body_ends`; WebSocket: a GET, RFC 6455 section 4.1).
    pub fn allows<B>(&self, asked: &Asked, req: &Request<B>, body_ends: bool) -> bool {
        self.protocols.contains(&asked.protocol)
            && body_ends
            && (asked.protocol != "websocket" || req.method() == Method::GET || asked.h2)
    }
}

/// Turns the request into the HTTP/1.1 upgrade request the upstream gets (every hop-by-hop
/// header was removed in phase 1). An HTTP/2 extended CONNECT becomes a `GET` with a fresh
/// `Sec-WebSocket-Key` (RFC 8441 section 5: HTTP/2 carries none); the key is returned, to
/// check the upstream's `Sec-WebSocket-Accept`.
pub fn write_request(asked: &Asked, parts: &mut http::request::Parts) -> Option<String> {
    parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, asked.value.clone());
    if !asked.h2 {
        return None;
    }
    parts.method = Method::GET;
    parts.extensions.remove::<hyper::ext::Protocol>();
    let mut nonce = [0u8; 16];
    // A key the upstream echoes back hashed; if the system RNG fails, the fixed key still
    // completes the handshake (it guards against caches, not attackers: RFC 6455 10.3).
    let _ = aws_lc_rs::rand::fill(&mut nonce);
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    if let Ok(value) = HeaderValue::from_str(&key) {
        parts.headers.insert("sec-websocket-key", value);
    }
    parts.headers.entry("sec-websocket-version").or_insert(HeaderValue::from_static("13"));
    Some(key)
}

/// Whether `accept` is the `Sec-WebSocket-Accept` for `key` (RFC 6455 section 4.2.2).
pub fn accepts(key: &str, accept: Option<&HeaderValue>) -> bool {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(GUID);
    let expected = base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref());
    accept.is_some_and(|v| v.as_bytes() == expected.as_bytes())
}

/// Whether `Connection` lists the `upgrade` token.
fn lists_upgrade(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
    })
}

/// Checks an upstream's `101` to `asked` (before its hop-by-hop headers are removed): it must
/// switch to the protocol asked for.
pub fn check_switch(asked: &Asked, headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::UPGRADE).iter();
    let (Some(value), None) = (values.next(), values.next()) else { return false };
    let protocol = value.to_str().ok().map(|v| v.trim().split('/').next().unwrap_or("").trim());
    lists_upgrade(headers) && protocol.is_some_and(|p| p.eq_ignore_ascii_case(&asked.protocol))
}

/// The answer the client gets for the upstream's `101`: over HTTP/1.1 a `101` with the
/// upstream's end-to-end headers (`Sec-WebSocket-Accept`, `-Protocol`, `-Extensions`, …) plus
/// the switch itself; over HTTP/2 a `200` without `Sec-WebSocket-Accept` (RFC 8441 section 5).
pub fn write_response(asked: &Asked, parts: &mut http::response::Parts) {
    if asked.h2 {
        parts.status = http::StatusCode::OK;
        parts.headers.remove("sec-websocket-accept");
        return;
    }
    parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, asked.value.clone());
}

/// A relayed refusal of an upgrade: the client's connection is closed after it.
pub fn close_after(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
}

/// Where upgrade requests hand their tunnel to the task serving the client's connection.
/// Put in a request's extensions only when hyper marked it as an upgrade request.
#[derive(Clone)]
pub struct Splicer(mpsc::UnboundedSender<Tunnel>);

impl Splicer {
    pub fn new() -> (Splicer, mpsc::UnboundedReceiver<Tunnel>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Splicer(tx), rx)
    }

    /// Hands `tunnel` over; false when the connection is already gone.
    pub fn hand_over(&self, tunnel: Tunnel) -> bool {
        self.0.send(tunnel).is_ok()
    }
}

/// An upgrade the upstream accepted: the two connections to splice once hyper releases them.
pub struct Tunnel {
    pub client: OnUpgrade,
    pub upstream: OnUpgrade,
    /// The upstream's (empty) `101` body: it holds the upstream's `max_connections` slot.
    pub hold: Guarded,
    pub idle_timeout: Duration,
    pub protocol: String,
    pub upstream_name: String,
}

impl Tunnel {
    pub fn new(
        client: OnUpgrade,
        upstream: OnUpgrade,
        hold: Guarded,
        upgrades: &Upgrades,
        asked: &Asked,
        upstream_name: &str,
    ) -> Tunnel {
        Tunnel {
            client,
            upstream,
            hold,
            idle_timeout: upgrades.idle_timeout,
            protocol: asked.protocol.clone(),
            upstream_name: upstream_name.to_string(),
        }
    }

    /// Copies bytes both ways until both directions are finished (a close on one side is
    /// passed on to the other) or nothing moves for `idle_timeout`; then logs the bytes each
    /// way and the duration.
    pub async fn run(self, peer: std::net::SocketAddr) {
        let started = Instant::now();
        let (client, upstream) = match tokio::try_join!(self.client, self.upstream) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%peer, %error, "upgrade not completed");
                return;
            }
        };
        let up = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicU64::new(0));
        let mut client = Counted { io: TokioIo::new(client), read: up.clone() };
        let mut upstream = Counted { io: TokioIo::new(upstream), read: down.clone() };
        let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        let reason = tokio::select! {
            result = copy => match result {
                Ok(_) => "closed",
                Err(_) => "error",
            },
            () = idle(&up, &down, self.idle_timeout) => "idle",
        };
        tracing::info!(
            %peer,
            upstream = %self.upstream_name,
            protocol = %self.protocol,
            bytes_up = up.load(Ordering::Relaxed),
            bytes_down = down.load(Ordering::Relaxed),
            duration_ms = started.elapsed().as_millis() as u64,
            reason,
            "upgraded connection ended"
        );
        drop(self.hold);
    }
}

/// Resolves once neither counter moved for `timeout` (checked four times per timeout, so the
/// close comes between `timeout` and 1.25 × `timeout`).
async fn idle(up: &AtomicU64, down: &AtomicU64, timeout: Duration) {
    let period = (timeout / 4).max(Duration::from_millis(10));
    let moved = || up.load(Ordering::Relaxed).wrapping_add(down.load(Ordering::Relaxed));
    let mut seen = moved();
    let mut quiet_since = Instant::now();
    loop {
        tokio::time::sleep(period).await;
        let now = moved();
        if now != seen {
            seen = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= timeout {
            return;
        }
    }
}

/// An upgraded connection that counts the bytes read from it.
struct Counted {
    io: TokioIo<hyper::upgrade::Upgraded>,
    read: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before) as u64;
        if n > 0 {
            self.read.fetch_add(n, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(
        method: Method,
        headers: &[(&str, &str)],
    ) -> Request<http_body_util::Empty<bytes::Bytes>> {
        let mut b = Request::builder().method(method).uri("/ws");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(http_body_util::Empty::new()).unwrap()
    }

    /// Only a single protocol with `Connection: upgrade` on HTTP/1.1 is an upgrade request;
    /// CONNECT is refused.
    #[test]
    fn upgrade_requests_are_recognised_strictly() {
        let ws = [("connection", "keep-alive, Upgrade"), ("upgrade", "WebSocket")];
        let ws_asked = asked(&req(Method::GET, &ws)).unwrap().unwrap();
        assert_eq!(ws_asked.protocol, "websocket");
        for headers in [
            &[("upgrade", "websocket")][..],
            &[("connection", "upgrade"), ("upgrade", "websocket, h2c")],
            &[("connection", "upgrade"), ("upgrade", "")],
            &[("connection", "upgrade"), ("upgrade", "websocket"), ("upgrade", "h2c")],
        ] {
            assert!(asked(&req(Method::GET, headers)).unwrap().is_none(), "{headers:?}");
        }
        assert!(matches!(asked(&req(Method::CONNECT, &[])), Err(Reject::Connect { .. })));
        let upgrades =
            Upgrades { protocols: vec!["websocket".into()], idle_timeout: DEFAULT_IDLE_TIMEOUT };
        assert!(upgrades.allows(&ws_asked, &req(Method::GET, &ws), true));
        assert!(!upgrades.allows(&ws_asked, &req(Method::GET, &ws), false));
        assert!(!upgrades.allows(&ws_asked, &req(Method::POST, &ws), true));
        let h2c = asked(&req(Method::GET, &[("connection", "upgrade"), ("upgrade", "h2c")]))
            .unwrap()
            .unwrap();
        assert!(!upgrades.allows(&h2c, &req(Method::GET, &ws), true));
    }

    /// An upstream's 101 must switch to the protocol asked for.
    #[test]
    fn a_switch_must_name_the_protocol_asked_for() {
        let ws = [("connection", "upgrade"), ("upgrade", "websocket")];
        let ws_asked = asked(&req(Method::GET, &ws)).unwrap().unwrap();
        let headers = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            h
        };
        assert!(check_switch(
            &ws_asked,
            &headers(&[("connection", "Upgrade"), ("upgrade", "WebSocket")])
        ));
        assert!(!check_switch(
            &ws_asked,
            &headers(&[("connection", "upgrade"), ("upgrade", "h2c")])
        ));
        assert!(!check_switch(&ws_asked, &headers(&[("upgrade", "websocket")])));
        assert!(!check_switch(&ws_asked, &headers(&[("connection", "upgrade")])));
    }

    /// The upstream's accept value is checked as RFC 6455 computes it (its own example).
    #[test]
    fn websocket_accept_matches_the_rfc_example() {
        let good = HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(accepts("dGhlIHNhbXBsZSBub25jZQ==", Some(&good)));
        assert!(!accepts("AAAAAAAAAAAAAAAAAAAAAA==", Some(&good)));
        assert!(!accepts("dGhlIHNhbXBsZSBub25jZQ==", None));
    }

    /// Protocols that would let requests bypass the gateway cannot be allowed.
    #[test]
    fn h2c_cannot_be_allowed() {
        assert!(protocol_problem("websocket").is_none());
        assert!(protocol_problem("my-proto/2").is_none());
        for bad in ["h2c", "H2C", "h2", "HTTP/2.0", "web socket", ""] {
            assert!(protocol_problem(bad).is_some(), "{bad}");
        }
    }
}
