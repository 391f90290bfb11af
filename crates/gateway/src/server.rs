//! Accepting connections: bind every listener (so a port conflict is reported before serving),
//! accept under a connection limit, run the TLS handshake with a deadline, establish the
//! client identity once, then serve HTTP/1.1 or HTTP/2 on the connection until it ends, goes
//! idle, or the gateway shuts down.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::HeaderValue;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, Limits, Listener};
use crate::http::headers::ConnIdentity;
use crate::http::pipeline::{self, ConnState, ListenerCtx};
use crate::tls::server::{ClientAuthMode, ListenerTls};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listener {listener}: cannot listen on {addr}: {source}")]
    Bind {
        listener: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How long open connections get to finish after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A bound listener, ready to serve.
struct Bound {
    socket: TcpListener,
    tls: ListenerTls,
    limits: Limits,
    ctx: Arc<ListenerCtx>,
}

/// Serves `config` until `shutdown` resolves, then lets open connections finish (up to
/// 10 s). `on_ready` receives the bound addresses (port 0 becomes the real port).
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(Vec<(String, SocketAddr)>),
) -> Result<(), ServeError> {
    let mut bound = Vec::new();
    for l in config.listeners {
        bound.push(bind(l, config.access_log).await?);
    }
    let addrs = bound
        .iter()
        .filter_map(|b| b.socket.local_addr().ok().map(|a| (b.ctx.name.clone(), a)))
        .collect();
    on_ready(addrs);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut limits = Vec::new();
    let mut accept_loops = Vec::new();
    for b in bound {
        let semaphore = Arc::new(Semaphore::new(b.limits.max_connections));
        limits.push((semaphore.clone(), b.limits.max_connections));
        accept_loops.push(tokio::spawn(accept_loop(b, semaphore, stop_rx.clone())));
    }
    shutdown.await;
    tracing::info!("shutting down: no new connections, open ones may finish");
    let _ = stop_tx.send(true);
    for task in accept_loops {
        task.abort();
    }
    let drained = async {
        for (semaphore, max) in limits {
            let n = u32::try_from(max).unwrap_or(u32::MAX);
            let _ = semaphore.acquire_many(n).await;
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
    }
    Ok(())
}

async fn bind(l: Listener, access_log: bool) -> Result<Bound, ServeError> {
    let socket = TcpListener::bind(l.addr).await.map_err(|source| ServeError::Bind {
        listener: l.name.clone(),
        addr: l.addr,
        source,
    })?;
    Ok(Bound {
        socket,
        tls: l.tls,
        limits: l.limits,
        ctx: Arc::new(ListenerCtx {
            name: l.name,
            routes: l.routes,
            sni_host_check: l.sni_host_check,
            access_log,
        }),
    })
}

async fn accept_loop(b: Bound, semaphore: Arc<Semaphore>, stop: watch::Receiver<bool>) {
    let tls = Arc::new(b.tls);
    let acceptor = TlsAcceptor::from(tls.config.clone());
    loop {
        // At the connection limit, wait for a slot before accepting more.
        let Ok(permit) = semaphore.clone().acquire_owned().await else { return };
        let (tcp, peer) = match b.socket.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, tls, ctx, limits, stop) =
            (acceptor.clone(), tls.clone(), b.ctx.clone(), b.limits, stop.clone());
        tokio::spawn(async move {
            connection(tcp, peer, acceptor, tls, ctx, limits, stop).await;
            drop(permit);
        });
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    tls: Arc<ListenerTls>,
    ctx: Arc<ListenerCtx>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let stream = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let (_, session) = stream.get_ref();
    let sni = session.server_name().map(str::to_ascii_lowercase);
    let presented = session.peer_certificates().map(<[_]>::to_vec).unwrap_or_default();
    let client = tls.client_cert(Some(&presented));
    let state = Arc::new(ConnState {
        peer,
        sni,
        identity: ConnIdentity::new(
            client,
            &presented,
            tls.mode == ClientAuthMode::DangerousOptionalNoCa,
        ),
        peer_ip: HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown")),
    });

    let activity = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(ActivityIo { inner: stream, events: activity.clone() });
    let service =
        hyper::service::service_fn(move |req| pipeline::handle(req, state.clone(), ctx.clone()));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    // The connection is idle when no byte moved for a whole idle_timeout: checked on a tick,
    // by comparing the I/O event count, so the I/O path itself never reads the clock.
    let period = limits.idle_timeout.min(Duration::from_secs(5)).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut seen = 0u64;
    let mut quiet_since = Instant::now();
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stop.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick(), if !closing => {
                let events = activity.load(Ordering::Relaxed);
                if events != seen {
                    seen = events;
                    quiet_since = Instant::now();
                }
                if quiet_since.elapsed() >= limits.idle_timeout {
                    tracing::debug!(%peer, "closing idle connection");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Counts reads and writes that moved bytes, for the idle timeout.
struct ActivityIo<T> {
    inner: T,
    events: Arc<AtomicU64>,
}

impl<T> ActivityIo<T> {
    fn touch(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ActivityIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ActivityIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
