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
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::upgrade::OnUpgrade;

use crate::access_log::{AccessLog, Entry};
use crate::http::authz::Decision;
use crate::http::body::Guarded;
use crate::http::error_page::{self, ErrorPages};
use crate::http::headers::ConnIdentity;
use crate::http::reject::Reject;
use crate::http::route::{Route, RouteTable};
use crate::http::upstream::{Body, Target, Upstream, boxed};
use crate::http::{forward, path, upgrade};
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
    /// The client-certificate policy the SNI chose (`None`: the listener's own).
    pub policy: Option<usize>,
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
    /// Per-route request metrics (only with the admin listener on).
    pub metrics: Option<crate::metrics::ListenerMetrics>,
    /// The listener's custom answers for refusals (routes may have their own).
    pub error_pages: Option<Arc<ErrorPages>>,
    /// Whether the listener or any of its routes has error pages: only then is `Accept` read.
    pub any_error_pages: bool,
    /// Server names with client-certificate policies of their own (`None`: there are none):
    /// a request whose Host has another policy than its connection gets 421.
    pub sni_policies: Option<Arc<crate::tls::server::SniPolicies>>,
    /// The server names this listener relays undecrypted: their Host gets 421 here.
    pub passthrough: Arc<crate::tls::passthrough::SniTable>,
}

/// What the phases learned about one request, for the access log (and later metrics).
#[derive(Default)]
pub struct RequestCtx {
    pub host: Option<String>,
    pub route: Option<Arc<Route>>,
    /// [`Reject::code`] of the refusal, if the gateway answered itself.
    pub reject: Option<&'static str>,
    /// The request came with identity headers of its own (removed in phase 3).
    pub stripped_identity: bool,
    /// The access token that passed the route's check (phase 7b).
    pub token: Option<Arc<crate::oauth::check::Passed>>,
}

/// Handles one request; never fails (refusals become responses). Any body fits once boxed
/// ([`boxed`]): `Incoming` from a connection, `Full` in tests.
pub async fn handle(
    req: Request<Body>,
    conn: Arc<ConnInfo>,
    ctx: Arc<ListenerCtx>,
) -> Result<Response<Body>, Infallible> {
    // What the access log and metrics need is taken before the request moves on, and only if
    // they are on.
    let started = (ctx.access_log.is_some() || ctx.metrics.is_some()).then(Instant::now);
    let logged = ctx.access_log.is_some().then(|| (req.method().clone(), req.uri().clone()));
    let wanted = ctx.any_error_pages.then(|| error_page::wanted(req.headers()));
    // hyper marks requests that ask for an upgrade (or CONNECT): a refusal closes their
    // connection, so nothing the client sends expecting a tunnel is read as a request.
    let upgrade_asked = req.extensions().get::<OnUpgrade>().is_some();
    let head = req.method() == http::Method::HEAD;
    let mut rc = RequestCtx::default();
    // The body stays here until phase 9 takes it: a request refused before that has whatever
    // it is still sending read and dropped first (bounded), because ending a request with its
    // body unread resets an HTTP/2 stream, and the client would lose the refusal.
    let (parts, body) = req.into_parts();
    let mut body = Some(body);
    let req = Request::from_parts(parts, unread());
    let mut response = match phases(req, &mut body, upgrade_asked, &conn, &ctx, &mut rc).await {
        Ok(resp) => resp,
        Err(reject) => {
            if let Some(body) = body {
                drain_refused(body).await;
            }
            rc.reject = Some(reject.code());
            let mut resp = refusal(&reject, wanted, rc.route.as_deref(), &ctx);
            if upgrade_asked {
                upgrade::close_after(resp.headers_mut());
            }
            resp
        }
    };
    if head {
        response = without_body(response);
    }
    let took = started.map(|at| at.elapsed()).unwrap_or_default();
    if let Some(metrics) = &ctx.metrics {
        metrics.request(rc.route.as_ref(), response.status().as_u16(), took);
        if rc.stripped_identity {
            metrics.stripped();
        }
    }
    if let (Some(log), Some((method, uri))) = (&ctx.access_log, logged) {
        log.write(&Entry {
            listener: &ctx.name,
            method: method.as_str(),
            path: uri.path(),
            status: response.status().as_u16(),
            duration: took,
            request: &rc,
            conn: &conn,
        });
    }
    Ok(response)
}

/// A HEAD answer: the headers of the GET answer, no body (RFC 9110 section 9.3.2). hyper
/// drops the body itself on HTTP/1.1 but sends it on HTTP/2, where clients reset the stream
/// (DATA on a HEAD stream is a protocol error), so the gateway drops it for both. The
/// Content-Length of a body it drops stays; an upstream's HEAD answer (already empty) keeps
/// its own headers.
fn without_body(response: Response<Body>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    if !parts.headers.contains_key(header::CONTENT_LENGTH)
        && let Some(len) = body.size_hint().exact().filter(|&len| len > 0)
    {
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    Response::from_parts(parts, boxed(http_body_util::Empty::<Bytes>::new()))
}

/// The gateway's own answer to `reject`: the route's or the listener's error page if one
/// applies, else the status with the reason as text.
fn refusal(
    reject: &Reject,
    wanted: Option<error_page::Wanted>,
    route: Option<&Route>,
    ctx: &ListenerCtx,
) -> Response<Body> {
    let plain = HeaderValue::from_static("text/plain; charset=utf-8");
    let custom = wanted.and_then(|wanted| {
        [route.and_then(|r| r.error_pages.as_deref()), ctx.error_pages.as_deref()]
            .into_iter()
            .flatten()
            .find_map(|pages| pages.answer(reject, wanted))
    });
    let challenge = reject.challenge().and_then(|c| HeaderValue::from_str(&c).ok());
    let Some(answer) = custom else {
        let (status, body) = reject.body();
        let mut resp = text(status, body);
        resp.headers_mut().insert(header::CONTENT_TYPE, plain);
        if let Some(challenge) = challenge {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        }
        return resp;
    };
    let mut resp = text(answer.status, answer.body);
    resp.headers_mut().insert(header::CONTENT_TYPE, answer.content_type.unwrap_or(plain));
    if answer.varies {
        resp.headers_mut().insert(header::VARY, HeaderValue::from_static("accept"));
    }
    if let Some(challenge) = challenge {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    }
    resp
}

/// The placeholder body of a request whose body is still held by [`handle`].
fn unread() -> Body {
    boxed(http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}))
}

async fn phases(
    mut req: Request<Body>,
    body_slot: &mut Option<Body>,
    upgrade_asked: bool,
    conn: &ConnInfo,
    ctx: &ListenerCtx,
    rc: &mut RequestCtx,
) -> Result<Response<Body>, Reject> {
    // 0. An upgrade request (hyper marks them; ordinary requests skip this) is read before
    //    its hop-by-hop headers go. Whether it is forwarded as one is the route's decision.
    let asked = if upgrade_asked { upgrade::asked(&req)? } else { None };

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
    rc.stripped_identity = ctx.routes.strip.strip(req.headers_mut());

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
    //    A host whose client-certificate policy is not the one the connection was made with
    //    is never served on it, whatever the SNI check says.
    if let Some(policies) = &ctx.sni_policies
        && policies.index(Some(&host)) != conn.policy
    {
        let sni = conn.sni.clone().unwrap_or_else(|| "no server name".into());
        return Err(Reject::Misdirected { sni, host });
    }
    //    A host this listener passes through undecrypted is never served by the terminated
    //    side, whatever the SNI check says.
    if ctx.passthrough.relays() && ctx.passthrough.passes_through(&host) {
        let sni = conn.sni.clone().unwrap_or_else(|| "no server name".into());
        return Err(Reject::Misdirected { sni, host });
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

    // 7b. Access token (RFC 6750, RFC 8705): verified, resolved if opaque, bound to this
    //     connection's certificate, with the route's scopes.
    let token = match &route.token {
        Some(check) => {
            let presented = crate::oauth::presented_x5t(&conn.identity.client);
            let passed = check.check(req.headers(), req.uri().query(), presented).await?;
            rc.token = ctx.access_log.is_some().then(|| passed.clone());
            Some(passed)
        }
        None => None,
    };

    // 8. Body bounds: a declared length over the limit is refused before forwarding; a
    //    streamed body is bounded by inactivity and by the limit as it passes.
    if let Some(limit) = route.max_body_bytes
        && let Some(length) = content_length(req.headers())
        && length > limit
    {
        // `handle` reads what the client is already sending before answering.
        return Err(Reject::BodyTooLarge { limit });
    }

    // An upgrade goes upstream only where the route allows its protocol; elsewhere the
    // request is an ordinary one (its Upgrade is gone) and the upstream answers it.
    let upgrading = match (&asked, &route.upgrades, &route.target) {
        (Some(asked), Some(upgrades), Target::Http(_))
            if upgrades.allows(
                asked,
                &req,
                body_slot.as_ref().is_none_or(|b| b.is_end_stream()),
            ) =>
        {
            Some((asked, upgrades))
        }
        // An HTTP/2 WebSocket has no plain reading to fall back on.
        (Some(asked), ..) if asked.h2 => return Err(Reject::Connect { websocket: true }),
        _ => None,
    };

    // 9. Identity, token and forwarding headers.
    conn.identity.write(&route.headers, req.headers_mut());
    if let Some(passed) = &token {
        passed.write(req.headers_mut());
    }
    let (trusted_xff, trusted_forwarded) = trusted_chain.unzip();
    let (parts, _) = req.into_parts();
    let body = body_slot.take().unwrap_or_else(unread);
    let mut parts = parts;
    forward::write_forwarding(&mut parts.headers, &parts.uri, &conn.peer_ip, &host, trusted_xff);
    for v in trusted_forwarded.into_iter().flatten() {
        parts.headers.append(header::FORWARDED, v);
    }
    if let (Some((asked, upgrades)), Target::Http(upstream)) = (upgrading, &route.target) {
        let key = upgrade::write_request(asked, &mut parts);
        let req = Request::from_parts(parts, body);
        return forward_upgrade(req, asked, key, upgrades, upstream).await;
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
    let mut resp = match &route.target {
        Target::Http(upstream) => {
            let resp = upstream.send(req).await?;
            let (mut parts, body) = resp.into_parts();
            if parts.status == StatusCode::SWITCHING_PROTOCOLS {
                tracing::warn!(upstream = %upstream.name, "upstream answered 101 to a request \
                    that did not ask for an upgrade");
                return Err(Reject::UpstreamBadSwitch { upstream: upstream.name.clone() });
            }
            forward::remove_hop_by_hop(&mut parts.headers, false);
            Response::from_parts(parts, boxed(body.stall_after(ctx.body_timeout)))
        }
        Target::Echo => crate::echo::answer(req).await?,
        Target::Token(service) => {
            crate::oauth::service::answer(req, conn, service, ctx.body_timeout).await?
        }
        Target::Ca(service) => crate::ca::answer(req, conn, service, ctx.body_timeout).await?,
    };
    if asked.is_some() {
        // The client asked for a switch it does not get: after this answer its connection
        // ends, so nothing it sends expecting a tunnel is read as HTTP.
        upgrade::close_after(resp.headers_mut());
    }
    Ok(resp)
}

/// Forwards an allowed upgrade request. On the upstream's `101` for the protocol asked for, the
/// client gets a `101` and the two connections are handed to the connection's task to splice;
/// any other answer is relayed and the client's connection closed after it.
async fn forward_upgrade(
    mut req: Request<Body>,
    asked: &upgrade::Asked,
    key: Option<String>,
    upgrades: &upgrade::Upgrades,
    upstream: &Upstream,
) -> Result<Response<Body>, Reject> {
    let client = req.extensions_mut().remove::<OnUpgrade>();
    let splicer = req.extensions_mut().remove::<upgrade::Splicer>();
    let mut resp = upstream.send(req).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = resp.into_parts();
        forward::remove_hop_by_hop(&mut parts.headers, false);
        upgrade::close_after(&mut parts.headers);
        return Ok(Response::from_parts(parts, boxed(body)));
    }
    let bad_switch = || Reject::UpstreamBadSwitch { upstream: upstream.name.clone() };
    let accepted =
        key.is_none_or(|key| upgrade::accepts(&key, resp.headers().get("sec-websocket-accept")));
    if !upgrade::check_switch(asked, resp.headers()) || !accepted {
        tracing::warn!(upstream = %upstream.name, "upstream switched to another protocol than \
            the one asked for");
        return Err(bad_switch());
    }
    let upstream_up = resp.extensions_mut().remove::<OnUpgrade>();
    let (Some(client), Some(upstream_up), Some(splicer)) = (client, upstream_up, splicer) else {
        tracing::warn!(upstream = %upstream.name, "upgrade cannot be completed on this connection");
        return Err(bad_switch());
    };
    let (mut parts, hold) = resp.into_parts();
    forward::remove_hop_by_hop(&mut parts.headers, false);
    upgrade::write_response(asked, &mut parts);
    let tunnel = upgrade::Tunnel::new(client, upstream_up, hold, upgrades, asked, &upstream.name);
    if !splicer.hand_over(tunnel) {
        return Err(bad_switch());
    }
    let empty = http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}).boxed();
    Ok(Response::from_parts(parts, empty))
}

/// How much of a refused request body is read and discarded, and for how long, before the
/// refusal is sent (nginx's lingering close does the same).
const REFUSED_BODY_DRAIN_BYTES: usize = 256 * 1024;
const REFUSED_BODY_DRAIN: Duration = Duration::from_secs(1);

/// Reads (and discards) what the client is already sending of a refused body, briefly and
/// boundedly, so that ending the request after the refusal does not turn into a reset that
/// destroys the answer (HTTP/2 clients drop it).
pub(crate) async fn drain_refused(mut body: Body) {
    let drain = async {
        let mut read = 0usize;
        while read < REFUSED_BODY_DRAIN_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
                Some(Err(_)) | None => break,
            }
        }
    };
    let _ = tokio::time::timeout(REFUSED_BODY_DRAIN, drain).await;
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

#[cfg(test)]
mod tests {
    //! The phases driven in-process (no sockets): requests go to the built-in echo target,
    //! whose answer shows exactly what an upstream would have received.

    use super::*;
    use crate::http::headers::{HeaderFormat, StripSet};
    use crate::http::route::PathMatching;
    use certgate_pki::identity::PeerIdentity;
    use certgate_pki::testkit::TestPki;
    use http::Version;

    fn route(path: &str, require_cert: bool) -> Route {
        Route {
            name: None,
            host: None,
            path: path.into(),
            matching: PathMatching::default(),
            target: Target::Echo,
            require_cert,
            acl: None,
            headers: Arc::new(HeaderFormat::Nginx(Box::default())),
            max_body_bytes: None,
            upgrades: None,
            error_pages: None,
            token: None,
        }
    }

    fn listener(routes: Vec<Route>) -> Arc<ListenerCtx> {
        let routes = routes.into_iter().map(Arc::new).collect();
        Arc::new(ListenerCtx {
            name: "test".into(),
            routes: RouteTable::new(routes, Arc::new(StripSet::new(vec![]))),
            sni_host_check: true,
            body_timeout: Duration::from_secs(60),
            access_log: None,
            metrics: None,
            error_pages: None,
            any_error_pages: false,
            passthrough: Arc::default(),
            sni_policies: None,
        })
    }

    /// `/admin` needs a certificate, `/` does not.
    fn admin_and_open() -> Arc<ListenerCtx> {
        listener(vec![route("/admin", true), route("/", false)])
    }

    fn anonymous() -> Arc<ConnInfo> {
        conn(ClientCert::None, false)
    }

    fn joe() -> Arc<ConnInfo> {
        let pki = TestPki::new();
        let leaf = pki.client("joe", &["spiffe://example.test/joe"]);
        let identity = Arc::new(PeerIdentity::from_der(&leaf.der).unwrap());
        let intermediates = leaf.chain_der()[1..].to_vec();
        conn(ClientCert::Verified { identity, intermediates }, false)
    }

    fn conn(client: ClientCert, trusted_proxy: bool) -> Arc<ConnInfo> {
        Arc::new(ConnInfo {
            peer: "192.0.2.7:5555".parse().unwrap(),
            sni: Some("localhost".into()),
            identity: ConnIdentity::new(client, false),
            peer_ip: HeaderValue::from_static("192.0.2.7"),
            trusted_proxy,
            policy: None,
        })
    }

    fn get(target: &str, version: Version) -> http::request::Builder {
        let builder = Request::get(target).version(version);
        if version == Version::HTTP_2 || target.starts_with("https://") {
            builder
        } else {
            builder.header("host", "localhost")
        }
    }

    /// Sends a request and returns the status and the echoed request (JSON), or the body text.
    async fn send(
        ctx: &Arc<ListenerCtx>,
        conn: &Arc<ConnInfo>,
        req: Request<Body>,
    ) -> (StatusCode, serde_json::Value) {
        let resp = handle(req, conn.clone(), ctx.clone()).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    }

    fn empty() -> Body {
        boxed(http_body_util::Empty::<Bytes>::new())
    }

    /// HEAD gets the headers of the GET answer, Content-Length included, and no body: the
    /// echo's answer and a refusal alike.
    #[tokio::test]
    async fn head_answers_keep_their_headers_and_drop_the_body() {
        let ctx = admin_and_open();
        for (path, status) in [("/x", 200), ("/admin", 496)] {
            let req = Request::head(path).header("host", "localhost").body(empty()).unwrap();
            let resp = handle(req, anonymous(), ctx.clone()).await.unwrap();
            assert_eq!(resp.status().as_u16(), status, "{path}");
            let length = resp.headers().get(header::CONTENT_LENGTH).cloned();
            let length: usize = length.unwrap().to_str().unwrap().parse().unwrap();
            assert!(length > 0, "{path}");
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            assert!(bytes.is_empty(), "{path}: {bytes:?}");
        }
    }

    /// Every way of writing `/admin` that an upstream would read as `/admin` gets `/admin`'s
    /// policy or a 400, over HTTP/1.1 (origin and absolute form) and HTTP/2.
    #[tokio::test]
    async fn admin_cannot_be_reached_through_the_open_route() {
        let ctx = admin_and_open();
        for path in [
            "/%61dmin",
            "/%61%64%6d%69%6e/users",
            "/admin;x=1",
            "/admin;jsessionid=abc/users",
            "/x/..;/admin",
            "/public/../admin",
            "/public/%2e%2e/admin",
            "//admin",
            "/./admin",
            "/admin%2fusers",
            "/%2e%2e/admin",
            "/%252e%252e/admin",
            "/admin%00",
            "/a%3Bb/../admin",
            "/admin\\users",
        ] {
            for (version, target) in [
                (Version::HTTP_11, path.to_string()),
                (Version::HTTP_11, format!("https://localhost{path}")),
                (Version::HTTP_2, format!("https://localhost{path}")),
            ] {
                let Ok(req) = get(&target, version).body(empty()) else {
                    continue; // not even a valid request target
                };
                let (status, body) = send(&ctx, &anonymous(), req).await;
                assert!(
                    status == StatusCode::BAD_REQUEST || status.as_u16() == 496,
                    "{version:?} {target}: {status} {body}"
                );
            }
        }
        // The open route still serves, and a plain /admin still asks for a certificate.
        let (status, _) =
            send(&ctx, &anonymous(), get("/public/x", Version::HTTP_11).body(empty()).unwrap())
                .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = send(
            &ctx,
            &anonymous(),
            get("/admin", Version::HTTP_2).uri("https://localhost/admin").body(empty()).unwrap(),
        )
        .await;
        assert_eq!(status.as_u16(), 496);
    }

    /// A path is forwarded exactly as the client sent it when all its readings agree.
    #[tokio::test]
    async fn agreeing_paths_are_forwarded_as_sent() {
        let ctx = admin_and_open();
        for path in ["/files/a%20b;jsessionid=1?q=%2F", "/admin/%61b;v=1"] {
            let (status, body) =
                send(&ctx, &joe(), get(path, Version::HTTP_11).body(empty()).unwrap()).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            assert_eq!(body["request_line"], format!("GET {path} HTTP/1.1"));
        }
    }

    /// A route that ignores case and trailing dots gets every such spelling.
    #[tokio::test]
    async fn windows_route_covers_case_and_trailing_dots() {
        let mut admin = route("/admin", true);
        admin.matching = PathMatching { ignore_case: true, ignore_trailing_dots: true };
        let ctx = listener(vec![admin, route("/", false)]);
        for path in ["/ADMIN", "/Admin/x", "/admin.", "/admin%20", "/%41dmin..", "/admin. ./x"] {
            let Ok(req) = get(path, Version::HTTP_11).body(empty()) else { continue };
            let (status, body) = send(&ctx, &anonymous(), req).await;
            assert!(
                status.as_u16() == 496 || status == StatusCode::BAD_REQUEST,
                "{path}: {status} {body}"
            );
        }
    }

    /// A client cannot make the gateway drop Host, its identity headers or its forwarding
    /// headers by naming them in Connection, in any spelling.
    #[tokio::test]
    async fn connection_header_cannot_remove_gateway_headers() {
        let ctx = admin_and_open();
        let req = get("/admin", Version::HTTP_11)
            .header("connection", "close, Host, X-Client-Subject, x_client_verify, X-Forwarded-For, x-forwarded-host, X-Client-Cert")
            .header("x-client-subject", "CN=admin")
            .body(empty())
            .unwrap();
        let (status, body) = send(&ctx, &joe(), req).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let h = &body["headers"];
        assert_eq!(h["host"], "localhost");
        assert_eq!(h["x-client-subject"], "CN=joe");
        assert_eq!(h["x-client-verify"], "SUCCESS");
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-host"], "localhost");
        assert!(h["x-client-cert"].as_str().is_some_and(|c| c.starts_with("-----BEGIN")));
        assert!(h.get("connection").is_none(), "{body}");
    }

    /// Inbound forwarding headers are replaced, in any spelling; a trusted proxy's chain is
    /// kept and appended to.
    #[tokio::test]
    async fn forwarding_headers_are_replaced_unless_the_peer_is_trusted() {
        let ctx = admin_and_open();
        let spoofed = || {
            get("/", Version::HTTP_11)
                .header("x-forwarded-for", "6.6.6.6")
                .header("X_Forwarded_For", "6.6.6.6")
                .header("forwarded", "for=6.6.6.6")
                .header("x-real-ip", "6.6.6.6")
                .header("x-forwarded-proto", "http")
                .header("x-forwarded-host", "evil.test")
                .body(empty())
                .unwrap()
        };
        let (_, body) = send(&ctx, &anonymous(), spoofed()).await;
        let h = &body["headers"];
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "localhost");
        assert!(h.get("forwarded").is_none() && h.get("x-real-ip").is_none(), "{body}");
        assert!(!body.to_string().contains("6.6.6.6"), "{body}");
        let (_, body) = send(&ctx, &conn(ClientCert::None, true), spoofed()).await;
        assert_eq!(body["headers"]["x-forwarded-for"], "6.6.6.6, 192.0.2.7");
        assert_eq!(body["headers"]["forwarded"], "for=6.6.6.6");
    }

    /// Host disagreements are refused: two Host headers, an HTTP/2 host that differs from
    /// :authority, an absolute-form target whose host differs from Host.
    #[tokio::test]
    async fn host_disagreements_are_400() {
        let ctx = admin_and_open();
        let two = Request::get("/").header("host", "localhost").header("host", "admin.test");
        let h2 = Request::get("https://localhost/")
            .version(Version::HTTP_2)
            .header("host", "admin.test");
        let absolute = Request::get("https://localhost/").header("host", "admin.test");
        for req in [two, h2, absolute] {
            let (status, body) = send(&ctx, &joe(), req.body(empty()).unwrap()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        }
        let same =
            Request::get("https://localhost/").version(Version::HTTP_2).header("host", "LOCALHOST");
        let (status, body) = send(&ctx, &joe(), same.body(empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// A body over the route's limit is refused by its declared length, and while streaming
    /// when it has none.
    #[tokio::test]
    async fn body_over_the_route_limit_is_413() {
        let mut upload = route("/", false);
        upload.max_body_bytes = Some(10);
        let ctx = listener(vec![upload]);
        let post = |body: Body, length: Option<&str>| {
            let mut b = Request::post("/").header("host", "localhost");
            if let Some(l) = length {
                b = b.header("content-length", l);
            }
            b.body(body).unwrap()
        };
        let big = || boxed(Full::new(Bytes::from_static(b"0123456789ABC")));
        let (status, _) = send(&ctx, &anonymous(), post(big(), Some("13"))).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let (status, body) = send(&ctx, &anonymous(), post(big(), None)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        let small = boxed(Full::new(Bytes::from_static(b"0123456789")));
        let (status, body) = send(&ctx, &anonymous(), post(small, None)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["body_bytes"], 10);
    }
}
