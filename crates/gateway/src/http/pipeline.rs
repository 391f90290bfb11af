//! The request path, one phase after another (see docs/pipeline.md):
//!
//! 1. strip inbound identity headers
//! 2. read Host and path (400 when missing or ambiguous)
//! 3. route (404)
//! 4. SNI/Host check (421)
//! 5. client-certificate requirement (496 none, 495 invalid)
//! 6. authorize (403)
//! 7. write identity headers and forwarding headers
//! 8. forward (502 unreachable, 504 too slow)
//! 9. access log
//!
//! Each phase returns `Result<_, Reject>`; the first refusal ends the request and
//! [`Reject::answer`] gives the status and body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::access_log::{self, Entry};
use crate::http::authz::Decision;
use crate::http::headers::ConnIdentity;
use crate::http::reject::Reject;
use crate::http::route::{Route, RouteTable, is_ambiguous};
use crate::http::upstream::Body;
use crate::tls::server::ClientCert;

/// What a finished handshake established, shared by every request on the connection.
#[derive(Debug)]
pub struct ConnState {
    pub peer: SocketAddr,
    /// The SNI the client sent, lowercase.
    pub sni: Option<String>,
    pub identity: ConnIdentity,
    /// `X-Forwarded-For` value for this peer, made once.
    pub peer_ip: HeaderValue,
}

/// What a listener's requests need.
pub struct ListenerCtx {
    pub name: String,
    pub routes: RouteTable,
    pub sni_host_check: bool,
    pub access_log: bool,
}

/// Handles one request; never fails (refusals become responses).
pub async fn handle(
    req: Request<Incoming>,
    conn: Arc<ConnState>,
    ctx: Arc<ListenerCtx>,
) -> Result<Response<Body>, Infallible> {
    // What the access log needs is taken before the request moves on, and only if it is on.
    let logged = ctx.access_log.then(|| (Instant::now(), req.method().clone(), req.uri().clone()));
    let mut route_used: Option<Arc<Route>> = None;
    let mut host = String::new();
    let response = match phases(req, &conn, &ctx, &mut route_used, &mut host).await {
        Ok(resp) => resp,
        Err(reject) => {
            let (status, body) = reject.body();
            let mut resp = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            resp
        }
    };
    if let Some((started, method, uri)) = logged {
        access_log::write(&Entry {
            listener: &ctx.name,
            peer: conn.peer,
            method: method.as_str(),
            host: &host,
            path: uri.path(),
            status: response.status().as_u16(),
            duration: started.elapsed(),
            route: route_used.as_deref(),
            conn: &conn,
        });
    }
    Ok(response)
}

async fn phases(
    mut req: Request<Incoming>,
    conn: &ConnState,
    ctx: &ListenerCtx,
    route_used: &mut Option<Arc<Route>>,
    host_out: &mut String,
) -> Result<Response<Body>, Reject> {
    // 1. Identity headers come from the gateway alone.
    ctx.routes.strip.strip(req.headers_mut());

    // 2. Host and path.
    let host = request_host(&req).ok_or(Reject::MissingHost)?;
    host_out.clone_from(&host);
    if is_ambiguous(req.uri().path()) {
        return Err(Reject::AmbiguousPath);
    }

    // 3. Route.
    let route = ctx.routes.find(&host, req.uri().path()).ok_or_else(|| Reject::NoRoute {
        host: host.clone(),
        path: req.uri().path().to_string(),
    })?;
    *route_used = Some(route.clone());

    // 4. The policy chosen by SNI must be the policy of the Host.
    if ctx.sni_host_check
        && let Some(sni) = &conn.sni
        && *sni != host
    {
        return Err(Reject::Misdirected { sni: sni.clone(), host });
    }

    // 5 + 6. Client certificate and authorization.
    if route.require_cert {
        let identity = match &conn.identity.client {
            ClientCert::Verified(id) => id,
            ClientCert::None => return Err(Reject::CertificateRequired),
            ClientCert::Failed { reason, .. } => {
                return Err(Reject::CertificateInvalid(reason.clone()));
            }
        };
        if let Some(acl) = &route.acl {
            match acl.allows(identity) {
                Decision::Allow => {}
                Decision::Deny => {
                    let who = match identity.spiffe_id() {
                        Some(spiffe) => format!("{} ({spiffe})", identity.subject),
                        None => identity.subject.clone(),
                    };
                    return Err(Reject::Forbidden { identity: who });
                }
            }
        }
    }

    // 7. Identity and forwarding headers.
    conn.identity.write(&route.headers, req.headers_mut());
    prepare_forwarding(&mut req, conn, &host);

    // 8. Forward.
    let (parts, body) = req.into_parts();
    let req = Request::from_parts(parts, body.boxed());
    let mut resp = route.upstream.send(req).await?;
    remove_hop_by_hop(resp.headers_mut());
    Ok(resp.map(BodyExt::boxed))
}

/// Host without port, lowercase: the Host header (HTTP/1.1) or the :authority (HTTP/2).
fn request_host(req: &Request<Incoming>) -> Option<String> {
    let raw = match req.headers().get(header::HOST) {
        Some(h) => h.to_str().ok()?,
        None => req.uri().authority()?.as_str(),
    };
    let host = if let Some(rest) = raw.strip_prefix('[') {
        rest.split(']').next()?
    } else {
        raw.rsplit_once(':')
            .map_or(raw, |(h, port)| if port.chars().all(|c| c.is_ascii_digit()) { h } else { raw })
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

fn prepare_forwarding(req: &mut Request<Incoming>, conn: &ConnState, host: &str) {
    // HTTP/2 requests carry the host in :authority; an HTTP/1.1 upstream needs a Host header.
    if !req.headers().contains_key(header::HOST)
        && let Some(authority) =
            req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(header::HOST, authority);
    }
    remove_hop_by_hop(req.headers_mut());
    let headers = req.headers_mut();
    headers.append(header::HeaderName::from_static("x-forwarded-for"), conn.peer_ip.clone());
    headers.insert(
        header::HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("https"),
    );
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert(header::HeaderName::from_static("x-forwarded-host"), v);
    }
}

/// Removes hop-by-hop headers (RFC 9110 section 7.6.1), including those `Connection` names.
fn remove_hop_by_hop(headers: &mut http::HeaderMap) {
    // Most messages carry none: one pass over the names, no lookups.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let listed: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .filter(|s| !s.is_empty())
        .collect();
    for name in listed {
        headers.remove(name.as_str());
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn is_hop_by_hop(name: &header::HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// A plain-text response for the gateway's own answers (used by the echo service too).
pub fn text(status: http::StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    resp
}
