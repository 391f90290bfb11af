//! The token service: what the gateway serves when a route's target is `oauth`.
//!
//! | endpoint | path (after the issuer's own path) |
//! |---|---|
//! | token (client credentials, RFC 6749 section 4.4) | `/token` |
//! | JWKS (RFC 7517) | `/jwks` |
//! | introspection (RFC 7662) | `/introspect` |
//! | metadata (RFC 8414) | `/.well-known/oauth-authorization-server` before the issuer path |
//!
//! Clients authenticate with their TLS client certificate only ([`crate::client`]); every
//! token is bound to that certificate (`cnf.x5t#S256`). A client gets signed JWTs, or opaque
//! references kept in a [`TokenStore`] by their hash for the phantom-token pattern.

use std::collections::HashMap;
use std::sync::Arc;

use rustls_pki_types::UnixTime;
use serde_json::{Map, Value};

use crate::client::{AuthFailure, Client, Presented, TokenFormat};
use crate::error::{ErrorCode, OAuthError};
use crate::form::Form;
use crate::jwt::{AccessClaims, KeySet, Verified, Verifier};
use crate::keys::Keyring;

/// An opaque token as the store keeps it: by hash, with the claims it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub hash: [u8; 32],
    pub client_id: String,
    /// The JSON claims object, as issued.
    pub claims: String,
    pub issued_at: u64,
    pub expires_at: u64,
}

/// Where opaque tokens live (the inventory database). Calls block: the gateway makes them
/// off its async runtime.
pub trait TokenStore: Send + Sync {
    fn put(&self, token: &StoredToken) -> Result<(), StoreFailure>;
    /// The token if it is known, not expired at `now` and not revoked.
    fn find(&self, hash: &[u8; 32], now: u64) -> Result<Option<StoredToken>, StoreFailure>;
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("the token store failed: {0}")]
pub struct StoreFailure(pub String);

/// Which endpoint a request path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Token,
    Jwks,
    Introspect,
    Metadata,
}

/// Why the service cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("issuer {0:?} must be an https URL without query or fragment (RFC 8414 section 2)")]
    BadIssuer(String),
    #[error("mtls_endpoint_base {0:?} must be an https URL without query or fragment")]
    BadMtlsBase(String),
    #[error("client {0} uses opaque tokens, which need a token store (`store`)")]
    NoStore(String),
    #[error("client {0} is listed twice")]
    DuplicateClient(String),
}

/// A token endpoint request, with what the connection says.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub form: &'a Form,
    /// The connection's client certificate, if any.
    pub presented: Option<Presented<'a>>,
    /// The request carried an `Authorization` header (a second authentication method).
    pub authorization_header: bool,
}

/// A successful token response.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The JSON body (RFC 6749 section 5.1).
    pub body: String,
    pub client_id: String,
    pub jti: String,
}

/// An introspection answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Introspected {
    /// `{"active":false}` and nothing else (RFC 7662 section 2.2); 204 for a JWT answer.
    Inactive,
    Active {
        /// The JSON response: `active`, `token_type` and the token's claims (with `cnf`).
        json: String,
        /// The token as a signed JWT (itself when it is one, minted for an opaque token).
        jwt: String,
    },
}

/// The authorization server.
pub struct TokenService {
    issuer: String,
    base: String,
    paths: HashMap<String, Endpoint>,
    clients: HashMap<String, Client>,
    keyring: Keyring,
    store: Option<Arc<dyn TokenStore>>,
    metadata: String,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService").field("issuer", &self.issuer).finish()
    }
}

/// `https://host[:port][/path]` split into origin and path (trailing `/` dropped), or `None`.
fn https_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("https://")?;
    if url.contains(['?', '#']) || rest.is_empty() || rest.starts_with('/') {
        return None;
    }
    let split = rest.find('/').unwrap_or(rest.len());
    let origin = &url[..8 + split];
    let path = rest[split..].trim_end_matches('/');
    Some((origin, path))
}

impl TokenService {
    pub fn new(
        issuer: &str,
        mtls_endpoint_base: Option<&str>,
        clients: Vec<Client>,
        keyring: Keyring,
        store: Option<Arc<dyn TokenStore>>,
    ) -> Result<TokenService, ServiceError> {
        let (origin, issuer_path) =
            https_url(issuer).ok_or_else(|| ServiceError::BadIssuer(issuer.to_string()))?;
        let base = format!("{origin}{issuer_path}");
        let mut paths = HashMap::new();
        paths.insert(format!("{issuer_path}/token"), Endpoint::Token);
        paths.insert(format!("{issuer_path}/jwks"), Endpoint::Jwks);
        paths.insert(format!("{issuer_path}/introspect"), Endpoint::Introspect);
        paths.insert(
            format!("/.well-known/oauth-authorization-server{issuer_path}"),
            Endpoint::Metadata,
        );
        let mtls_base = match mtls_endpoint_base {
            None => base.clone(),
            Some(url) => {
                let (o, p) =
                    https_url(url).ok_or_else(|| ServiceError::BadMtlsBase(url.to_string()))?;
                paths.insert(format!("{p}/token"), Endpoint::Token);
                paths.insert(format!("{p}/introspect"), Endpoint::Introspect);
                format!("{o}{p}")
            }
        };
        let mut by_id = HashMap::new();
        for client in clients {
            if client.format == TokenFormat::Opaque && store.is_none() {
                return Err(ServiceError::NoStore(client.id));
            }
            if by_id.contains_key(&client.id) {
                return Err(ServiceError::DuplicateClient(client.id));
            }
            by_id.insert(client.id.clone(), client);
        }
        let metadata = serde_json::json!({
            "issuer": issuer,
            "token_endpoint": format!("{base}/token"),
            "jwks_uri": format!("{base}/jwks"),
            "introspection_endpoint": format!("{base}/introspect"),
            "grant_types_supported": ["client_credentials"],
            // REQUIRED and non-empty for common clients (Authlib refuses `[]`). "none"
            // (OAuth 2.0 Multiple Response Type Encoding Practices, section 4) is the one
            // registered value that promises no code or token from an authorization endpoint,
            // which this service does not have.
            "response_types_supported": ["none"],
            "token_endpoint_auth_methods_supported":
                ["tls_client_auth", "self_signed_tls_client_auth"],
            "introspection_endpoint_auth_methods_supported":
                ["tls_client_auth", "self_signed_tls_client_auth"],
            "tls_client_certificate_bound_access_tokens": true,
            "mtls_endpoint_aliases": {
                "token_endpoint": format!("{mtls_base}/token"),
                "introspection_endpoint": format!("{mtls_base}/introspect"),
            },
        })
        .to_string();
        Ok(TokenService {
            issuer: issuer.to_string(),
            base,
            paths,
            clients: by_id,
            keyring,
            store,
            metadata,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The endpoint at request path `path`, if any.
    pub fn endpoint(&self, path: &str) -> Option<Endpoint> {
        self.paths.get(path).copied()
    }

    /// The RFC 8414 metadata document.
    pub fn metadata_json(&self) -> &str {
        &self.metadata
    }

    /// The token endpoint URL (for messages and docs).
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.base)
    }

    /// The JWKS at unix time `now`.
    pub fn jwks_json(&self, now: u64) -> String {
        self.keyring.jwks_json(now)
    }

    /// Authenticates the caller named by the form's `client_id` with the connection's
    /// certificate.
    fn authenticate(&self, req: &Request<'_>, now: u64) -> Result<&Client, OAuthError> {
        if req.authorization_header
            || req.form.get("client_secret").is_some()
            || req.form.get("client_assertion").is_some()
        {
            return Err(OAuthError::invalid_request(
                "more than one client authentication method: this server authenticates \
                 clients by their TLS certificate only; send no client_secret, assertion or \
                 Authorization header",
            ));
        }
        let id = req.form.get("client_id").ok_or_else(|| {
            OAuthError::invalid_request("client_id is required with mTLS client authentication")
        })?;
        let client = self
            .clients
            .get(id)
            .ok_or_else(|| OAuthError::invalid_client(AuthFailure::UnknownClient.to_string()))?;
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now));
        client
            .authenticate(req.presented, at)
            .map_err(|failure| OAuthError::invalid_client(failure.to_string()))?;
        Ok(client)
    }

    /// Client authentication that failed only because the subject DN was configured in
    /// reverse order: worth a hint in the log.
    pub fn reversed_dn_hint(&self, req: &Request<'_>, now: u64) -> Option<String> {
        let client = self.clients.get(req.form.get("client_id")?)?;
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now));
        match client.authenticate(req.presented, at) {
            Err(AuthFailure::SubjectMismatch { reversed: true }) => Some(client.id.clone()),
            _ => None,
        }
    }

    /// The token endpoint (client credentials).
    pub fn token(&self, req: &Request<'_>, now: u64) -> Result<Issued, OAuthError> {
        let grant = req
            .form
            .get("grant_type")
            .ok_or_else(|| OAuthError::invalid_request("grant_type is missing"))?;
        if grant != "client_credentials" {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                format!("grant_type {grant} is not supported; use client_credentials"),
            ));
        }
        let client = self.authenticate(req, now)?;
        let scopes = match req.form.get("scope") {
            None => client.default_scopes.clone(),
            Some(asked) => {
                let mut granted: Vec<String> = Vec::new();
                for scope in asked.split(' ').filter(|s| !s.is_empty()) {
                    if !client.scopes.iter().any(|s| s == scope) {
                        return Err(OAuthError::new(
                            ErrorCode::InvalidScope,
                            format!("scope {scope} is not allowed for client {}", client.id),
                        ));
                    }
                    if !granted.iter().any(|s| s == scope) {
                        granted.push(scope.to_string());
                    }
                }
                granted
            }
        };
        // `authenticate` succeeded, so there is a certificate.
        let leaf = req
            .presented
            .ok_or_else(|| OAuthError::invalid_client(AuthFailure::NoCertificate.to_string()))?
            .leaf;
        // Never past the certificate's own end: a renewed certificate means new tokens.
        let not_after = u64::try_from(leaf.not_after.unix_timestamp()).unwrap_or(0);
        let expires_at = now.saturating_add(client.lifetime).min(not_after);
        if expires_at <= now {
            return Err(OAuthError::invalid_client("the client certificate has expired"));
        }
        let random = |n| {
            crate::random_b64(n).map_err(|_| {
                OAuthError::unavailable("no randomness available; try again", "aws-lc rand")
            })
        };
        let jti = random(16)?;
        let claims = AccessClaims {
            issuer: &self.issuer,
            client_id: &client.id,
            audience: &client.audience,
            scopes: &scopes,
            issued_at: now,
            expires_at,
            jti: &jti,
            x5t_s256: &leaf.x5t_s256,
        }
        .to_json();
        let access_token = match client.format {
            TokenFormat::Jwt => self.sign(&claims)?,
            TokenFormat::Opaque => {
                let handle = random(32)?;
                let stored = StoredToken {
                    hash: crate::token_hash(handle.as_bytes()),
                    client_id: client.id.clone(),
                    claims: claims.to_string(),
                    issued_at: now,
                    expires_at,
                };
                let store = self.store.as_ref().ok_or_else(|| {
                    OAuthError::unavailable("this server has no token store", "no store configured")
                })?;
                store.put(&stored).map_err(|e| {
                    OAuthError::unavailable("the token could not be stored; try again", e)
                })?;
                handle
            }
        };
        let mut body = serde_json::json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": expires_at - now,
        });
        if !scopes.is_empty()
            && let Some(map) = body.as_object_mut()
        {
            map.insert("scope".into(), Value::String(scopes.join(" ")));
        }
        Ok(Issued { body: body.to_string(), client_id: client.id.clone(), jti })
    }

    fn sign(&self, claims: &Value) -> Result<String, OAuthError> {
        self.keyring
            .active()
            .sign(claims, "at+jwt")
            .map_err(|e| OAuthError::unavailable("the token could not be signed; try again", e))
    }

    /// The introspection endpoint: the caller is a registered client allowed to introspect.
    pub fn introspect(&self, req: &Request<'_>, now: u64) -> Result<Introspected, OAuthError> {
        let caller = self.authenticate(req, now)?;
        if !caller.introspect {
            return Err(OAuthError::invalid_client(format!(
                "client {} may not introspect tokens (set introspect = true for it)",
                caller.id
            )));
        }
        let token =
            req.form.get("token").ok_or_else(|| OAuthError::invalid_request("token is missing"))?;
        let (verified, jwt) = match self.resolve(token, now) {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(Introspected::Inactive),
            Err(e) => return Err(OAuthError::unavailable("the token store failed; try again", e)),
        };
        let mut json = Map::new();
        json.insert("active".into(), Value::Bool(true));
        json.insert("token_type".into(), Value::String("Bearer".into()));
        for (k, v) in verified.claims {
            json.entry(k).or_insert(v);
        }
        Ok(Introspected::Active { json: Value::Object(json).to_string(), jwt })
    }

    /// What a token this service issued stands for at `now`, with it as a signed JWT: `None`
    /// when it is unknown, expired, revoked or not this service's.
    pub fn resolve(
        &self,
        token: &str,
        now: u64,
    ) -> Result<Option<(Verified, String)>, StoreFailure> {
        if token.len() > crate::jwt::MAX_TOKEN_BYTES {
            return Ok(None);
        }
        if token.bytes().filter(|&b| b == b'.').count() == 2 {
            let mut algorithms: Vec<_> = self.keyring.published(now).map(|k| k.alg).collect();
            algorithms.dedup();
            let verifier = Verifier {
                issuer: self.issuer.clone(),
                audience: Vec::new(),
                algorithms,
                leeway: 0,
                require_at_jwt: true,
            };
            let keys = KeySet::from_keyring(&self.keyring, now);
            return Ok(verifier.verify(token, &keys).ok().map(|v| (v, token.to_string())));
        }
        let Some(store) = &self.store else { return Ok(None) };
        let Some(stored) = store.find(&crate::token_hash(token.as_bytes()), now)? else {
            return Ok(None);
        };
        let claims: Value = serde_json::from_str(&stored.claims)
            .map_err(|e| StoreFailure(format!("stored claims are not JSON: {e}")))?;
        let Value::Object(map) = claims.clone() else {
            return Err(StoreFailure("stored claims are not a JSON object".into()));
        };
        let verified =
            Verified::from_claims(map).map_err(|e| StoreFailure(format!("stored claims: {e}")))?;
        if verified.current(now, 0).is_err() {
            return Ok(None);
        }
        let jwt = self.sign(&claims).map_err(|e| StoreFailure(e.to_string()))?;
        Ok(Some((verified, jwt)))
    }
}
