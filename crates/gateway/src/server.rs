//! Accepting connections and serving them, one named step at a time:
//!
//! ```text
//! accept ──► handshake ──► identity ──► serve
//!               └► refuse (alert sent, write side shut, input drained briefly)
//! ```
//!
//! Each listener is a [`Slot`]: its socket and connection limit are fixed when the gateway
//! starts; what new connections use (certificates, trust, routes, limits) is a [`Generation`]
//! that a reload replaces in one step. A connection loads the current generation once, when it
//! is accepted, and keeps it until it ends: it never mixes two policies, and verified-chain
//! caches never cross generations.
//!
//! - **accept**: under the listener's `max_connections` (a semaphore whose permit lives as long
//!   as the connection); accept errors (out of descriptors) back off instead of spinning.
//! - **handshake**: TLS with a deadline; a refused client certificate gets its alert, and the
//!   connection is closed gracefully so the client reads the alert rather than a reset.
//! - **identity**: the client's standing ([`ClientCert`]), made once per connection.
//! - **serve**: HTTP/1.1 or HTTP/2 until the connection ends, goes idle (no request in flight
//!   and none started or ended for `idle_timeout`; HTTP/2 PINGs are not activity), or the
//!   gateway shuts down.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use http::HeaderValue;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::server::TlsStream;

use crate::access_log::AccessLog;
use crate::config::{Config, ConfigErrors, Limits, Listener};
use crate::http::body::{Activity, Guarded, InFlight};
use crate::http::headers::ConnIdentity;
use crate::http::pipeline::{self, ConnInfo, ListenerCtx};
use crate::http::upgrade::Splicer;
use crate::http::upstream::boxed;
use crate::metrics::MeteredTcp;
use crate::tls::passthrough::{Decision, HelloError, Passthrough, read_client_hello, relay};
use crate::tls::server::{ClientCert, ListenerTls, SniPolicies};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listener {listener}: cannot listen on {addr}")]
    Bind {
        listener: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the access log {sink}")]
    AccessLog {
        sink: crate::access_log::Sink,
        #[source]
        source: std::io::Error,
    },
}

/// After refusing a handshake, how long and how much of the client's input is read and
/// discarded, so that closing does not turn into a reset that destroys the alert.
const REFUSAL_DRAIN: Duration = Duration::from_secs(1);
const REFUSAL_DRAIN_BYTES: usize = 64 * 1024;

/// A bound listener. The socket and the connection limit live until the gateway stops; the
/// generation is replaced by reloads.
struct Slot {
    name: String,
    addr: SocketAddr,
    socket: TcpListener,
    max_connections: usize,
    permits: Arc<Semaphore>,
    current: ArcSwap<Generation>,
    /// The id of `current`, for open connections to re-check their client certificate when
    /// a reload replaces it.
    swapped: watch::Sender<u64>,
}

/// What a listener's new connections use, built and validated whole, swapped whole.
pub struct Generation {
    /// Counts up from 1 with each successful reload (logged per reload).
    pub id: u64,
    /// The listener's TLS and the policies of server names with their own.
    tls: Arc<SniPolicies>,
    limits: Limits,
    trusted_proxies: Arc<[IpNet]>,
    /// Load balancers whose connections start with a PROXY protocol header.
    proxy_protocol_from: Arc<[IpNet]>,
    ctx: Arc<ListenerCtx>,
}

impl Generation {
    fn new(
        id: u64,
        l: Listener,
        access_log: Option<AccessLog>,
        metrics: Option<&Arc<crate::metrics::Metrics>>,
    ) -> Generation {
        let tls = Arc::new(l.tls);
        let sni_policies = (!tls.is_empty()).then(|| tls.clone());
        let listener_metrics =
            metrics.map(|m| crate::metrics::ListenerMetrics::new(m, &l.name, &l.routes));
        let any_error_pages =
            l.error_pages.is_some() || l.routes.routes().any(|r| r.error_pages.is_some());
        Generation {
            id,
            tls,
            limits: l.limits,
            trusted_proxies: l.trusted_proxies.into(),
            proxy_protocol_from: l.proxy_protocol_from.into(),
            ctx: Arc::new(ListenerCtx {
                name: l.name,
                routes: l.routes,
                sni_host_check: l.sni_host_check,
                body_timeout: l.limits.body_timeout,
                access_log,
                metrics: listener_metrics,
                error_pages: l.error_pages,
                passthrough: l.passthrough,
                sni_policies,
                any_error_pages,
            }),
        }
    }
}

/// How a running gateway gets a new configuration: `load` reads and builds it (off the
/// runtime threads), each message on `requests` asks for one reload.
pub struct Reloader {
    pub load: Box<dyn Fn() -> Result<Config, ConfigErrors> + Send + Sync>,
    pub requests: mpsc::Receiver<()>,
    /// The sender of `requests`, for the gateway's own triggers: a file the configuration
    /// names changed on disk ([`crate::watch`]), or a loaded CRL reached its nextUpdate.
    /// `None`: reload on request only.
    pub triggers: Option<mpsc::Sender<()>>,
    /// Each message reopens the access-log file (SIGUSR1, for logrotate).
    pub reopen_logs: mpsc::Receiver<()>,
}

/// An IP network (`10.0.0.0/8`, `::1/128`) of trusted front proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    /// Whether `ip` is inside this network (IPv4-mapped IPv6 peers count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The addresses the gateway bound (port 0 becomes the real port).
#[derive(Debug, Clone)]
pub struct Ready {
    pub listeners: Vec<(String, SocketAddr)>,
    pub admin: Option<SocketAddr>,
    /// The admin listener speaks mTLS.
    pub admin_tls: bool,
}

/// Serves `config` until `shutdown` resolves, reloading it whenever `reloader` asks, then lets
/// open connections finish (up to `runtime.shutdown_grace`, as last loaded). `on_ready`
/// receives the bound addresses.
pub async fn serve(
    config: Config,
    reloader: Option<Reloader>,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(Ready),
) -> Result<(), ServeError> {
    let wanted: usize = config.listeners.iter().map(|l| l.limits.max_connections).sum();
    crate::limits::raise_open_files(wanted);
    let mut access = AccessLogs::default();
    let log =
        access.handle(config.access_log.as_ref()).map_err(|source| ServeError::AccessLog {
            sink: config.access_log.clone().unwrap_or(crate::access_log::Sink::Stdout),
            source,
        })?;
    let watched = crate::watch::WatchList::default();
    watched.set(config.files.clone());
    let crl_updates = config.crl_updates.clone();
    let grace = Arc::new(ArcSwap::from_pointee(config.shutdown_grace));
    let config_admin = config.admin.as_ref().map(|a| a.addr);
    let managed_status = Arc::new(crate::managed::Status::default());
    let managed = config.managed.clone();
    let crl_sources = config.crl_sources.clone();
    // Request and handshake metrics cost a little per request: kept only when an admin
    // listener can serve them.
    let metrics = config.admin.as_ref().map(|_| Arc::new(crate::metrics::Metrics::default()));
    let admin = match config_admin {
        Some(addr) => {
            let socket = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind {
                listener: "admin".into(),
                addr,
                source,
            })?;
            let reload = reloader.as_ref().and_then(|r| r.triggers.clone());
            let state = crate::admin::AdminState::new(
                &config,
                reload,
                metrics.as_deref(),
                managed_status.clone(),
            );
            Some((socket, Arc::new(state)))
        }
        None => None,
    };
    let mut slots = Vec::new();
    for l in config.listeners {
        let socket = TcpListener::bind(l.addr).await.map_err(|source| ServeError::Bind {
            listener: l.name.clone(),
            addr: l.addr,
            source,
        })?;
        // The configured address, which a reload compares; port 0 stays 0 there.
        let addr = l.addr;
        let max_connections = l.limits.max_connections;
        slots.push(Arc::new(Slot {
            name: l.name.clone(),
            addr,
            socket,
            max_connections,
            permits: Arc::new(Semaphore::new(max_connections)),
            current: ArcSwap::from_pointee(Generation::new(1, l, log.clone(), metrics.as_ref())),
            swapped: watch::Sender::new(1),
        }));
    }
    let listeners = slots
        .iter()
        .filter_map(|s| s.socket.local_addr().ok().map(|a| (s.name.clone(), a)))
        .collect();
    let admin_addr = admin.as_ref().and_then(|(socket, _)| socket.local_addr().ok());
    let admin_tls = config.admin.as_ref().is_some_and(|a| a.tls.is_some());
    on_ready(Ready { listeners, admin: admin_addr, admin_tls });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for slot in &slots {
        tasks.push(tokio::spawn(accept_loop(slot.clone(), stop_rx.clone())));
    }
    let admin_state = admin.as_ref().map(|(_, state)| state.clone());
    if let Some((socket, state)) = admin {
        let watched_slots = slots.clone();
        let observe = Arc::new(move |s: &crate::admin::AdminState| {
            let open: Vec<(String, usize)> = watched_slots
                .iter()
                .map(|slot| {
                    let free = slot.permits.available_permits();
                    (slot.name.clone(), slot.max_connections.saturating_sub(free))
                })
                .collect();
            let dropped = watched_slots
                .first()
                .and_then(|slot| {
                    slot.current.load().ctx.access_log.as_ref().map(AccessLog::dropped)
                })
                .unwrap_or(0);
            s.observe(&open, dropped);
        });
        state.set_ready(true);
        tasks.push(tokio::spawn(crate::admin::serve(socket, state, observe)));
    }
    if let Some(reloader) = reloader {
        if let Some(tx) = &reloader.triggers
            && let Err(error) = crate::watch::spawn(watched.clone(), tx.clone())
        {
            tracing::warn!(%error, "cannot watch the configuration's files; reload with SIGHUP");
        }
        let fetchers = match &reloader.triggers {
            Some(tx) => {
                let mut fetchers = crate::managed::Fetchers::new(tx.clone(), managed_status);
                fetchers.update(&managed, &crl_sources);
                Some(fetchers)
            }
            None => {
                if !managed.is_empty() || !crl_sources.is_empty() {
                    tracing::warn!(
                        "managed certificates and CRL URLs are not refreshed: this gateway does \
                         not reload"
                    );
                }
                None
            }
        };
        let state = ReloadState {
            fetchers,
            slots: slots.clone(),
            access,
            watched,
            crl_updates,
            grace: grace.clone(),
            admin: admin_state.clone(),
            admin_addr: config_admin,
            metrics: metrics.clone(),
        };
        tasks.push(tokio::spawn(reload_loop(reloader, state)));
    }
    shutdown.await;
    tracing::info!("shutting down: no new connections, open ones may finish");
    if let Some(state) = &admin_state {
        state.set_ready(false);
    }
    let _ = stop_tx.send(true);
    for task in tasks {
        task.abort();
    }
    let drained = async {
        for slot in &slots {
            let n = u32::try_from(slot.max_connections).unwrap_or(u32::MAX);
            let _ = slot.permits.acquire_many(n).await;
        }
    };
    let grace = **grace.load();
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!("connections still open after {grace:?}; closing them");
    }
    Ok(())
}

/// The access-log writer, started the first time a configuration turns it on, and again when
/// a reload points it elsewhere (the old writer ends with the last connection using it).
#[derive(Default)]
struct AccessLogs(Option<AccessLog>);

impl AccessLogs {
    fn handle(
        &mut self,
        sink: Option<&crate::access_log::Sink>,
    ) -> std::io::Result<Option<AccessLog>> {
        let Some(sink) = sink else { return Ok(None) };
        match &self.0 {
            Some(log) if log.sink == *sink => log.reopen(),
            _ => self.0 = Some(AccessLog::start(sink.clone())?),
        }
        Ok(self.0.clone())
    }

    fn reopen(&self) {
        if let Some(log) = &self.0 {
            log.reopen();
        }
    }
}

/// What reloads change besides the listeners' generations.
struct ReloadState {
    /// The managed certificates' and CRL URLs' tasks; `None` without reload triggers.
    fetchers: Option<crate::managed::Fetchers>,
    slots: Vec<Arc<Slot>>,
    access: AccessLogs,
    watched: crate::watch::WatchList,
    crl_updates: Vec<(std::path::PathBuf, rustls_pki_types::UnixTime)>,
    grace: Arc<ArcSwap<Duration>>,
    admin: Option<Arc<crate::admin::AdminState>>,
    /// The admin address bound at start (a reload cannot move it).
    admin_addr: Option<SocketAddr>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// Serves reload requests one at a time. A reload builds every listener's new generation
/// from the whole configuration before any is swapped in; on any error nothing changes, and
/// every problem is logged with its file, field and reason (the text of `serve --check`).
/// A loaded CRL's nextUpdate also triggers a reload, so a republished CRL is picked up; while
/// none is fresher, the stale CRL keeps refusing (fail closed) and is reported every minute.
async fn reload_loop(mut reloader: Reloader, mut state: ReloadState) {
    let load = Arc::new(reloader.load);
    let mut current = 1u64;
    let triggers = reloader.triggers.is_some();
    loop {
        let crl_check = triggers.then(|| next_crl_check(&state.crl_updates)).flatten();
        tokio::select! {
            request = reloader.requests.recv() => {
                if request.is_none() {
                    return;
                }
            }
            () = sleep_until_some(crl_check), if crl_check.is_some() => {
                report_stale_crls(&state.crl_updates);
            }
            Some(()) = reloader.reopen_logs.recv() => {
                state.access.reopen();
                continue;
            }
        }
        // Requests that queued up while waiting are served by this reload.
        while reloader.requests.try_recv().is_ok() {}
        let started = std::time::Instant::now();
        let loader = load.clone();
        let loaded = match tokio::task::spawn_blocking(move || loader()).await {
            Ok(result) => result,
            Err(e) => {
                tracing::error!(error = %e, "reload failed: the configuration loader stopped");
                continue;
            }
        };
        let config = match loaded {
            Ok(config) => config,
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!("reload: {e}");
                }
                tracing::error!(
                    problems = errors.0.len(),
                    "reload failed; still serving generation {current}"
                );
                if let Some(admin) = &state.admin {
                    admin.reloaded(&errors.0, vec![]);
                }
                continue;
            }
        };
        for (severity, note) in &config.notes {
            match severity {
                crate::config::Severity::Check => {
                    tracing::warn!("reload: {note} (serving anyway; `serve --check` fails on it)");
                }
                crate::config::Severity::Warning => tracing::warn!("reload: {note}"),
            }
        }
        let log = match state.access.handle(config.access_log.as_ref()) {
            Ok(log) => log,
            Err(e) => {
                tracing::error!(error = %e, "reload failed: cannot start the access log");
                continue;
            }
        };
        let next = current + 1;
        if let Some(admin) = &state.admin {
            admin.loaded(&config, next);
        }
        let mut needs_restart = Vec::new();
        if config.admin.as_ref().map(|a| a.addr) != state.admin_addr {
            needs_restart.push("admin.listen changed; the admin listener keeps its address".into());
        }
        state.watched.set(config.files.clone());
        if let Some(fetchers) = &mut state.fetchers {
            fetchers.update(&config.managed, &config.crl_sources);
        }
        state.crl_updates = config.crl_updates.clone();
        state.grace.store(Arc::new(config.shutdown_grace));
        let mut swaps = Vec::new();
        let named: Vec<String> = config.listeners.iter().map(|l| l.name.clone()).collect();
        for l in config.listeners {
            match state.slots.iter().find(|s| s.name == l.name) {
                None => {
                    let note =
                        format!("listener {} is new; it needs a restart to be bound", l.name);
                    tracing::warn!("reload: {note}");
                    needs_restart.push(note);
                }
                Some(slot) if slot.addr != l.addr => {
                    let note = format!(
                        "listener {} moved from {} to {}; that needs a restart, and it keeps \
                         its old settings until then",
                        l.name, slot.addr, l.addr
                    );
                    tracing::warn!("reload: {note}");
                    needs_restart.push(note);
                }
                Some(slot) => {
                    if slot.max_connections != l.limits.max_connections {
                        let note = format!(
                            "listener {}: max_connections needs a restart (still {})",
                            l.name, slot.max_connections
                        );
                        tracing::warn!("reload: {note}");
                        needs_restart.push(note);
                    }
                    let g = Generation::new(next, l, log.clone(), state.metrics.as_ref());
                    swaps.push((slot.clone(), g));
                }
            }
        }
        for slot in &state.slots {
            if !named.contains(&slot.name) {
                let note = format!(
                    "listener {} is gone from the configuration; it keeps serving its old \
                     settings until a restart",
                    slot.name
                );
                tracing::warn!("reload: {note}");
                needs_restart.push(note);
            }
        }
        for (slot, generation) in swaps {
            slot.current.store(Arc::new(generation));
            slot.swapped.send_replace(next);
        }
        current = next;
        if let Some(admin) = &state.admin {
            admin.reloaded(&[], needs_restart);
        }
        tracing::info!(
            took_ms = started.elapsed().as_millis() as u64,
            "reloaded: serving generation {next}"
        );
    }
}

/// How often a stale CRL is looked for again (and reported).
const STALE_CRL_RECHECK: Duration = Duration::from_secs(60);

/// When to look for a fresher CRL: a second after the earliest nextUpdate, or in a minute when
/// one is already past it.
fn next_crl_check(
    updates: &[(std::path::PathBuf, rustls_pki_types::UnixTime)],
) -> Option<tokio::time::Instant> {
    let earliest = updates.iter().map(|(_, t)| t.as_secs()).min()?;
    let now = rustls_pki_types::UnixTime::now().as_secs();
    let wait = match earliest.checked_sub(now) {
        Some(ahead) => Duration::from_secs(ahead.saturating_add(1)),
        None => STALE_CRL_RECHECK,
    };
    // Far-future nextUpdates: check at least daily, and never overflow the clock.
    Some(tokio::time::Instant::now() + wait.min(Duration::from_secs(24 * 3600)))
}

async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Logs each CRL past its nextUpdate: certificates it covers are refused until a fresher CRL
/// is there (fail closed), and the operator must hear about it.
fn report_stale_crls(updates: &[(std::path::PathBuf, rustls_pki_types::UnixTime)]) {
    let now = rustls_pki_types::UnixTime::now().as_secs();
    for (path, next) in updates {
        if let Some(late) = now.checked_sub(next.as_secs()).filter(|late| *late > 0) {
            tracing::warn!(
                crl = %path.display(),
                minutes_stale = late / 60,
                "CRL is past its next update; certificates it covers are refused until a fresher \
                 CRL is published there (within a dangerous_stale_crl_grace, checked against \
                 this stale list instead)"
            );
        }
    }
}

/// Waits between failed accepts: 5 ms doubling to 1 s, reset by a success. Running out of
/// descriptors (EMFILE) then costs a few wake-ups a second instead of a spinning core.
#[derive(Debug)]
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_millis(5))
    }
}

impl Backoff {
    fn reset(&mut self) {
        *self = Backoff::default();
    }

    async fn wait(&mut self, error: &std::io::Error) {
        tracing::warn!(%error, retry_in = ?self.0, "accept failed");
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(1));
    }
}

async fn accept_loop(slot: Arc<Slot>, stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::default();
    loop {
        // At the connection limit, wait for a slot before accepting more.
        let Ok(permit) = slot.permits.clone().acquire_owned().await else { return };
        let (tcp, peer) = match slot.socket.accept().await {
            Ok(pair) => {
                backoff.reset();
                pair
            }
            Err(e) => {
                backoff.wait(&e).await;
                continue;
            }
        };
        // The connection keeps this generation until it ends.
        let generation = slot.current.load_full();
        let (stop, slot) = (stop.clone(), slot.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let g = &generation;
            let _ = tcp.set_nodelay(true);
            let mut tcp = MeteredTcp::new(tcp, g.ctx.metrics.as_ref().map(|m| m.traffic()));
            let deadline = tokio::time::Instant::now() + g.limits.handshake_timeout;
            // Behind a load balancer that speaks the PROXY protocol, the client is the one
            // its header names, for everything after.
            let peer = if g.proxy_protocol_from.iter().any(|net| net.contains(peer.ip())) {
                let read = crate::proxy_protocol::read_header(&mut tcp);
                match tokio::time::timeout_at(deadline, read).await {
                    Ok(Ok(client)) => client.unwrap_or(peer),
                    Ok(Err(error)) => {
                        tracing::info!(%peer, %error, "connection from a load balancer refused");
                        if let Some(m) = &g.ctx.metrics {
                            m.handshake("proxy_protocol_invalid");
                        }
                        return refuse(tcp).await;
                    }
                    Err(_) => {
                        if let Some(m) = &g.ctx.metrics {
                            m.handshake("timeout");
                        }
                        return;
                    }
                }
            } else {
                peer
            };
            let trusted_proxy = g.trusted_proxies.iter().any(|net| net.contains(peer.ip()));
            let shaken = handshake(tcp, peer, g, deadline).await;
            if let Some(m) = &g.ctx.metrics {
                m.handshake(match &shaken {
                    Ok(Shaken::Tls(..)) => "ok",
                    Ok(Shaken::Relay { .. }) => "passthrough",
                    Err(outcome) => outcome,
                });
            }
            let (stream, policy) = match shaken {
                Ok(Shaken::Tls(stream, policy)) => (*stream, policy),
                Ok(Shaken::Relay { tcp, hello, route, sni }) => {
                    let max_age = g.limits.max_connection_age;
                    return passthrough(tcp, hello, &route, sni, peer, &g.ctx, max_age).await;
                }
                Err(_) => return,
            };
            let conn = identity(&stream, peer, g.tls.tls(policy), policy, trusted_proxy);
            let recheck = Recheck::of(&conn, &slot);
            serve_http(stream, conn, g.ctx.clone(), &g.limits, stop, recheck).await;
        });
    }
}

/// What the first step of a connection leads to.
enum Shaken {
    /// The listener's own handshake completed, with the policy its SNI chose
    /// ([`SniPolicies::index`]).
    Tls(Box<TlsStream<MeteredTcp>>, Option<usize>),
    /// The SNI belongs to a passthrough route: relay the ClientHello's bytes and the rest.
    Relay { tcp: MeteredTcp, hello: Vec<u8>, route: Arc<Passthrough>, sni: Option<String> },
}

/// Reads the ClientHello (across segments and records, every byte kept if the listener can
/// relay), decides by its SNI, and for a terminated host continues the listener's handshake
/// from it; all within one `handshake_timeout`. On a refused handshake the client's alert is
/// sent and the connection closed gracefully. Err is the outcome, a bounded metric label.
async fn handshake(
    mut tcp: MeteredTcp,
    peer: SocketAddr,
    g: &Generation,
    deadline: tokio::time::Instant,
) -> Result<Shaken, &'static str> {
    let passthrough = &g.ctx.passthrough;
    let read = read_client_hello(&mut tcp, passthrough.relays());
    let (accepted, hello) = match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(read)) => read,
        Ok(Err(error)) => {
            tracing::debug!(%peer, outcome = error.outcome(), "no ClientHello");
            if error == HelloError::NotTls {
                // A plain-HTTP request on the TLS port: say so, as nginx does.
                let _ = tcp.write_all(PLAIN_HTTP_ANSWER).await;
            }
            refuse(tcp).await;
            return Err(error.outcome());
        }
        Err(_) => {
            tracing::debug!(%peer, "ClientHello not received in time");
            return Err("timeout");
        }
    };
    // Compared as configured: lowercase, without a trailing dot.
    let sni = accepted
        .client_hello()
        .server_name()
        .map(|name| name.trim_end_matches('.').to_ascii_lowercase());
    match passthrough.decide(sni.as_deref(), peer.ip()) {
        Decision::Terminate => {}
        Decision::Relay(route) => return Ok(Shaken::Relay { tcp, hello, route, sni }),
        Decision::Refuse(outcome) => {
            tracing::info!(%peer, sni = sni.as_deref().unwrap_or(""), outcome, "connection refused");
            refuse(tcp).await;
            return Err(outcome);
        }
    }
    // The server name's own client-certificate policy, or the listener's.
    let policy = g.tls.index(sni.as_deref());
    let start = tokio_rustls::StartHandshake::from_parts(accepted, tcp);
    let accept = start.into_stream(g.tls.tls(policy).config.clone()).into_fallible();
    match tokio::time::timeout_at(deadline, accept).await {
        Ok(Ok(stream)) => Ok(Shaken::Tls(Box::new(stream), policy)),
        Ok(Err((error, tcp))) => {
            let outcome = match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                Some(e @ rustls::Error::InvalidCertificate(cert)) => {
                    tracing::info!(%peer, reason = %e, "client certificate refused in the handshake");
                    certificate_outcome(cert)
                }
                Some(e @ rustls::Error::NoCertificatesPresented) => {
                    tracing::info!(%peer, reason = %e, "client certificate refused in the handshake");
                    "no_certificate"
                }
                _ => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    "tls_error"
                }
            };
            refuse(tcp).await;
            Err(outcome)
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            Err("timeout")
        }
    }
}

/// The answer to a plain-HTTP request on a TLS port.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
Content-Length: 44\r\nConnection: close\r\n\r\nthis port speaks TLS: use https:// to reach it\n";

/// Relays a passed-through connection until it ends, then writes its access-log line.
async fn passthrough(
    mut tcp: MeteredTcp,
    hello: Vec<u8>,
    route: &Passthrough,
    sni: Option<String>,
    peer: SocketAddr,
    ctx: &ListenerCtx,
    max_age: Option<Duration>,
) {
    let started = std::time::Instant::now();
    let local = tcp.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let done = relay(&mut tcp, &hello, route, peer, local, sni.as_deref(), max_age).await;
    if let Some(log) = &ctx.access_log {
        log.relayed(&crate::access_log::RelayEntry {
            listener: &ctx.name,
            peer,
            sni: sni.as_deref(),
            route,
            relayed: &done,
            duration: started.elapsed(),
        });
    }
}

/// The metric label of a refused client certificate: the `X-Client-Verify` reason codes
/// where the alert tells them apart.
fn certificate_outcome(error: &rustls::CertificateError) -> &'static str {
    use rustls::CertificateError as E;
    match error {
        E::Expired | E::ExpiredContext { .. } => "expired",
        E::NotValidYet | E::NotValidYetContext { .. } => "not_yet_valid",
        E::UnknownIssuer => "unknown_issuer",
        E::InvalidPurpose | E::InvalidPurposeContext { .. } => "wrong_purpose",
        E::Revoked => "revoked",
        E::BadSignature => "bad_signature",
        E::UnknownRevocationStatus => "unknown_revocation_status",
        E::ExpiredRevocationList | E::ExpiredRevocationListContext { .. } => "crl_expired",
        _ => "invalid",
    }
}

/// Closes a refused connection so the alert already written reaches the client: shut the
/// write side (FIN after the alert), then read and discard what the client had already sent
/// (a TLS 1.3 client sends its request right after its Finished), briefly and boundedly, so
/// the kernel does not answer unread data with a reset.
async fn refuse(mut tcp: MeteredTcp) {
    let _ = tcp.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while total < REFUSAL_DRAIN_BYTES {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_DRAIN, drain).await;
}

/// What the handshake established, made once for every request of the connection.
fn identity(
    stream: &TlsStream<MeteredTcp>,
    peer: SocketAddr,
    tls: &ListenerTls,
    policy: Option<usize>,
    trusted_proxy: bool,
) -> Arc<ConnInfo> {
    let (_, session) = stream.get_ref();
    let sni = session.server_name().map(str::to_ascii_lowercase);
    let client = match session.peer_certificates() {
        Some(presented) => tls.client_cert(presented),
        None => ClientCert::None,
    };
    Arc::new(ConnInfo {
        peer,
        sni,
        identity: ConnIdentity::new(client, tls.client_auth.forwards_failed()),
        peer_ip: HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown")),
        trusted_proxy,
        policy,
    })
}

/// What an open connection needs to re-check its client certificate after a reload: its
/// verified path (kept with the connection's identity, so nothing is copied per connection),
/// and the listener whose generation may change.
struct Recheck {
    conn: Arc<ConnInfo>,
    slot: Arc<Slot>,
    swapped: watch::Receiver<u64>,
}

impl Recheck {
    /// Only connections with a verified client certificate have anything to re-check.
    fn of(conn: &Arc<ConnInfo>, slot: &Arc<Slot>) -> Option<Recheck> {
        if !matches!(conn.identity.client, ClientCert::Verified { .. }) {
            return None;
        }
        let mut swapped = slot.swapped.subscribe();
        swapped.mark_unchanged();
        Some(Recheck { conn: conn.clone(), slot: slot.clone(), swapped })
    }

    /// Why the certificate is refused by the current generation's trust settings, if it is.
    fn refused(&self) -> Option<certgate_pki::verify::VerifyError> {
        let ClientCert::Verified { identity, intermediates } = &self.conn.identity.client else {
            return None;
        };
        let current = self.slot.current.load();
        // The policy the connection's server name has in the new state.
        let tls = current.tls.tls(current.tls.index(self.conn.sni.as_deref()));
        let verifier = tls.client_auth.verifier()?;
        // The leaf and the intermediates of its verified path: what the client presented,
        // less any certificate that was not on the path.
        let chain: Vec<rustls_pki_types::CertificateDer<'static>> =
            std::iter::once(rustls_pki_types::CertificateDer::from(identity.der.clone()))
                .chain(intermediates.iter().cloned())
                .collect();
        verifier.verify(&chain, rustls_pki_types::UnixTime::now()).err()
    }
}

/// Serves HTTP on the connection until it ends, goes idle, reaches `max_connection_age`, the
/// gateway stops, or a reload's trust settings refuse its client certificate (revoked, or no
/// longer trusted): then it is closed gracefully (GOAWAY for HTTP/2; HTTP/1.1 after its
/// current request). Upgraded connections (and HTTP/2 WebSocket streams) are spliced by this
/// task, so they keep the connection's permit until they end (see `http::upgrade`).
async fn serve_http(
    stream: TlsStream<MeteredTcp>,
    conn: Arc<ConnInfo>,
    ctx: Arc<ListenerCtx>,
    limits: &Limits,
    mut stop: watch::Receiver<bool>,
    mut recheck: Option<Recheck>,
) {
    let peer = conn.peer;
    let activity = Arc::new(Activity::default());
    let requests = activity.clone();
    let websocket = ctx.routes.websocket();
    // Upgraded connections are spliced here, by the task that holds the connection's permit.
    let (splicer, mut upgraded) = Splicer::new();
    let mut tunnels = tokio::task::JoinSet::new();
    let service = hyper::service::service_fn(move |mut req: http::Request<_>| {
        if req.extensions().get::<hyper::upgrade::OnUpgrade>().is_some() {
            req.extensions_mut().insert(splicer.clone());
        }
        let in_flight = InFlight::start(&requests);
        let response = pipeline::handle(req.map(boxed), conn.clone(), ctx.clone());
        async move {
            let resp = response.await?;
            Ok::<_, std::convert::Infallible>(
                resp.map(|body| Guarded::new(body, None).in_flight(in_flight)),
            )
        }
    });
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
        .max_concurrent_streams(limits.max_streams)
        // Streams a client opens and resets before the gateway answers (the "rapid reset"
        // flood) and stream errors the gateway must reset are capped per connection.
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(1024))
        // PINGs find dead peers; they are not activity for the idle timeout.
        .keep_alive_interval(Some(limits.idle_timeout.min(Duration::from_secs(60)) / 2));
    if websocket {
        // WebSockets over HTTP/2 (RFC 8441), offered where a route forwards them.
        builder.http2().enable_connect_protocol();
    }
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut closing = false;
    // Idle: nothing in flight and no request started or ended for a whole idle_timeout;
    // checked on a tick so the request path itself never reads the clock.
    let period = limits.idle_timeout.min(Duration::from_secs(5)).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut seen = activity.snapshot().1;
    let mut quiet_since = tokio::time::Instant::now();
    let aged =
        sleep_until_some(limits.max_connection_age.map(|age| tokio::time::Instant::now() + age));
    tokio::pin!(aged);
    loop {
        let swapped = async {
            match &mut recheck {
                Some(r) => r.swapped.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = conn.as_mut() => break,
            Some(tunnel) = upgraded.recv() => {
                tunnels.spawn(tunnel.run(peer));
            }
            Some(_) = tunnels.join_next(), if !tunnels.is_empty() => {}
            _ = stop.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = &mut aged, if !closing => {
                tracing::debug!(%peer, "closing connection: max_connection_age reached");
                closing = true;
                conn.as_mut().graceful_shutdown();
                // HTTP/2 WebSocket streams would keep the connection open.
                tunnels.abort_all();
            }
            changed = swapped, if !closing => {
                if !changed {
                    recheck = None;
                } else if let Some(reason) = recheck.as_ref().and_then(Recheck::refused) {
                    tracing::info!(%peer, reason = %reason, code = reason.code(),
                        "closing connection: its client certificate is refused after the reload");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                    tunnels.abort_all();
                }
            }
            _ = tick.tick(), if !closing => {
                let (in_flight, events) = activity.snapshot();
                // A WebSocket on an HTTP/2 stream keeps the connection busy.
                if in_flight > 0 || events != seen || !tunnels.is_empty() {
                    seen = events;
                    quiet_since = tokio::time::Instant::now();
                } else if quiet_since.elapsed() >= limits.idle_timeout {
                    tracing::debug!(%peer, "closing idle connection");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
    // HTTP is over; upgraded connections keep the permit until they end (each has its own
    // idle timeout), and end at max_connection_age or with a client certificate a reload
    // refuses.
    while let Ok(tunnel) = upgraded.try_recv() {
        tunnels.spawn(tunnel.run(peer));
    }
    while !tunnels.is_empty() {
        let swapped = async {
            match &mut recheck {
                Some(r) => r.swapped.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tunnels.join_next() => {}
            () = &mut aged => {
                tracing::debug!(%peer, "closing upgraded connection: max_connection_age reached");
                tunnels.abort_all();
            }
            changed = swapped => {
                if !changed {
                    recheck = None;
                } else if let Some(reason) = recheck.as_ref().and_then(Recheck::refused) {
                    tracing::info!(%peer, reason = %reason, code = reason.code(),
                        "closing upgraded connection: its client certificate is refused after \
                         the reload");
                    tunnels.abort_all();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trusted-proxy networks match by prefix, IPv4-mapped peers included.
    #[test]
    fn ip_networks_match_by_prefix() {
        let net = IpNet { addr: "10.1.0.0".parse().unwrap(), prefix: 16 };
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        let any = IpNet { addr: "0.0.0.0".parse().unwrap(), prefix: 0 };
        assert!(any.contains("192.0.2.1".parse().unwrap()));
        let one = IpNet { addr: "::1".parse().unwrap(), prefix: 128 };
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
    }
}
