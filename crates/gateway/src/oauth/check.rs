//! A route's access-token check (`[route.token]`), between authorization and the identity
//! headers. In order:
//!
//! 1. the bearer token: one `Authorization: Bearer` header (scheme in any case), none in the
//!    query; no token → 401 with a bare challenge (RFC 6750 section 3.1);
//! 2. an opaque token on a route with `introspection` is resolved (phantom token) into claims
//!    and a JWT that replaces it upstream; a JWT is verified with the issuer's keys
//!    ([`certgate_token::jwt::Verifier`]). Either result is cached by the token's SHA-256,
//!    never past its `exp`;
//! 3. proof of possession: a token with `cnf.x5t#S256` must come over a connection whose
//!    certificate has that thumbprint (and a route may require the binding);
//! 4. scopes: every scope the route names.
//!
//! The upstream then gets the verified claims as `X-Token-*` headers, which only the gateway
//! writes (they are stripped from every inbound request).

use std::sync::Arc;
use std::time::Duration;

use certgate_token::binding;
use certgate_token::cache::TtlCache;
use certgate_token::error::BearerError;
use certgate_token::jwt::{KeySet, Verified, Verifier};
use certgate_token::service::TokenService;
use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};
use tokio::sync::Semaphore;

use super::introspect::{Introspector, KeysFailure, Resolution};
use crate::http::reject::Reject;

/// The headers the upstream gets, written by the gateway alone.
pub const TOKEN_HEADERS: [&str; 4] =
    ["x-token-sub", "x-token-client-id", "x-token-scope", "x-token-jti"];

/// Where a route's verification keys come from.
pub enum Keys {
    /// A JWKS file or the built-in service's keyring, read when the configuration loaded.
    Fixed(KeySet),
    /// A JWKS fetched by URL and refreshed in the background.
    Remote(Arc<super::introspect::RemoteJwks>),
}

/// How opaque tokens are resolved (phantom tokens).
pub enum Phantom {
    /// The built-in token service, in-process.
    Local { service: Arc<TokenService>, in_flight: Arc<Semaphore> },
    /// Another authorization server's introspection endpoint.
    Remote(Arc<Introspector>),
}

/// What passed the check, kept in the cache with the header values made once.
#[derive(Debug)]
pub struct Passed {
    pub verified: Verified,
    /// `X-Token-*` values (a claim that is absent or cannot be a header value is left out).
    headers: Vec<(HeaderName, HeaderValue)>,
    /// `Bearer <JWT>` that replaces an opaque token upstream.
    swapped: Option<HeaderValue>,
}

impl Passed {
    fn new(verified: Verified, swapped_jwt: Option<String>) -> Passed {
        let scope = verified.scopes.join(" ");
        let values = [
            Some(verified.sub.as_str()),
            verified.client_id.as_deref(),
            Some(scope.as_str()),
            verified.jti.as_deref(),
        ];
        let headers = TOKEN_HEADERS
            .iter()
            .zip(values)
            .filter_map(|(name, value)| {
                let value = HeaderValue::from_str(value.filter(|v| !v.is_empty())?).ok()?;
                Some((HeaderName::from_static(name), value))
            })
            .collect();
        let swapped =
            swapped_jwt.and_then(|jwt| HeaderValue::from_str(&format!("Bearer {jwt}")).ok());
        Passed { verified, headers, swapped }
    }

    /// Writes the `X-Token-*` headers, and the swapped-in JWT in place of an opaque token.
    pub fn write(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(swapped) = &self.swapped {
            headers.insert(header::AUTHORIZATION, swapped.clone());
        }
    }
}

/// One route's token rules.
pub struct TokenCheck {
    pub verifier: Verifier,
    pub keys: Keys,
    pub phantom: Option<Phantom>,
    pub scopes: Vec<String>,
    pub require_binding: bool,
    pub realm: Arc<str>,
    /// How long a phantom answer is kept at most.
    pub cache_ttl: Duration,
    cache: TtlCache<Arc<Passed>>,
    /// Opaque tokens found inactive, briefly: a client retrying a dead token does not turn
    /// into introspection calls.
    inactive: TtlCache<()>,
}

/// How long an inactive answer is remembered.
const INACTIVE_TTL: u64 = 10;

impl TokenCheck {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        verifier: Verifier,
        keys: Keys,
        phantom: Option<Phantom>,
        scopes: Vec<String>,
        require_binding: bool,
        realm: String,
        cache_ttl: Duration,
        cache_size: usize,
    ) -> TokenCheck {
        TokenCheck {
            verifier,
            keys,
            phantom,
            scopes,
            require_binding,
            realm: realm.into(),
            cache_ttl,
            cache: TtlCache::new(cache_size),
            inactive: TtlCache::new(cache_size),
        }
    }

    fn refuse(&self, error: BearerError) -> Reject {
        Reject::Token { error, realm: self.realm.clone() }
    }

    fn invalid(&self, why: impl ToString) -> Reject {
        self.refuse(BearerError::InvalidToken(why.to_string()))
    }

    /// Runs the check for a request with `headers` and `query` on a connection whose
    /// certificate has `presented_x5t`.
    pub async fn check(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        presented_x5t: Option<&str>,
    ) -> Result<Arc<Passed>, Reject> {
        let token = self.bearer(headers, query)?;
        let now = super::unix_now();
        let hash = certgate_token::token_hash(token.as_bytes());
        let passed = match self.cache.get(&hash, now) {
            Some(passed) => {
                passed.verified.current(now, self.verifier.leeway).map_err(|e| self.invalid(e))?;
                passed
            }
            None => {
                let (passed, until) = self.resolve(token, &hash, now).await?;
                let passed = Arc::new(passed);
                self.cache.insert(hash, passed.clone(), until, now);
                passed
            }
        };
        binding::check(passed.verified.cnf_x5t.as_deref(), presented_x5t, self.require_binding)
            .map_err(|e| self.invalid(e))?;
        let lacks = |s: &&String| !passed.verified.scopes.contains(s);
        if self.scopes.iter().any(|s| lacks(&s)) {
            let missing: Vec<&str> = self.scopes.iter().filter(lacks).map(String::as_str).collect();
            return Err(self.refuse(BearerError::InsufficientScope { needed: missing.join(" ") }));
        }
        Ok(passed)
    }

    /// The token of the request's one `Authorization: Bearer` header.
    fn bearer<'h>(&self, headers: &'h HeaderMap, query: Option<&str>) -> Result<&'h str, Reject> {
        let in_query = query.is_some_and(|q| {
            q.split('&').any(|pair| pair.split('=').next() == Some("access_token"))
        });
        if in_query {
            return Err(self.refuse(BearerError::InvalidRequest(
                "send the access token in the Authorization header, not in the query".into(),
            )));
        }
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return Err(self.refuse(BearerError::Missing));
        };
        if values.next().is_some() {
            return Err(self.refuse(BearerError::InvalidRequest(
                "the request has more than one Authorization header".into(),
            )));
        }
        let text = value.to_str().map_err(|_| self.refuse(BearerError::Missing))?.trim();
        let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(self.refuse(BearerError::Missing));
        }
        let token = token.trim();
        // RFC 6750 section 2.1: b64token.
        let b64token = !token.is_empty()
            && token.trim_end_matches('=').bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
            });
        if !b64token {
            return Err(self.refuse(BearerError::InvalidRequest(
                "the Authorization header does not hold a bearer token".into(),
            )));
        }
        Ok(token)
    }

    /// Verifies a JWT or resolves an opaque token; returns what passed and until when
    /// (unix seconds) it may be cached.
    async fn resolve(
        &self,
        token: &str,
        hash: &[u8; 32],
        now: u64,
    ) -> Result<(Passed, u64), Reject> {
        let is_jwt = token.bytes().filter(|&b| b == b'.').count() == 2;
        let Some(phantom) = self.phantom.as_ref().filter(|_| !is_jwt) else {
            let verified = self.verify_jwt(token).await?;
            let until = verified.exp.saturating_add(self.verifier.leeway);
            return Ok((Passed::new(verified, None), until));
        };
        if self.inactive.get(hash, now).is_some() {
            return Err(self.invalid("the access token is not active"));
        }
        let resolution = match phantom {
            Phantom::Local { service, in_flight } => {
                let _permit = in_flight
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| Reject::AuthServerUnavailable { server: "@oauth".into() })?;
                let service = service.clone();
                let owned = token.to_string();
                let found = tokio::task::spawn_blocking(move || service.resolve(&owned, now))
                    .await
                    .map_err(|_| Reject::AuthServerUnavailable { server: "@oauth".into() })?;
                match found {
                    Ok(Some((verified, jwt))) => Resolution::Active { verified, jwt },
                    Ok(None) => Resolution::Inactive,
                    Err(e) => {
                        tracing::warn!(error = %e, "token store failed during introspection");
                        return Err(Reject::AuthServerUnavailable { server: "@oauth".into() });
                    }
                }
            }
            Phantom::Remote(introspector) => introspector.introspect(token).await?,
        };
        match resolution {
            Resolution::Inactive => {
                self.inactive.insert(*hash, (), now.saturating_add(INACTIVE_TTL), now);
                Err(self.invalid("the access token is not active"))
            }
            Resolution::Jwt(jwt) => {
                let verified = self.verify_jwt(&jwt).await?;
                let until = verified.exp.min(now.saturating_add(self.cache_ttl.as_secs()));
                Ok((Passed::new(verified, Some(jwt)), until))
            }
            Resolution::Active { verified, jwt } => {
                verified.current(now, self.verifier.leeway).map_err(|e| self.invalid(e))?;
                let until = verified.exp.min(now.saturating_add(self.cache_ttl.as_secs()));
                Ok((Passed::new(verified, Some(jwt)), until))
            }
        }
    }

    async fn verify_jwt(&self, token: &str) -> Result<Verified, Reject> {
        match &self.keys {
            Keys::Fixed(keys) => self.verifier.verify(token, keys).map_err(|e| self.invalid(e)),
            Keys::Remote(remote) => {
                remote.verify(&self.verifier, token).await.map_err(|failure| match failure {
                    KeysFailure::Invalid(e) => self.invalid(e),
                    KeysFailure::Unavailable => {
                        Reject::AuthServerUnavailable { server: remote.upstream.name.clone() }
                    }
                })
            }
        }
    }
}
