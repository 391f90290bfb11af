//! `[oauth]` (the built-in token service) and `[route.token]` (a route's access-token check),
//! built like the rest of the configuration: every problem reported with its field.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certgate_pki::dn_match::DnPattern;
use certgate_pki::verify::TrustStore;
use certgate_token::client::{Client, ClientAuth, SubjectValue, TokenFormat};
use certgate_token::jwt::{KeySet, Verifier, allowed_algorithms};
use certgate_token::keys::{KeyState, Keyring, SigningKey, parse_algorithm};
use certgate_token::service::{TokenService, TokenStore};
use tokio::sync::Semaphore;

use super::Builder;
use super::raw::{RawOAuth, RawOAuthClient, RawTokenCheck};
use crate::http::upstream::Upstream;
use crate::oauth::check::{Keys, Phantom, TokenCheck};
use crate::oauth::introspect::{Introspector, RemoteJwks};

/// When this process first saw each signing key retired (by kid). A reload builds the
/// configuration from scratch, but a retired key's publication window runs from the moment it
/// was retired, so that moment outlives configuration generations.
static RETIRED_SEEN: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);

const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
const MAX_LEEWAY: Duration = Duration::from_secs(300);
const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);
const DEFAULT_CACHE_SIZE: usize = 10_000;
const DEFAULT_MAX_IN_FLIGHT: usize = 64;
const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
/// Algorithms a route accepts when it names none: every asymmetric one (a JWK's own type and
/// `alg` still have to fit the token's).
const DEFAULT_ALGORITHMS: [&str; 5] = ["ES256", "ES384", "EdDSA", "PS256", "RS256"];

/// The token service as the routes see it.
#[derive(Clone, Copy)]
pub(super) enum OAuthService<'a> {
    /// No `[oauth]`.
    Absent,
    /// `[oauth]` with errors, already reported: what refers to it fails without repeating them
    /// (saying "add [oauth]" or "set jwks" would be false: it is there, it did not build).
    Broken {
        issuer: &'a str,
    },
    Built(&'a Arc<TokenService>),
}

impl<'a> OAuthService<'a> {
    pub(super) fn built(self) -> Option<&'a Arc<TokenService>> {
        match self {
            OAuthService::Built(service) => Some(service),
            OAuthService::Absent | OAuthService::Broken { .. } => None,
        }
    }
}

/// RFC 6749 section 3.3 scope-token characters.
fn scope_problem(scope: &str) -> Option<String> {
    let ok = !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
    (!ok).then(|| {
        format!("{scope:?} is not a scope token (printable ASCII without space, '\"' or '\\')")
    })
}

impl Builder {
    /// The opaque-token store (`[oauth] store`), opened (created 0600) now.
    pub(super) fn token_store(&mut self, file: &str) -> Option<Arc<dyn TokenStore>> {
        let path = self.resolve(file);
        match crate::oauth::store::InventoryStore::open(&path) {
            Ok(store) => Some(Arc::new(store)),
            Err(e) => {
                self.error(
                    "oauth.store",
                    format!("{}: {}", path.display(), certgate_pki::error::with_causes(&e)),
                );
                None
            }
        }
    }

    /// The token service, or `None` after reporting why it cannot be built.
    pub(super) fn oauth(
        &mut self,
        raw: &RawOAuth,
        store: Option<Arc<dyn TokenStore>>,
    ) -> Option<Arc<TokenService>> {
        let before = self.errors.len();
        let default_lifetime = self.duration(
            "oauth.token_lifetime",
            raw.token_lifetime.as_ref(),
            DEFAULT_TOKEN_LIFETIME,
        );
        let mut keys = Vec::new();
        for (i, k) in raw.signing_keys.iter().enumerate() {
            let field = format!("oauth.signing_key[{i}]");
            let Some(state) = KeyState::parse(&k.state) else {
                self.error(
                    &format!("{field}.state"),
                    format!("{:?}: use \"next\", \"active\" or \"retired\"", k.state),
                );
                continue;
            };
            let alg = match k.alg.as_deref().map(parse_algorithm).transpose() {
                Ok(alg) => alg,
                Err(e) => {
                    self.error(&format!("{field}.alg"), e.to_string());
                    continue;
                }
            };
            let path = self.path(&k.key);
            let pem = match std::fs::read(&path) {
                Ok(pem) => pem,
                Err(e) => {
                    self.error(
                        &format!("{field}.key"),
                        format!("cannot read {}: {e}", path.display()),
                    );
                    continue;
                }
            };
            match SigningKey::from_pem(&pem, alg, state) {
                Ok(key) => keys.push(key),
                Err(e) => self.error(&format!("{field}.key"), format!("{}: {e}", path.display())),
            }
        }
        if raw.signing_keys.is_empty() {
            self.error(
                "oauth.signing_key",
                "the token service needs a signing key: add [[oauth.signing_key]] with key = \
                 \"FILE\" and state = \"active\" (openssl genpkey -algorithm EC -pkeyopt \
                 ec_paramgen_curve:P-256 -out FILE makes one)"
                    .into(),
            );
        }
        let mut clients = Vec::new();
        let mut max_lifetime = default_lifetime;
        for (i, c) in raw.clients.iter().enumerate() {
            let field = format!("oauth.client[{i}]");
            if let Some(client) =
                self.oauth_client(&field, c, raw, default_lifetime, store.is_some())
            {
                max_lifetime = max_lifetime.max(Duration::from_secs(client.lifetime));
                clients.push(client);
            }
        }
        if self.errors.len() > before {
            return None;
        }
        let now = crate::oauth::unix_now();
        let mut seen = RETIRED_SEEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let keyring = match Keyring::new(keys, max_lifetime.as_secs(), seen.as_ref(), now) {
            Ok(ring) => ring,
            Err(e) => {
                self.error("oauth.signing_key", e.to_string());
                return None;
            }
        };
        match TokenService::new(
            &raw.issuer,
            raw.mtls_endpoint_base.as_deref(),
            clients,
            keyring,
            store,
        ) {
            Ok(service) => {
                *seen = Some(service.keyring().retired_until().clone());
                Some(Arc::new(service))
            }
            Err(e) => {
                self.error("oauth", e.to_string());
                None
            }
        }
    }

    fn oauth_client(
        &mut self,
        field: &str,
        c: &RawOAuthClient,
        raw: &RawOAuth,
        default_lifetime: Duration,
        has_store: bool,
    ) -> Option<Client> {
        let before = self.errors.len();
        if c.client_id.is_empty() || c.client_id.chars().any(|ch| ch.is_control()) {
            self.error(&format!("{field}.client_id"), "must be non-empty printable text".into());
        }
        let subjects: Vec<(&str, &String)> = [
            ("tls_client_auth_subject_dn", &c.tls_client_auth_subject_dn),
            ("tls_client_auth_san_dns", &c.tls_client_auth_san_dns),
            ("tls_client_auth_san_uri", &c.tls_client_auth_san_uri),
            ("tls_client_auth_san_ip", &c.tls_client_auth_san_ip),
            ("tls_client_auth_san_email", &c.tls_client_auth_san_email),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| (name, v)))
        .collect();
        let auth = match c.auth.as_str() {
            "tls_client_auth" => {
                if c.jwks.is_some() || !c.certificates.is_empty() {
                    self.error(
                        &format!("{field}.jwks"),
                        "jwks and certificates register self_signed_tls_client_auth clients; a \
                         tls_client_auth client names its CA (ca) and one subject value"
                            .into(),
                    );
                }
                let subject = match subjects.as_slice() {
                    [(name, value)] => self.subject_value(&format!("{field}.{name}"), name, value),
                    [] => {
                        self.error(
                            field,
                            "a tls_client_auth client registers exactly one of \
                             tls_client_auth_subject_dn, _san_dns, _san_uri, _san_ip, _san_email \
                             (RFC 8705 section 2.1.2); it has none"
                                .into(),
                        );
                        None
                    }
                    many => {
                        let names: Vec<&str> = many.iter().map(|(n, _)| *n).collect();
                        self.error(
                            field,
                            format!(
                                "a tls_client_auth client registers exactly one subject value \
                                 (RFC 8705 section 2.1.2); it has {}",
                                names.join(", ")
                            ),
                        );
                        None
                    }
                };
                let anchors = self.client_anchors(&format!("{field}.ca"), &c.ca);
                match (subject, anchors) {
                    (Some(subject), Some(anchors)) => Some(ClientAuth::Pki { anchors, subject }),
                    _ => None,
                }
            }
            "self_signed_tls_client_auth" => {
                if !subjects.is_empty() || !c.ca.is_empty() {
                    self.error(
                        field,
                        "a self_signed_tls_client_auth client registers its certificates (jwks \
                         or certificates), not a CA or subject value"
                            .into(),
                    );
                }
                self.self_signed(field, c)
            }
            other => {
                self.error(
                    &format!("{field}.auth"),
                    format!(
                        "{other:?}: use \"tls_client_auth\" or \"self_signed_tls_client_auth\""
                    ),
                );
                None
            }
        };
        for scope in c.scopes.iter().chain(c.default_scopes.iter().flatten()) {
            if let Some(problem) = scope_problem(scope) {
                self.error(&format!("{field}.scopes"), problem);
            }
        }
        if let Some(defaults) = &c.default_scopes
            && let Some(extra) = defaults.iter().find(|d| !c.scopes.contains(d))
        {
            self.error(
                &format!("{field}.default_scopes"),
                format!("{extra:?} is not one of the client's scopes"),
            );
        }
        let audience = c.audience.clone().unwrap_or_else(|| raw.audience.clone());
        if audience.is_empty() {
            self.error(
                &format!("{field}.audience"),
                "tokens need an audience (aud, RFC 9068): set audience on [oauth] or on the client"
                    .into(),
            );
        }
        let format = match c.token_format.as_deref() {
            None | Some("jwt") => TokenFormat::Jwt,
            Some("opaque") => {
                if !has_store {
                    self.error(
                        &format!("{field}.token_format"),
                        "opaque tokens are kept in a token store: set store = \"FILE\" on [oauth]"
                            .into(),
                    );
                }
                TokenFormat::Opaque
            }
            Some(other) => {
                self.error(
                    &format!("{field}.token_format"),
                    format!("{other:?}: use \"jwt\" or \"opaque\""),
                );
                TokenFormat::Jwt
            }
        };
        let lifetime = self.duration(
            &format!("{field}.token_lifetime"),
            c.token_lifetime.as_ref(),
            default_lifetime,
        );
        if self.errors.len() > before {
            return None;
        }
        Some(Client {
            id: c.client_id.clone(),
            auth: auth?,
            default_scopes: c.default_scopes.clone().unwrap_or_else(|| c.scopes.clone()),
            scopes: c.scopes.clone(),
            format,
            audience,
            lifetime: lifetime.as_secs(),
            introspect: c.introspect,
        })
    }

    fn subject_value(&mut self, field: &str, name: &str, value: &str) -> Option<SubjectValue> {
        let parsed = match name {
            "tls_client_auth_subject_dn" => {
                DnPattern::parse(value).map(SubjectValue::Dn).map_err(|e| e.to_string())
            }
            "tls_client_auth_san_ip" => value
                .parse()
                .map(SubjectValue::Ip)
                .map_err(|_| format!("{value:?} is not an IP address")),
            "tls_client_auth_san_dns" => Ok(SubjectValue::Dns(value.to_string())),
            "tls_client_auth_san_uri" => Ok(SubjectValue::Uri(value.to_string())),
            _ => Ok(SubjectValue::Email(value.to_string())),
        };
        match parsed {
            Ok(v) if !value.trim().is_empty() => Some(v),
            Ok(_) => {
                self.error(field, "is empty".into());
                None
            }
            Err(reason) => {
                self.error(field, reason);
                None
            }
        }
    }

    /// A `tls_client_auth` client's CA certificates: the anchors its chain must reach.
    fn client_anchors(&mut self, field: &str, files: &[String]) -> Option<TrustStore> {
        if files.is_empty() {
            self.error(
                field,
                "a tls_client_auth client names the CA certificate(s) its certificate must chain \
                 to (it is pinned to that CA's key, so another CA with the same name cannot \
                 impersonate it)"
                    .into(),
            );
            return None;
        }
        let mut anchors = Vec::new();
        for (i, file) in files.iter().enumerate() {
            anchors.extend(self.certs(&format!("{field}[{i}]"), file)?);
        }
        match TrustStore::from_der(anchors, Vec::new()) {
            Ok(store) => Some(store),
            Err(e) => {
                self.error(field, certgate_pki::error::with_causes(&e));
                None
            }
        }
    }

    fn self_signed(&mut self, field: &str, c: &RawOAuthClient) -> Option<ClientAuth> {
        let mut thumbprints = Vec::new();
        if let Some(file) = &c.jwks {
            let path = self.path(file);
            match std::fs::read(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                .and_then(|bytes| {
                    certgate_token::client::self_signed_thumbprints(&bytes)
                        .map_err(|e| format!("{}: {e}", path.display()))
                }) {
                Ok(t) => thumbprints.extend(t),
                Err(reason) => self.error(&format!("{field}.jwks"), reason),
            }
        }
        for (i, file) in c.certificates.iter().enumerate() {
            for der in self.certs(&format!("{field}.certificates[{i}]"), file)?.iter().take(1) {
                match certgate_pki::identity::PeerIdentity::from_der(der) {
                    Ok(id) => thumbprints.push(id.x5t_s256),
                    Err(e) => self.error(
                        &format!("{field}.certificates[{i}]"),
                        certgate_pki::error::with_causes(&e),
                    ),
                }
            }
        }
        if thumbprints.is_empty() {
            self.error(
                field,
                "a self_signed_tls_client_auth client registers its certificate(s): jwks = \
                 \"FILE\" (keys with x5c) or certificates = [\"FILE\"]"
                    .into(),
            );
            return None;
        }
        Some(ClientAuth::SelfSigned { thumbprints })
    }

    /// A route's `[route.token]`.
    pub(super) fn token_check(
        &mut self,
        field: &str,
        t: &RawTokenCheck,
        oauth: OAuthService<'_>,
        upstreams: &HashMap<String, Arc<Upstream>>,
    ) -> Option<Arc<TokenCheck>> {
        let before = self.errors.len();
        if t.audience.is_empty() {
            self.error(
                &format!("{field}.audience"),
                "name the audience this API is (the tokens' aud must include it)".into(),
            );
        }
        let local = oauth.built().filter(|s| s.issuer() == t.issuer);
        // Set when the check needs the token service and it did not build: the check fails,
        // and the service's own errors say why.
        let mut unbuilt = matches!(oauth, OAuthService::Broken { issuer } if issuer == t.issuer)
            && t.jwks.is_none()
            && t.jwks_url.is_none();
        let upstream = |b: &mut Builder, field: &str, name: &str| -> Option<Arc<Upstream>> {
            let found = upstreams.get(name).cloned();
            if found.is_none() {
                b.error(field, format!("no upstream named {name:?}"));
            }
            found
        };
        let keys = match (&t.jwks, &t.jwks_url) {
            (Some(_), Some(_)) => {
                self.error(field, "set jwks or jwks_url, not both".into());
                None
            }
            (Some(file), None) => {
                let path = self.path(file);
                match std::fs::read(&path) {
                    Ok(bytes) => match KeySet::from_jwks(&bytes) {
                        Ok(keys) => Some(Keys::Fixed(keys)),
                        Err(e) => {
                            self.error(
                                &format!("{field}.jwks"),
                                format!("{}: {e}", path.display()),
                            );
                            None
                        }
                    },
                    Err(e) => {
                        self.error(
                            &format!("{field}.jwks"),
                            format!("cannot read {}: {e}", path.display()),
                        );
                        None
                    }
                }
            }
            (None, Some(url)) => {
                let up = upstream(self, &format!("{field}.jwks_url.upstream"), &url.upstream);
                let refresh = self.duration(
                    &format!("{field}.jwks_url.refresh"),
                    url.refresh.as_ref(),
                    DEFAULT_JWKS_REFRESH,
                );
                if !url.path.starts_with('/') {
                    self.error(&format!("{field}.jwks_url.path"), "must start with /".into());
                }
                up.map(|up| Keys::Remote(RemoteJwks::new(up, url.path.clone(), refresh)))
            }
            (None, None) => match local {
                Some(service) => Some(Keys::Fixed(KeySet::from_keyring(
                    service.keyring(),
                    crate::oauth::unix_now(),
                ))),
                None if unbuilt => None,
                None => {
                    self.error(
                        field,
                        format!(
                            "set jwks (a file) or jwks_url with the keys of issuer {:?}, or make \
                             it the issuer of [oauth] to use the built-in service's keys",
                            t.issuer
                        ),
                    );
                    None
                }
            },
        };
        let names: Vec<String> = if t.algorithms.is_empty() {
            DEFAULT_ALGORITHMS.iter().map(|a| a.to_string()).collect()
        } else {
            t.algorithms.clone()
        };
        let algorithms = match allowed_algorithms(&names) {
            Ok(a) => a,
            Err(reason) => {
                self.error(&format!("{field}.algorithms"), reason);
                Vec::new()
            }
        };
        for scope in &t.scopes {
            if let Some(problem) = scope_problem(scope) {
                self.error(&format!("{field}.scopes"), problem);
            }
        }
        let leeway = self.duration(&format!("{field}.leeway"), t.leeway.as_ref(), DEFAULT_LEEWAY);
        if leeway > MAX_LEEWAY {
            self.error(&format!("{field}.leeway"), "at most 5m".into());
        }
        let realm = t.realm.clone().unwrap_or_else(|| "api".into());
        if !realm.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
            self.error(&format!("{field}.realm"), "printable ASCII without '\"' or '\\'".into());
        }
        let (mut cache_ttl, mut in_flight) = (DEFAULT_CACHE_TTL, DEFAULT_MAX_IN_FLIGHT);
        let phantom = match &t.introspection {
            None => None,
            Some(i) => {
                let ifield = format!("{field}.introspection");
                cache_ttl =
                    self.duration(&format!("{ifield}.cache_ttl"), i.cache_ttl.as_ref(), cache_ttl);
                in_flight = i.max_in_flight.unwrap_or(in_flight);
                if in_flight == 0 {
                    self.error(&format!("{ifield}.max_in_flight"), "must be at least 1".into());
                }
                if i.upstream == "@oauth" {
                    match oauth {
                        OAuthService::Built(service) => Some(Phantom::Local {
                            service: service.clone(),
                            in_flight: Arc::new(Semaphore::new(in_flight.max(1))),
                        }),
                        OAuthService::Broken { .. } => {
                            unbuilt = true;
                            None
                        }
                        OAuthService::Absent => {
                            self.error(
                                &format!("{ifield}.upstream"),
                                "\"@oauth\" is the built-in token service; add [oauth]".into(),
                            );
                            None
                        }
                    }
                } else {
                    if t.jwks.is_none() && t.jwks_url.is_none() {
                        self.error(
                            &ifield,
                            "the JWT an authorization server answers is verified with its keys: \
                             set jwks or jwks_url"
                                .into(),
                        );
                    }
                    let path = match &i.path {
                        Some(p) if p.starts_with('/') => p.clone(),
                        _ => {
                            self.error(
                                &format!("{ifield}.path"),
                                "the introspection endpoint's path, starting with / (the server \
                                 must answer Accept: application/jwt, as Curity does)"
                                    .into(),
                            );
                            String::new()
                        }
                    };
                    let basic_auth = match (&i.client_secret_file, &i.client_id) {
                        (None, _) => None,
                        (Some(_), None) => {
                            self.error(
                                &format!("{ifield}.client_secret_file"),
                                "a client secret goes with a client_id".into(),
                            );
                            None
                        }
                        (Some(file), Some(id)) => {
                            let path = self.path(file);
                            match certgate_pki::fs::read_password(&path) {
                                Ok(secret) => match String::from_utf8(secret) {
                                    Ok(secret) => crate::oauth::introspect::basic_auth(id, &secret),
                                    Err(_) => {
                                        self.error(
                                            &format!("{ifield}.client_secret_file"),
                                            format!(
                                                "{}: the secret is not UTF-8 text",
                                                path.display()
                                            ),
                                        );
                                        None
                                    }
                                },
                                Err(e) => {
                                    self.error(
                                        &format!("{ifield}.client_secret_file"),
                                        certgate_pki::error::with_causes(&e),
                                    );
                                    None
                                }
                            }
                        }
                    };
                    upstream(self, &format!("{ifield}.upstream"), &i.upstream).map(|up| {
                        Phantom::Remote(Arc::new(Introspector {
                            upstream: up,
                            path,
                            client_id: i.client_id.clone(),
                            basic_auth,
                            in_flight: Arc::new(Semaphore::new(in_flight.max(1))),
                        }))
                    })
                }
            }
        };
        let cache_size = t.cache_size.unwrap_or(DEFAULT_CACHE_SIZE);
        if cache_size == 0 || cache_size > 1_000_000 {
            self.error(&format!("{field}.cache_size"), "between 1 and 1000000".into());
        }
        if self.errors.len() > before || unbuilt {
            return None;
        }
        let verifier = Verifier {
            issuer: t.issuer.clone(),
            audience: t.audience.clone(),
            algorithms,
            leeway: leeway.as_secs(),
            require_at_jwt: !t.allow_plain_jwt_typ,
        };
        Some(Arc::new(TokenCheck::new(
            verifier,
            keys?,
            phantom,
            t.scopes.clone(),
            t.require_binding,
            realm,
            cache_ttl,
            cache_size,
        )))
    }
}
