//! TLS passthrough by SNI on a listener that also terminates TLS: the ClientHello is read
//! (every byte kept), its SNI decides, and the connection is either handed to the listener's
//! own handshake with the same `Accepted`, or relayed untouched to a TCP upstream that
//! terminates TLS itself (nginx's `stream` + `ssl_preread`, on the same port as terminated
//! hosts).
//!
//! The gateway sees no HTTP on a relayed connection: no client-certificate policy, identity
//! headers or 421 check apply there; the upstream does its own TLS and mTLS.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::server::IpNet;

/// The largest ClientHello read (nginx's `preread_buffer_size`; post-quantum key shares make
/// ClientHellos of 1.5–2 KB common, and a few extensions more).
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// One `[[passthrough]]` route.
#[derive(Debug)]
pub struct Passthrough {
    pub name: String,
    /// `host:port`; a name is resolved per connection, so DNS changes are followed.
    pub upstream: String,
    pub connect_timeout: Duration,
    /// A relay with no byte either way for this long is closed.
    pub idle_timeout: Duration,
    /// Send a PROXY protocol v2 header (client address, and the SNI as AUTHORITY) first.
    pub proxy_v2: bool,
    /// Client addresses allowed; empty: any.
    pub allow: Vec<IpNet>,
}

/// What a listener does with a ClientHello without SNI.
#[derive(Debug, Clone, Default)]
pub enum NoSni {
    /// The listener's own handshake, with its default certificate.
    #[default]
    Terminate,
    Refuse,
    Relay(Arc<Passthrough>),
}

/// A listener's passthrough routes by SNI, built once per generation.
#[derive(Debug, Default)]
pub struct SniTable {
    exact: HashMap<String, Arc<Passthrough>>,
    /// By the suffix after `*.` (`*.example.com` → `example.com`): one label only.
    wildcard: HashMap<String, Arc<Passthrough>>,
    pub no_sni: NoSni,
}

/// What to do with one connection.
#[derive(Debug)]
pub enum Decision {
    Terminate,
    Relay(Arc<Passthrough>),
    Refuse(&'static str),
}

impl SniTable {
    /// `names` (lowercase; `*.example.com` for one label) → route; a name given twice is
    /// refused by the configuration before this is built.
    pub fn new(routes: Vec<(Vec<String>, Arc<Passthrough>)>, no_sni: NoSni) -> SniTable {
        let mut table = SniTable { no_sni, ..SniTable::default() };
        for (names, route) in routes {
            for name in names {
                match name.strip_prefix("*.") {
                    Some(suffix) => table.wildcard.insert(suffix.to_string(), route.clone()),
                    None => table.exact.insert(name, route.clone()),
                };
            }
        }
        table
    }

    /// Whether a ClientHello's bytes must be kept (there is somewhere to relay them).
    pub fn relays(&self) -> bool {
        !self.exact.is_empty()
            || !self.wildcard.is_empty()
            || matches!(self.no_sni, NoSni::Relay(_))
    }

    /// Whether requests for `host` belong to a passthrough route (the terminated side answers
    /// them 421, whatever its SNI check says).
    pub fn passes_through(&self, host: &str) -> bool {
        self.lookup(host).is_some()
    }

    fn lookup(&self, name: &str) -> Option<&Arc<Passthrough>> {
        if let Some(route) = self.exact.get(name) {
            return Some(route);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent)
    }

    /// The decision for a ClientHello's SNI (rustls gives it lowercase, without a trailing
    /// dot) from `peer`.
    pub fn decide(&self, sni: Option<&str>, peer: std::net::IpAddr) -> Decision {
        let route = match sni {
            Some(name) => match self.lookup(name) {
                Some(route) => route,
                None => return Decision::Terminate,
            },
            None => match &self.no_sni {
                NoSni::Terminate => return Decision::Terminate,
                NoSni::Refuse => return Decision::Refuse("no_sni_refused"),
                NoSni::Relay(route) => route,
            },
        };
        if !route.allow.is_empty() && !route.allow.iter().any(|net| net.contains(peer)) {
            return Decision::Refuse("source_refused");
        }
        Decision::Relay(route.clone())
    }
}

/// Why no ClientHello was read (a bounded metric label each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloError {
    /// The first byte is not a TLS handshake record.
    NotTls,
    /// Larger than [`MAX_CLIENT_HELLO`].
    TooLarge,
    /// Not a ClientHello rustls accepts.
    Malformed,
    /// The client closed or the connection failed first.
    Closed,
}

impl HelloError {
    pub fn outcome(self) -> &'static str {
        match self {
            HelloError::NotTls => "not_tls",
            HelloError::TooLarge => "client_hello_too_large",
            HelloError::Malformed => "tls_error",
            HelloError::Closed => "tls_error",
        }
    }
}

/// Reads until rustls has a whole ClientHello (across TCP segments and TLS records), with
/// every byte read kept when `keep` (for a relay). Bytes past the ClientHello stay inside
/// the `Accepted`, for the handshake that continues from it.
pub async fn read_client_hello<S: AsyncRead + Unpin>(
    io: &mut S,
    keep: bool,
) -> Result<(rustls::server::Accepted, Vec<u8>), HelloError> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut seen = Vec::new();
    let mut total = 0usize;
    let mut chunk = [0u8; 4096];
    loop {
        let n = io.read(&mut chunk).await.map_err(|_| HelloError::Closed)?;
        let fresh = chunk.get(..n).ok_or(HelloError::Closed)?;
        if n == 0 {
            return Err(HelloError::Closed);
        }
        if total == 0 && fresh.first() != Some(&0x16) {
            return Err(HelloError::NotTls);
        }
        total += n;
        if total > MAX_CLIENT_HELLO {
            return Err(HelloError::TooLarge);
        }
        if keep {
            seen.extend_from_slice(fresh);
        }
        let mut rest = fresh;
        while !rest.is_empty() {
            // rustls may take less than offered; zero means its own buffer is full.
            match acceptor.read_tls(&mut rest) {
                Ok(0) | Err(_) => return Err(HelloError::TooLarge),
                Ok(_) => {}
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => return Ok((accepted, seen)),
            Ok(None) => {}
            Err(_) => return Err(HelloError::Malformed),
        }
    }
}

/// The PROXY protocol v2 header for a relayed connection (haproxy's proxy-protocol.txt §2.2):
/// PROXY command, TCP over the client's address family, and the SNI as an AUTHORITY TLV.
pub fn proxy_v2_header(client: SocketAddr, local: SocketAddr, sni: Option<&str>) -> Vec<u8> {
    const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&SIGNATURE);
    out.push(0x21); // version 2, PROXY
    // An IPv4-mapped client is written as IPv4, so the upstream logs the address it knows.
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (client, local) = (canonical(client), canonical(local));
    let mut body = Vec::with_capacity(48);
    match (client, local) {
        (SocketAddr::V4(c), SocketAddr::V4(l)) => {
            out.push(0x11);
            body.extend_from_slice(&c.ip().octets());
            body.extend_from_slice(&l.ip().octets());
        }
        (c, l) => {
            out.push(0x21);
            let v6 = |a: SocketAddr| match a.ip() {
                std::net::IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
                std::net::IpAddr::V6(ip) => ip.octets(),
            };
            body.extend_from_slice(&v6(c));
            body.extend_from_slice(&v6(l));
        }
    }
    body.extend_from_slice(&client.port().to_be_bytes());
    body.extend_from_slice(&local.port().to_be_bytes());
    if let Some(name) = sni {
        // SNI is at most 255 bytes (a DNS name), so the length always fits.
        let len = u16::try_from(name.len()).unwrap_or(0);
        body.push(0x02);
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(&name.as_bytes()[..usize::from(len)]);
    }
    let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// How a relay ended, for the access log.
#[derive(Debug)]
pub struct Relayed {
    pub to_upstream: u64,
    pub to_client: u64,
    pub close: &'static str,
}

/// Connects to the route's upstream, writes the PROXY header (if asked) and the ClientHello
/// bytes, then copies both ways until both sides have closed, both stay idle for the route's
/// `idle_timeout`, `max_age` (the listener's `max_connection_age`) passes, or a side fails.
/// Half-closes are passed on.
pub async fn relay<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut C,
    hello: &[u8],
    route: &Passthrough,
    peer: SocketAddr,
    local: SocketAddr,
    sni: Option<&str>,
    max_age: Option<Duration>,
) -> Relayed {
    let until = max_age.map(|age| tokio::time::Instant::now() + age);
    let mut done = Relayed { to_upstream: 0, to_client: 0, close: "upstream_unreachable" };
    let connect = TcpStream::connect(route.upstream.as_str());
    let mut upstream = match tokio::time::timeout(route.connect_timeout, connect).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(error)) => {
            tracing::warn!(passthrough = %route.name, upstream = %route.upstream, %error,
                "cannot connect to the passthrough upstream");
            return done;
        }
        Err(_) => {
            tracing::warn!(passthrough = %route.name, upstream = %route.upstream,
                after = ?route.connect_timeout, "cannot connect to the passthrough upstream: timed out");
            done.close = "upstream_timeout";
            return done;
        }
    };
    let _ = upstream.set_nodelay(true);
    let mut first = if route.proxy_v2 { proxy_v2_header(peer, local, sni) } else { Vec::new() };
    first.extend_from_slice(hello);
    if upstream.write_all(&first).await.is_err() {
        done.close = "upstream_reset";
        return done;
    }
    done.to_upstream = hello.len() as u64;
    let (close, up, down) = copy_both(client, &mut upstream, route.idle_timeout, until).await;
    done.to_upstream += up;
    done.to_client += down;
    done.close = close;
    done
}

/// Copies both ways, passing each EOF on as a write shutdown, until both directions ended,
/// `idle` passed with no byte either way, `until` came, or an error. Returns why it ended and
/// the bytes copied each way.
async fn copy_both<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Duration,
    until: Option<tokio::time::Instant>,
) -> (&'static str, u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let (mut a_buf, mut b_buf) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let (mut a_open, mut b_open) = (true, true);
    let (mut to_b, mut to_a) = (0u64, 0u64);
    while a_open || b_open {
        tokio::select! {
            read = ar.read(&mut a_buf), if a_open => match read {
                Ok(0) => {
                    a_open = false;
                    let _ = bw.shutdown().await;
                }
                Ok(n) => {
                    if bw.write_all(a_buf.get(..n).unwrap_or_default()).await.is_err() {
                        return ("upstream_reset", to_b, to_a);
                    }
                    to_b += n as u64;
                }
                Err(_) => return ("client_reset", to_b, to_a),
            },
            read = br.read(&mut b_buf), if b_open => match read {
                Ok(0) => {
                    b_open = false;
                    let _ = aw.shutdown().await;
                }
                Ok(n) => {
                    if aw.write_all(b_buf.get(..n).unwrap_or_default()).await.is_err() {
                        return ("client_reset", to_b, to_a);
                    }
                    to_a += n as u64;
                }
                Err(_) => return ("upstream_reset", to_b, to_a),
            },
            () = tokio::time::sleep(idle) => return ("idle_timeout", to_b, to_a),
            () = async {
                match until {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => return ("max_age", to_b, to_a),
        }
    }
    ("closed", to_b, to_a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str) -> Arc<Passthrough> {
        Arc::new(Passthrough {
            name: name.into(),
            upstream: "127.0.0.1:1".into(),
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            proxy_v2: false,
            allow: vec![],
        })
    }

    /// Exact names first, then a one-label wildcard; other names and no SNI terminate by
    /// default.
    #[test]
    fn sni_decides_exact_then_wildcard() {
        let table = SniTable::new(
            vec![
                (vec!["idp.example.test".into()], route("idp")),
                (vec!["*.apps.example.test".into()], route("apps")),
            ],
            NoSni::Terminate,
        );
        let ip = "127.0.0.1".parse().unwrap();
        let name = |d: Decision| match d {
            Decision::Relay(r) => r.name.clone(),
            Decision::Terminate => "terminate".into(),
            Decision::Refuse(why) => why.into(),
        };
        assert_eq!(name(table.decide(Some("idp.example.test"), ip)), "idp");
        assert_eq!(name(table.decide(Some("a.apps.example.test"), ip)), "apps");
        assert_eq!(name(table.decide(Some("a.b.apps.example.test"), ip)), "terminate");
        assert_eq!(name(table.decide(Some("apps.example.test"), ip)), "terminate");
        assert_eq!(name(table.decide(None, ip)), "terminate");
        assert!(table.passes_through("idp.example.test") && !table.passes_through("api"));
        let refuse = SniTable::new(vec![], NoSni::Refuse);
        assert_eq!(name(refuse.decide(None, ip)), "no_sni_refused");
    }

    /// The header has the v2 signature, the PROXY command, both addresses and ports, and the
    /// SNI as an AUTHORITY TLV; a mapped IPv4 client is written as IPv4.
    #[test]
    fn proxy_v2_header_layout() {
        let client: SocketAddr = "[::ffff:10.1.2.3]:40000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        let h = proxy_v2_header(client, local, Some("idp.example.test"));
        assert_eq!(&h[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(h[12], 0x21);
        assert_eq!(h[13], 0x11);
        let len = usize::from(u16::from_be_bytes([h[14], h[15]]));
        assert_eq!(h.len(), 16 + len);
        assert_eq!(&h[16..20], &[10, 1, 2, 3]);
        assert_eq!(&h[20..24], &[127, 0, 0, 1]);
        assert_eq!(u16::from_be_bytes([h[24], h[25]]), 40000);
        assert_eq!(u16::from_be_bytes([h[26], h[27]]), 8443);
        assert_eq!(h[28], 0x02);
        assert_eq!(&h[31..], b"idp.example.test");
    }
}
