//! Talking to another authorization server: its introspection endpoint for phantom tokens
//! (RFC 7662 with `Accept: application/jwt`, as Curity's phantom-token gateways use it) and its
//! JWKS by URL. Both go through a configured `[[upstream]]`, so the server is pinned by that
//! upstream's `ca`, the gateway can authenticate with its `client_cert`, and connections are
//! pooled. Every body read is bounded, every call has the upstream's deadline, and in-flight
//! introspection calls are capped: random tokens cannot turn into unbounded traffic.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use certgate_token::jwt::{KeySet, TokenError, Verified, Verifier};
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::Semaphore;

use crate::http::reject::Reject;
use crate::http::upstream::{Upstream, boxed};

/// The largest introspection answer read (a JWT with its claims).
pub const MAX_INTROSPECTION_BYTES: usize = 64 * 1024;
/// The largest JWKS read.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// What an introspection said.
pub enum Resolution {
    /// Active, with its claims and the JWT that stands for it.
    Active {
        verified: Verified,
        jwt: String,
    },
    /// A JWT from another server, still to be verified with the route's keys.
    Jwt(String),
    Inactive,
}

/// The client of one authorization server's introspection endpoint.
pub struct Introspector {
    pub upstream: Arc<Upstream>,
    pub path: String,
    pub client_id: Option<String>,
    /// `Authorization: Basic ...` when the gateway authenticates with a client secret.
    pub basic_auth: Option<HeaderValue>,
    pub in_flight: Arc<Semaphore>,
}

/// The client_secret_basic header value (RFC 6749 section 2.3.1: both parts form-encoded).
pub fn basic_auth(client_id: &str, secret: &str) -> Option<HeaderValue> {
    use base64::Engine;
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", enc(client_id), enc(secret));
    let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair));
    let mut value = HeaderValue::from_str(&value).ok()?;
    value.set_sensitive(true);
    Some(value)
}

impl Introspector {
    /// Introspects `token`. Failures name the server: 503 when it cannot be reached or says
    /// it is unavailable, 502 when it answers with an error or something unreadable.
    pub async fn introspect(&self, token: &str) -> Result<Resolution, Reject> {
        let server = || self.upstream.name.clone();
        let _permit = self
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| Reject::AuthServerUnavailable { server: server() })?;
        let form = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("token", token);
            form.append_pair("token_type_hint", "access_token");
            if let (Some(id), None) = (&self.client_id, &self.basic_auth) {
                form.append_pair("client_id", id);
            }
            form.finish()
        };
        let body = boxed(Full::new(Bytes::from(form)).map_err(|never| match never {}));
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.path.as_str())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/jwt")
            .body(body)
            .map_err(|_| Reject::AuthServerError { server: server() })?;
        if let Some(basic) = &self.basic_auth {
            req.headers_mut().insert(header::AUTHORIZATION, basic.clone());
        }
        let resp = self.upstream.send(req).await.map_err(|e| {
            tracing::warn!(server = %self.upstream.name, reason = %e.answer().1,
                "token introspection failed");
            Reject::AuthServerUnavailable { server: server() }
        })?;
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        match status {
            StatusCode::NO_CONTENT => return Ok(Resolution::Inactive),
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                return Err(Reject::AuthServerUnavailable { server: server() });
            }
            other => {
                tracing::warn!(server = %self.upstream.name, status = other.as_u16(),
                    "token introspection answered with an error (the gateway's credentials \
                     or the server are broken)");
                return Err(Reject::AuthServerError { server: server() });
            }
        }
        let body =
            read_bounded(resp.into_body(), MAX_INTROSPECTION_BYTES).await.map_err(|why| {
                tracing::warn!(server = %self.upstream.name, "token introspection answer: {why}");
                Reject::AuthServerError { server: server() }
            })?;
        let text = std::str::from_utf8(&body).unwrap_or("").trim();
        if content_type.starts_with("application/json") {
            let inactive = serde_json::from_str::<serde_json::Value>(text)
                .is_ok_and(|v| v.get("active") == Some(&serde_json::Value::Bool(false)));
            if inactive {
                return Ok(Resolution::Inactive);
            }
            tracing::warn!(server = %self.upstream.name, "token introspection answered JSON, \
                not a JWT: phantom tokens need a server that answers Accept: application/jwt");
            return Err(Reject::AuthServerError { server: server() });
        }
        if text.bytes().filter(|&b| b == b'.').count() != 2 {
            tracing::warn!(server = %self.upstream.name, "token introspection answer is not a JWT");
            return Err(Reject::AuthServerError { server: server() });
        }
        Ok(Resolution::Jwt(text.to_string()))
    }
}

/// Reads a body of at most `limit` bytes.
async fn read_bounded<B>(body: B, limit: usize) -> Result<Bytes, String>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(format!("unreadable or larger than {limit} bytes ({e})")),
    }
}

/// An issuer's JWKS by URL: fetched at first use, fetched again in the background once older
/// than `refresh`, and at once (at most every [`MIN_REFETCH`]) when a token names an unknown
/// key, as happens right after the issuer rotates. The last good set is kept while fetches
/// fail.
pub struct RemoteJwks {
    pub upstream: Arc<Upstream>,
    pub path: String,
    pub refresh: Duration,
    current: ArcSwapOption<(KeySet, Instant)>,
    last_attempt: Mutex<Option<Instant>>,
}

/// Unknown keys trigger a fetch at most this often.
pub const MIN_REFETCH: Duration = Duration::from_secs(30);

impl RemoteJwks {
    pub fn new(upstream: Arc<Upstream>, path: String, refresh: Duration) -> Arc<RemoteJwks> {
        Arc::new(RemoteJwks {
            upstream,
            path,
            refresh,
            current: ArcSwapOption::empty(),
            last_attempt: Mutex::new(None),
        })
    }

    /// Verifies `token` with the current keys, fetching them first if there are none, and
    /// once more if the token names a key the set lacks.
    pub async fn verify(
        self: &Arc<Self>,
        verifier: &Verifier,
        token: &str,
    ) -> Result<Verified, KeysFailure> {
        let keys = match self.current.load_full() {
            Some(current) => {
                if current.1.elapsed() >= self.refresh && self.may_fetch() {
                    let this = self.clone();
                    tokio::spawn(async move { this.fetch().await });
                }
                current
            }
            None => {
                if self.may_fetch() {
                    self.fetch().await;
                }
                self.current.load_full().ok_or(KeysFailure::Unavailable)?
            }
        };
        match verifier.verify(token, &keys.0) {
            Err(TokenError::UnknownKey(_)) if self.may_fetch() => {
                self.fetch().await;
                let keys = self.current.load_full().unwrap_or(keys);
                verifier.verify(token, &keys.0).map_err(KeysFailure::Invalid)
            }
            other => other.map_err(KeysFailure::Invalid),
        }
    }

    /// Whether a fetch may start now (none in the last [`MIN_REFETCH`]); records it.
    fn may_fetch(&self) -> bool {
        let Ok(mut last) = self.last_attempt.lock() else { return false };
        if last.is_some_and(|at| at.elapsed() < MIN_REFETCH) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    async fn fetch(&self) {
        let req = Request::builder()
            .method(Method::GET)
            .uri(self.path.as_str())
            .header(header::ACCEPT, HeaderValue::from_static("application/json"))
            .body(boxed(http_body_util::Empty::<Bytes>::new().map_err(|never| match never {})));
        let Ok(req) = req else { return };
        let outcome = match self.upstream.send(req).await {
            Ok(resp) if resp.status() == StatusCode::OK => {
                match read_bounded(resp.into_body(), MAX_JWKS_BYTES).await {
                    Ok(body) => KeySet::from_jwks(&body).map_err(|e| e.to_string()),
                    Err(why) => Err(why),
                }
            }
            Ok(resp) => Err(format!("status {}", resp.status().as_u16())),
            Err(e) => Err(e.answer().1),
        };
        match outcome {
            Ok(keys) => {
                tracing::info!(upstream = %self.upstream.name, path = %self.path,
                    keys = keys.len(), "JWKS fetched");
                self.current.store(Some(Arc::new((keys, Instant::now()))));
            }
            Err(why) => tracing::warn!(upstream = %self.upstream.name, path = %self.path,
                "JWKS fetch failed, keeping the last good keys: {why}"),
        }
    }
}

/// Why a token could not be verified with remote keys.
pub enum KeysFailure {
    Invalid(TokenError),
    /// No keys could be fetched yet.
    Unavailable,
}
