//! Request and handshake metrics, kept only when the admin listener is on.
//!
//! Each route's counters are looked up once, when a generation is built
//! ([`ListenerMetrics`]), so a request pays for one atomic increment, not for building and
//! hashing a label set. (A duration histogram is not kept yet: prometheus-client's takes a
//! lock per observation, which cost about 15% of keep-alive throughput on two cores; it needs
//! a lock-free histogram first.) Labels are bounded: listener and route names come from the
//! configuration, status classes and handshake outcomes from fixed lists; a client identity is
//! never a label.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::http::route::{Route, RouteTable};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: String,
    route: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    listener: String,
    outcome: &'static str,
}

/// The process's request and handshake metric families.
#[derive(Default)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    handshakes: Family<HandshakeLabels, Counter>,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "requests",
            "Requests by listener, route (host and path as configured; none when unrouted) and status class",
            self.requests.clone(),
        );
        registry.register(
            "handshakes",
            "TLS handshakes by listener and outcome (ok, a refusal reason code, tls_error, timeout)",
            self.handshakes.clone(),
        );
    }

    /// Counts one handshake's outcome.
    pub fn handshake(&self, listener: &str, outcome: &'static str) {
        let labels = HandshakeLabels { listener: listener.to_string(), outcome };
        self.handshakes.get_or_create(&labels).inc();
    }
}

/// One listener's per-route handles, resolved when its generation is built.
pub struct ListenerMetrics {
    routes: HashMap<usize, RouteMetrics>,
    unrouted: RouteMetrics,
}

struct RouteMetrics {
    /// 1xx..5xx.
    by_class: [Counter; 5],
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl RouteMetrics {
    fn new(m: &Metrics, listener: &str, route: &str) -> RouteMetrics {
        let counter = |class: &'static str| {
            let labels =
                RequestLabels { listener: listener.to_string(), route: route.to_string(), class };
            m.requests.get_or_create(&labels).clone()
        };
        RouteMetrics { by_class: CLASSES.map(counter) }
    }
}

impl ListenerMetrics {
    pub fn new(m: &Metrics, listener: &str, routes: &RouteTable) -> ListenerMetrics {
        let routes = routes
            .routes()
            .map(|r| (Arc::as_ptr(r) as usize, RouteMetrics::new(m, listener, &r.label())))
            .collect();
        ListenerMetrics { routes, unrouted: RouteMetrics::new(m, listener, "none") }
    }

    /// Counts one request by its route and status.
    pub fn request(&self, route: Option<&Arc<Route>>, status: u16) {
        let m = route
            .and_then(|r| self.routes.get(&(Arc::as_ptr(r) as usize)))
            .unwrap_or(&self.unrouted);
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        if let Some(counter) = m.by_class.get(class) {
            counter.inc();
        }
    }
}
