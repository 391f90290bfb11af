//! The request path, one phase after another (see docs/pipeline.md):
//!
//! 1. hop-by-hop headers, and the names `Connection` lists (never Host)
//! 2. Host (400 when missing, duplicated or disagreeing with `:authority`)
//! 3. strip inbound identity and forwarding headers
//! 4. path readings and route (400 when a reading has no safe meaning or reaches another
//!    route; 404 when none)
//! 5. SNI/Host check (421)
//! 6. client-certificate requirement (496 none, 495 invalid)
//! 7. authorize (403)
//! 8. body bounds (413 by Content-Length; 413/408 while streaming)
//! 9. write identity headers and forwarding headers
//! 10. forward to the route's target (502 unreachable, 503 busy, 504 too slow)
//! 11. access log
//!
//! Each phase returns `Result<_, Reject>`; the first refusal ends the request and
//! [`Reject::answer`] gives the status and body. The phases take any body type, so each is
//! tested without sockets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;

use crate::access_log::{AccessLog, Entry};
use crate::http::authz::Decision;
use crate::http::body::Guarded;
use crate::http::headers::ConnIdentity;
use crate::http::reject::Reject;
use crate::http::route::{Route, RouteTable};
use crate::http::upstream::{Body, Target, boxed};
use crate::http::{forward, path};
use crate::tls::server::ClientCert;

/// What a finished handshake established, shared by every request on the connection.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The SNI the client sent, lowercase.
    pub sni: Option<String>,
    pub identity: ConnIdentity,
    /// `X-Forwarded-For` value for this peer, made once.
    pub peer_ip: HeaderValue,
    /// The peer is one of the listener's `trusted_proxies`: its forwarding headers are kept.
    pub trusted_proxy: bool,
}

/// What a listener's requests need.
pub struct ListenerCtx {
    pub name: String,
    pub routes: RouteTable,
    pub sni_host_check: bool,
    /// A request or response body that sends nothing for this long is ended (408 for a
    /// request).
    pub body_timeout: Duration,
    pub access_log: Option<AccessLog>,
}

/// What the phases learned about one request, for the access log (and later metrics).
#[derive(Default)]
pub struct RequestCtx {
    pub host: Option<String>,
    pub route: Option<Arc<Route>>,
    /// [`Reject::code`] of the refusal, if the gateway answered itself.
    pub reject: Option<&'static str>,
}

/// Handles one request; never fails (refusals become responses). Any body fits once boxed
/// ([`boxed`]): `Incoming` from a connection, `Full` in tests.
pub async fn handle(
    req: Request<Body>,
    conn: Arc<ConnInfo>,
    ctx: Arc<ListenerCtx>,
) -> Result<Response<Body>, Infallible> {
    // What the access log needs is taken before the request moves on, and only if it is on.
    let logged =
        ctx.access_log.is_some().then(|| (Instant::now(), req.method().clone(), req.uri().clone()));
    let mut rc = RequestCtx::default();
    let response = match phases(req, &conn, &ctx, &mut rc).await {
        Ok(resp) => resp,
        Err(reject) => {
            rc.reject = Some(reject.code());
            let (status, body) = reject.body();
            let mut resp = text(status, body);
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            resp
        }
    };
    if let (Some(log), Some((started, method, uri))) = (&ctx.access_log, logged) {
        log.write(&Entry {
            listener: &ctx.name,
            method: method.as_str(),
            path: uri.path(),
            status: response.status().as_u16(),
            duration: started.elapsed(),
            request: &rc,
            conn: &conn,
        });
    }
    Ok(response)
}

async fn phases(
    mut req: Request<Body>,
    conn: &ConnInfo,
    ctx: &ListenerCtx,
    rc: &mut RequestCtx,
) -> Result<Response<Body>, Reject> {
    // 1. Hop-by-hop, before the gateway writes anything.
    forward::remove_hop_by_hop(req.headers_mut(), true);

    // 2. Host.
    let host = forward::request_host(req.headers(), req.uri(), req.version())?;
    rc.host = Some(host.clone());

    // 3. Identity and forwarding headers come from the gateway alone (a trusted proxy's
    //    forwarding chain is kept).
    let trusted_chain = conn.trusted_proxy.then(|| {
        let take = |name: &str, h: &http::HeaderMap| h.get_all(name).iter().cloned().collect();
        let xff: Vec<HeaderValue> = take("x-forwarded-for", req.headers());
        let forwarded: Vec<HeaderValue> = take("forwarded", req.headers());
        (xff, forwarded)
    });
    ctx.routes.strip.strip(req.headers_mut());

    // 4. Every reading of the path must reach the same route.
    let readings = path::readings(req.uri().path()).map_err(Reject::BadPath)?;
    let route = ctx
        .routes
        .route(&host, &readings)
        .map_err(|d| Reject::PathRoutesElsewhere { reading: d.reading })?
        .ok_or(Reject::NoRoute)?
        .clone();
    rc.route = Some(route.clone());

    // 5. The policy chosen by SNI must be the policy of the Host. A client without SNI (an
    //    IP-address URL) is not checked: trust is per listener, so there is nothing to borrow.
    if ctx.sni_host_check
        && let Some(sni) = &conn.sni
        && *sni != host
    {
        return Err(Reject::Misdirected { sni: sni.clone(), host });
    }

    // 6 + 7. Client certificate and authorization.
    if route.require_cert {
        let identity = match &conn.identity.client {
            ClientCert::Verified { identity, .. } => identity,
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

    // 8. Body bounds: a declared length over the limit is refused before forwarding; a
    //    streamed body is bounded by inactivity and by the limit as it passes.
    if let Some(limit) = route.max_body_bytes
        && let Some(length) = content_length(req.headers())
        && length > limit
    {
        return Err(Reject::BodyTooLarge { limit });
    }

    // 9. Identity and forwarding headers.
    conn.identity.write(&route.headers, req.headers_mut());
    let (trusted_xff, trusted_forwarded) = trusted_chain.unzip();
    let (parts, body) = req.into_parts();
    let mut parts = parts;
    forward::write_forwarding(&mut parts.headers, &parts.uri, &conn.peer_ip, &host, trusted_xff);
    for v in trusted_forwarded.into_iter().flatten() {
        parts.headers.append(header::FORWARDED, v);
    }
    let body = if body.is_end_stream() {
        body
    } else {
        boxed(
            Guarded::new(body, None)
                .stall_after(ctx.body_timeout)
                .limit(route.max_body_bytes)
                .strip_trailers(ctx.routes.strip.clone()),
        )
    };
    let req = Request::from_parts(parts, body);

    // 10. Forward.
    match &route.target {
        Target::Http(upstream) => {
            let resp = upstream.send(req).await?;
            let (mut parts, body) = resp.into_parts();
            forward::remove_hop_by_hop(&mut parts.headers, false);
            Ok(Response::from_parts(parts, boxed(body.stall_after(ctx.body_timeout))))
        }
        Target::Echo => crate::echo::answer(req).await,
    }
}

/// The declared `Content-Length`, when there is exactly one valid value.
fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// A plain-text response for the gateway's own answers (used by the echo service too).
pub fn text(status: http::StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    resp
}
