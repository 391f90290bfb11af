//! Request, handshake, traffic and upstream metrics, kept only when the admin listener is on
//! (upstream errors are counted always: they are rare and cost nothing on success).
//!
//! Every handle a request or handshake touches is looked up once, when a generation is built
//! ([`ListenerMetrics`]), so a request pays for a few relaxed atomic additions, never for
//! building or hashing a label set or taking a lock. That is also why request durations go to
//! [`LatencyHistogram`], not to prometheus-client's histogram, which takes a lock per
//! observation (about 15% of keep-alive throughput on two cores when measured).
//!
//! Labels are bounded: listener, route and upstream names come from the configuration, status
//! classes, handshake outcomes and error kinds from fixed lists; a client identity is never a
//! label.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::http::route::{Route, RouteTable};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: String,
    route: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    listener: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    listener: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    upstream: String,
    kind: UpstreamErrorKind,
}

/// Why a request to an upstream got no response (the `kind` label).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // the label values, as Prometheus users write them
pub enum UpstreamErrorKind {
    /// The TCP connection could not be made (refused, unreachable).
    connect,
    /// No connection or no response within the configured timeout.
    timeout,
    /// The TLS handshake with the upstream failed (its certificate, or ours, was refused).
    tls,
    /// The upstream closed or reset the connection before its response was complete.
    reset,
    /// The upstream was at its `max_connections`.
    busy,
}

/// The handshake outcomes counted, the `X-Client-Verify` reason codes where the TLS alert tells
/// them apart; anything else is counted as `invalid`.
const OUTCOMES: [&str; 19] = [
    "ok",
    "no_certificate",
    "expired",
    "not_yet_valid",
    "unknown_issuer",
    "wrong_purpose",
    "revoked",
    "bad_signature",
    "unknown_revocation_status",
    "crl_expired",
    "invalid",
    "tls_error",
    "timeout",
    "passthrough",
    "no_sni_refused",
    "source_refused",
    "not_tls",
    "client_hello_too_large",
    "proxy_protocol_invalid",
];

/// Where `invalid` is in [`OUTCOMES`].
const INVALID: usize = 10;

/// The process's metric families.
#[derive(Default)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, LatencyHistogram>,
    handshakes: Family<HandshakeLabels, Counter>,
    received: Family<ListenerLabel, Counter>,
    sent: Family<ListenerLabel, Counter>,
    stripped: Family<ListenerLabel, Counter>,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "requests",
            "Requests by listener, route (its name, or host and path as configured; none when \
             unrouted) and status class",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time from a request's arrival to its response headers (the gateway's answer or the \
             upstream's), by listener and route",
            Unit::Seconds,
            self.durations.clone(),
        );
        registry.register(
            "handshakes",
            "TLS handshakes by listener and outcome (ok, a refusal reason code, tls_error, timeout)",
            self.handshakes.clone(),
        );
        registry.register_with_unit(
            "received",
            "Bytes received from clients (TLS records included), by listener",
            Unit::Bytes,
            self.received.clone(),
        );
        registry.register_with_unit(
            "sent",
            "Bytes sent to clients (TLS records included), by listener",
            Unit::Bytes,
            self.sent.clone(),
        );
        registry.register(
            "identity_headers_stripped",
            "Requests that arrived with identity headers of their own, which were removed, by \
             listener",
            self.stripped.clone(),
        );
        registry.register(
            "upstream_errors",
            "Requests an upstream did not answer, by upstream and kind (connect, timeout, tls, \
             reset, busy)",
            upstream_errors().clone(),
        );
    }
}

/// Counted for the life of the process, whichever generation's upstream failed.
fn upstream_errors() -> &'static Family<UpstreamErrorLabels, Counter> {
    static ERRORS: OnceLock<Family<UpstreamErrorLabels, Counter>> = OnceLock::new();
    ERRORS.get_or_init(Family::default)
}

/// Counts one request that `upstream` did not answer.
pub fn upstream_error(upstream: &str, kind: UpstreamErrorKind) {
    let labels = UpstreamErrorLabels { upstream: upstream.to_string(), kind };
    upstream_errors().get_or_create(&labels).inc();
}

/// One listener's handles, resolved when its generation is built.
pub struct ListenerMetrics {
    routes: HashMap<usize, RouteMetrics, std::hash::BuildHasherDefault<AddressHasher>>,
    unrouted: RouteMetrics,
    handshakes: [Counter; OUTCOMES.len()],
    traffic: Arc<Traffic>,
    stripped: Counter,
}

/// Hashes a route's address: already unique, so a multiply spreads it (SipHash, the
/// default, costs more than the rest of the per-request bookkeeping).
#[derive(Default)]
struct AddressHasher(u64);

impl std::hash::Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

struct RouteMetrics {
    /// 1xx..5xx.
    by_class: [Counter; 5],
    duration: LatencyHistogram,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl RouteMetrics {
    fn new(m: &Metrics, listener: &str, route: &str) -> RouteMetrics {
        let counter = |class: &'static str| {
            let labels =
                RequestLabels { listener: listener.to_string(), route: route.to_string(), class };
            m.requests.get_or_create(&labels).clone()
        };
        let labels = RouteLabels { listener: listener.to_string(), route: route.to_string() };
        RouteMetrics {
            by_class: CLASSES.map(counter),
            duration: m.durations.get_or_create(&labels).clone(),
        }
    }
}

impl ListenerMetrics {
    pub fn new(m: &Metrics, listener: &str, routes: &RouteTable) -> ListenerMetrics {
        let routes = routes
            .routes()
            .map(|r| (Arc::as_ptr(r) as usize, RouteMetrics::new(m, listener, &r.label())))
            .collect();
        let label = ListenerLabel { listener: listener.to_string() };
        let handshake = |outcome: &'static str| {
            let labels = HandshakeLabels { listener: listener.to_string(), outcome };
            m.handshakes.get_or_create(&labels).clone()
        };
        ListenerMetrics {
            routes,
            unrouted: RouteMetrics::new(m, listener, "none"),
            handshakes: OUTCOMES.map(handshake),
            traffic: Arc::new(Traffic {
                received: m.received.get_or_create(&label).clone(),
                sent: m.sent.get_or_create(&label).clone(),
            }),
            stripped: m.stripped.get_or_create(&label).clone(),
        }
    }

    /// Counts one request by its route and status, and the time to its response headers.
    pub fn request(&self, route: Option<&Arc<Route>>, status: u16, took: Duration) {
        let m = route
            .and_then(|r| self.routes.get(&(Arc::as_ptr(r) as usize)))
            .unwrap_or(&self.unrouted);
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        if let Some(counter) = m.by_class.get(class) {
            counter.inc();
        }
        m.duration.observe(took);
    }

    /// Counts one handshake's outcome (one of [`OUTCOMES`]; anything else as `invalid`).
    pub fn handshake(&self, outcome: &str) {
        let i = OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(INVALID);
        if let Some(counter) = self.handshakes.get(i) {
            counter.inc();
        }
    }

    /// Counts a request whose own identity headers were removed.
    pub fn stripped(&self) {
        self.stripped.inc();
    }

    /// The byte counters a connection of this listener adds to.
    pub fn traffic(&self) -> Arc<Traffic> {
        self.traffic.clone()
    }
}

/// Upper bounds of the duration buckets, in microseconds (1 ms to 10 s, as Prometheus's
/// defaults but starting lower: a gateway's own answers take well under a millisecond).
const BOUNDS_US: [u64; 13] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 10_000_000,
];

/// A histogram of durations with fixed buckets, observed with two relaxed atomic additions and
/// no lock. A scrape may see a bucket count and the sum from slightly different moments, which
/// Prometheus tolerates (its own client libraries do the same).
#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram(Arc<HistogramCells>);

#[derive(Debug, Default)]
struct HistogramCells {
    /// Per bucket (not cumulative); the last is +Inf.
    counts: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_US.iter().position(|b| us <= *b).unwrap_or(BOUNDS_US.len());
        if let Some(count) = self.0.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.0.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // The encoder adds the buckets up itself.
        let mut count = 0;
        let buckets: Vec<(f64, u64)> = self
            .0
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let n = c.load(Ordering::Relaxed);
                count += n;
                let bound = BOUNDS_US.get(i).map_or(f64::INFINITY, |us| *us as f64 / 1e6);
                (bound, n)
            })
            .collect();
        let sum = self.0.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// One listener's byte counters.
pub struct Traffic {
    received: Counter,
    sent: Counter,
}

/// A client connection that counts the bytes it carries (when metrics are on). Counts build
/// up in the connection and go to the listener's shared counters every [`FLUSH_BYTES`] and
/// when it closes: a shared counter updated on every read and write by both cores costs more
/// in cache-line traffic than the count is worth.
pub struct MeteredTcp {
    tcp: TcpStream,
    traffic: Option<Arc<Traffic>>,
    received: u64,
    sent: u64,
}

/// How many bytes a connection counts before adding them to the shared counters.
const FLUSH_BYTES: u64 = 256 * 1024;

impl Drop for MeteredTcp {
    fn drop(&mut self) {
        if let Some(t) = &self.traffic {
            t.received.inc_by(self.received);
            t.sent.inc_by(self.sent);
        }
    }
}

impl MeteredTcp {
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.tcp.local_addr()
    }

    pub fn new(tcp: TcpStream, traffic: Option<Arc<Traffic>>) -> MeteredTcp {
        MeteredTcp { tcp, traffic, received: 0, sent: 0 }
    }
}

impl AsyncRead for MeteredTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(t)) = (&polled, &this.traffic) {
            this.received += (buf.filled().len() - before) as u64;
            if this.received >= FLUSH_BYTES {
                t.received.inc_by(std::mem::take(&mut this.received));
            }
        }
        polled
    }
}

impl AsyncWrite for MeteredTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.tcp).poll_write(cx, buf);
        this.count_sent(&polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.count_sent(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

impl MeteredTcp {
    fn count_sent(&mut self, polled: &Poll<std::io::Result<usize>>) {
        if let (Poll::Ready(Ok(n)), Some(t)) = (polled, &self.traffic) {
            self.sent += *n as u64;
            if self.sent >= FLUSH_BYTES {
                t.sent.inc_by(std::mem::take(&mut self.sent));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations land in the first bucket whose bound they do not exceed; the text shows
    /// cumulative buckets, the count and the sum in seconds.
    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(400));
        h.observe(Duration::from_micros(1_000));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let mut registry = Registry::default();
        registry.register("d", "test", h);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("d_bucket{le=\"0.0005\"} 1\n"), "{text}");
        assert!(text.contains("d_bucket{le=\"0.001\"} 2\n"), "{text}");
        assert!(text.contains("d_bucket{le=\"0.025\"} 2\n"), "{text}");
        assert!(text.contains("d_bucket{le=\"0.05\"} 3\n"), "{text}");
        assert!(text.contains("d_bucket{le=\"10.0\"} 3\n"), "{text}");
        assert!(text.contains("d_bucket{le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("d_count 4\n"), "{text}");
        assert!(text.contains("d_sum 60.0314\n"), "{text}");
    }

    /// A handshake outcome outside the list is counted as `invalid`, never dropped.
    #[test]
    fn unknown_handshake_outcomes_count_as_invalid() {
        let m = Metrics::default();
        let table = RouteTable::new(vec![], Arc::new(crate::http::headers::StripSet::new(vec![])));
        let lm = ListenerMetrics::new(&m, "main", &table);
        lm.handshake("something_new");
        lm.handshake("revoked");
        assert_eq!(OUTCOMES[INVALID], "invalid");
        assert_eq!(lm.handshakes[INVALID].get(), 1);
        assert_eq!(lm.handshakes[6].get(), 1);
    }
}
