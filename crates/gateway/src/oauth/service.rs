//! The token service as a route target. Requests reach it after the route's phases (Host,
//! path, SNI, certificate requirement if the route has one); it answers itself and never
//! forwards. The client's identity comes from the connection ([`ConnInfo`]), never from a
//! header.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use certgate_token::client::Presented;
use certgate_token::error::OAuthError;
use certgate_token::form::{Form, FormError, MAX_FORM_BYTES};
use certgate_token::service::{Endpoint, Introspected, Request as TokenRequest, TokenService};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::http::pipeline::{ConnInfo, text};
use crate::http::reject::Reject;
use crate::http::upstream::Body;
use crate::tls::server::ClientCert;

/// How long the JWKS and metadata may be cached by clients.
const PUBLIC_MAX_AGE: &str = "public, max-age=300";

/// Answers one request to the token service.
///
/// Not an `async fn`: the connection's certificate is taken (owned) before the returned
/// future starts, so that future borrows nothing from the connection.
pub fn answer(
    req: Request<Body>,
    conn: &ConnInfo,
    service: &Arc<TokenService>,
    body_timeout: Duration,
) -> impl Future<Output = Result<Response<Body>, Reject>> + Send + 'static {
    // Taken now, owned: the work below runs on a blocking thread.
    let (leaf, intermediates) = match &conn.identity.client {
        ClientCert::Verified { identity, intermediates } => {
            (Some(identity.clone()), intermediates.clone())
        }
        ClientCert::Failed { identity: Some(identity), .. } => (Some(identity.clone()), Vec::new()),
        ClientCert::Failed { identity: None, .. } | ClientCert::None => (None, Vec::new()),
    };
    serve(req, leaf, intermediates, service.clone(), body_timeout)
}

async fn serve(
    req: Request<Body>,
    leaf: Option<Arc<certgate_pki::identity::PeerIdentity>>,
    intermediates: Vec<rustls_pki_types::CertificateDer<'static>>,
    service: Arc<TokenService>,
    body_timeout: Duration,
) -> Result<Response<Body>, Reject> {
    let Some(endpoint) = service.endpoint(req.uri().path()) else {
        return Err(Reject::NoRoute);
    };
    let post = matches!(endpoint, Endpoint::Token | Endpoint::Introspect);
    let allowed = if post { [Method::POST].as_slice() } else { &[Method::GET, Method::HEAD] };
    if !allowed.contains(req.method()) {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        let allow = if post { "POST" } else { "GET, HEAD" };
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
        // A body sent anyway is read first: ending the request unread resets an HTTP/2
        // stream, and the client would lose the answer.
        crate::http::pipeline::drain_refused(req.into_body()).await;
        return Ok(resp);
    }
    match endpoint {
        Endpoint::Metadata => Ok(public_json(service.metadata_json().to_string())),
        Endpoint::Jwks => Ok(public_json(service.jwks_json(super::unix_now()))),
        Endpoint::Token | Endpoint::Introspect => {
            let wants_jwt = endpoint == Endpoint::Introspect && wants_jwt(req.headers());
            let authorization_header = req.headers().contains_key(header::AUTHORIZATION);
            let form = match read_form(req, body_timeout).await {
                Ok(form) => form,
                Err(e) => return Ok(oauth_error(&e)),
            };
            // Chain checks and the token store block: off the runtime threads.
            let work = tokio::task::spawn_blocking(move || {
                let presented =
                    leaf.as_deref().map(|leaf| Presented { leaf, intermediates: &intermediates });
                let request = TokenRequest { form: &form, presented, authorization_header };
                let now = super::unix_now();
                let outcome = match endpoint {
                    Endpoint::Token => service.token(&request, now).map(Outcome::Issued),
                    _ => service.introspect(&request, now).map(Outcome::Introspected),
                };
                if let Err(e) = &outcome
                    && let Some(client) = service.reversed_dn_hint(&request, now)
                {
                    tracing::warn!(client = %client, error = %e, "client certificate subject \
                        matches tls_client_auth_subject_dn in reverse order: RFC 4514 writes \
                        the most specific RDN (CN) first");
                }
                outcome
            });
            let outcome = work
                .await
                .map_err(|_| Reject::UpstreamUnreachable { upstream: "@oauth".into() })?;
            Ok(match outcome {
                Ok(Outcome::Issued(issued)) => {
                    tracing::info!(client_id = %issued.client_id, jti = %issued.jti,
                        "access token issued");
                    no_store(StatusCode::OK, Some(issued.body))
                }
                Ok(Outcome::Introspected(Introspected::Inactive)) if wants_jwt => {
                    no_store(StatusCode::NO_CONTENT, None)
                }
                Ok(Outcome::Introspected(Introspected::Inactive)) => {
                    no_store(StatusCode::OK, Some("{\"active\":false}".into()))
                }
                Ok(Outcome::Introspected(Introspected::Active { jwt, .. })) if wants_jwt => {
                    let mut resp = no_store(StatusCode::OK, None);
                    *resp.body_mut() = full(jwt);
                    resp.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/jwt"));
                    resp
                }
                Ok(Outcome::Introspected(Introspected::Active { json, .. })) => {
                    no_store(StatusCode::OK, Some(json))
                }
                Err(e) => {
                    tracing::info!(error = %e, "token service refused a request");
                    oauth_error(&e)
                }
            })
        }
    }
}

enum Outcome {
    Issued(certgate_token::service::Issued),
    Introspected(Introspected),
}

/// `Accept: application/jwt` (Curity's phantom-token form): the answer is the JWT itself.
fn wants_jwt(headers: &http::HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|t| t.split(';').next().unwrap_or("").trim() == "application/jwt")
        })
    })
}

/// Reads a form body: the right content type, at most [`MAX_FORM_BYTES`], within the
/// listener's body timeout.
async fn read_form(req: Request<Body>, timeout: Duration) -> Result<Form, OAuthError> {
    let form_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !form_type {
        crate::http::pipeline::drain_refused(req.into_body()).await;
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let mut body = req.into_body();
    let read = async {
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Unread::Broken)?;
            if let Some(data) = frame.data_ref() {
                if bytes.len() + data.len() > MAX_FORM_BYTES {
                    return Err(Unread::TooLarge);
                }
                bytes.extend_from_slice(data);
            }
        }
        Ok(bytes)
    };
    let form = match tokio::time::timeout(timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(Unread::TooLarge)) => {
            // The client may still be sending: the rest is read briefly so the answer
            // reaches it.
            crate::http::pipeline::drain_refused(body).await;
            return Err(OAuthError::invalid_request(FormError::TooLarge.to_string()));
        }
        Ok(Err(Unread::Broken)) => {
            return Err(OAuthError::invalid_request("the request body could not be read"));
        }
        Err(_) => {
            return Err(OAuthError::invalid_request("the request body did not arrive in time"));
        }
    };
    Form::parse(&form).map_err(|e| OAuthError::invalid_request(e.to_string()))
}

/// Why a form body was not read.
enum Unread {
    TooLarge,
    Broken,
}

fn full(body: String) -> Body {
    http_body_util::Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed()
}

fn json_response(status: StatusCode, body: Option<String>) -> Response<Body> {
    let mut resp = text(status, body.unwrap_or_default());
    if status != StatusCode::NO_CONTENT {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    resp
}

/// Token and introspection answers must not be stored by any cache (RFC 6749 section 5.1).
fn no_store(status: StatusCode, body: Option<String>) -> Response<Body> {
    let mut resp = json_response(status, body);
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

fn public_json(body: String) -> Response<Body> {
    let mut resp = json_response(StatusCode::OK, Some(body));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(PUBLIC_MAX_AGE));
    resp
}

fn oauth_error(e: &OAuthError) -> Response<Body> {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    no_store(status, Some(e.body()))
}
