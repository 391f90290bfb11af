//! The TOML file as written: plain serde structs, unknown fields refused. `super::build` turns
//! them into [`super::Config`] once; nothing else reads these.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default, rename = "listener")]
    pub listeners: Vec<RawListener>,
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<RawUpstream>,
    #[serde(default, rename = "passthrough")]
    pub passthroughs: Vec<RawPassthrough>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub access_log: RawAccessLog,
    #[serde(default)]
    pub runtime: RawRuntime,
    pub admin: Option<RawAdmin>,
    /// The built-in OAuth token service (routes reach it with `upstream = "@oauth"`).
    pub oauth: Option<RawOAuth>,
    /// Where managed certificates and their keys are kept (mode 0700).
    pub state_dir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOAuth {
    /// `https://auth.example.com`: the `iss` of every token, byte for byte.
    pub issuer: String,
    /// Where the mTLS endpoints are, when not under the issuer (RFC 8705 section 5).
    pub mtls_endpoint_base: Option<String>,
    /// SQLite file for opaque tokens (needed by clients with `token_format = "opaque"`).
    pub store: Option<String>,
    /// Default `aud` of tokens.
    #[serde(default)]
    pub audience: Vec<String>,
    /// Default token lifetime.
    pub token_lifetime: Option<String>,
    #[serde(default, rename = "signing_key")]
    pub signing_keys: Vec<RawSigningKey>,
    #[serde(default, rename = "client")]
    pub clients: Vec<RawOAuthClient>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigningKey {
    pub key: String,
    pub alg: Option<String>,
    /// "next", "active" or "retired".
    pub state: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOAuthClient {
    pub client_id: String,
    /// "tls_client_auth" or "self_signed_tls_client_auth".
    pub auth: String,
    /// tls_client_auth: the CA certificate(s) this client's certificate must chain to.
    #[serde(default)]
    pub ca: Vec<String>,
    pub tls_client_auth_subject_dn: Option<String>,
    pub tls_client_auth_san_dns: Option<String>,
    pub tls_client_auth_san_uri: Option<String>,
    pub tls_client_auth_san_ip: Option<String>,
    pub tls_client_auth_san_email: Option<String>,
    /// self_signed_tls_client_auth: a JWKS whose keys carry the certificates (`x5c`)...
    pub jwks: Option<String>,
    /// ...or the certificate files themselves.
    #[serde(default)]
    pub certificates: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub default_scopes: Option<Vec<String>>,
    pub audience: Option<Vec<String>>,
    /// "jwt" (default) or "opaque".
    pub token_format: Option<String>,
    pub token_lifetime: Option<String>,
    #[serde(default)]
    pub introspect: bool,
}

/// A route's access-token check.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenCheck {
    pub issuer: String,
    pub audience: Vec<String>,
    /// A JWKS file with the issuer's keys; without it (and without `jwks_url`), the issuer
    /// must be `[oauth]`'s and its keys are used in-process.
    pub jwks: Option<String>,
    /// The issuer's JWKS by URL, fetched through a configured upstream.
    pub jwks_url: Option<RawJwksUrl>,
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// Every one of these scopes is needed (403 otherwise).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Refuse tokens without a certificate binding (`cnf`).
    #[serde(default)]
    pub require_binding: bool,
    pub leeway: Option<String>,
    pub realm: Option<String>,
    /// Accept `typ: JWT` access tokens (RFC 9068 wants `at+jwt`).
    #[serde(default)]
    pub allow_plain_jwt_typ: bool,
    /// Phantom tokens: opaque tokens are introspected and swapped for a JWT.
    pub introspection: Option<RawIntrospection>,
    /// Verified results kept (by the token's hash), at most this many.
    pub cache_size: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwksUrl {
    /// The `[[upstream]]` that serves it (its `ca` pins the server).
    pub upstream: String,
    pub path: String,
    /// How often it is fetched again.
    pub refresh: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntrospection {
    /// `"@oauth"` for the built-in service, or an `[[upstream]]` name.
    pub upstream: String,
    /// The introspection path on that upstream.
    pub path: Option<String>,
    /// The gateway's client_id at the authorization server.
    pub client_id: Option<String>,
    /// A file holding the gateway's client secret there (sent as HTTP Basic,
    /// client_secret_basic); without it the gateway authenticates with the upstream's
    /// client certificate.
    pub client_secret_file: Option<String>,
    /// How long an answer is kept at most (and never past the token's exp).
    pub cache_ttl: Option<String>,
    /// How many introspection calls may be in flight; more get 503.
    pub max_in_flight: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: String,
    /// Plain HTTP on an address other than loopback: anyone who reaches it can reload.
    #[serde(default)]
    pub dangerous_non_loopback: bool,
    /// Server certificates: with them (and `client_auth`), the admin listener speaks mTLS.
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
    pub client_auth: Option<RawClientAuth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<String>,
    pub listen: String,
    #[serde(default)]
    pub min_tls_version: Option<String>,
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
    #[serde(default)]
    pub client_auth: Option<RawClientAuth>,
    #[serde(default)]
    pub limits: RawLimits,
    /// Refuse requests whose Host differs from the SNI (421). Default: on when client
    /// certificates are requested.
    pub sni_host_check: Option<bool>,
    /// Addresses or networks (`10.0.0.0/8`) of front proxies whose `X-Forwarded-For` and
    /// `Forwarded` headers are kept and appended to. Default: none (replaced).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Client-certificate policies of their own for some server names.
    #[serde(default, rename = "sni")]
    pub sni_policies: Vec<RawSniPolicy>,
    /// Load balancers whose connections start with a PROXY protocol header (v1 or v2).
    #[serde(default)]
    pub proxy_protocol_from: Vec<String>,
    /// What a ClientHello without SNI gets: "terminate" (default), "refuse", or the name of a
    /// passthrough route.
    pub no_sni: Option<String>,
    /// Custom bodies (and statuses) for the gateway's own answers on this listener.
    #[serde(default, rename = "error_page")]
    pub error_pages: Vec<RawErrorPage>,
}

/// A client-certificate policy for some of a listener's server names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSniPolicy {
    /// `admin.example.com`, `*.example.com`.
    pub names: Vec<String>,
    pub client_auth: Option<RawClientAuth>,
}

/// TLS relayed by SNI to a TCP upstream, undecrypted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassthrough {
    pub name: String,
    /// Only on this listener; default: every listener.
    pub listener: Option<String>,
    /// Server names (`idp.example.com`, `*.example.com`).
    #[serde(default)]
    pub sni: Vec<String>,
    /// `host:port` of the upstream that terminates TLS itself.
    pub upstream: String,
    pub connect_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    /// `"v2"`: send a PROXY protocol v2 header first.
    pub proxy_protocol: Option<String>,
    /// Client addresses or networks allowed; default: any.
    #[serde(default)]
    pub allow: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawErrorPage {
    /// The gateway answers it applies to (495, 496, …); empty: all.
    #[serde(default)]
    pub on: Vec<u16>,
    /// The status sent instead.
    pub status: Option<u16>,
    /// Template files: HTML for browsers, JSON for API clients.
    pub html: Option<String>,
    pub json: Option<String>,
}

/// A server certificate: its files, or a managed certificate (a table with `managed`).
#[derive(Debug)]
pub enum RawCertificate {
    Files(RawCertFiles),
    Managed(RawManaged),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertFiles {
    pub cert: String,
    pub key: String,
}

/// An upstream's `client_cert`: a file (its key in `client_key`), or a managed certificate.
#[derive(Debug)]
pub enum RawClientCert {
    File(String),
    Managed(RawManaged),
}

impl<'de> Deserialize<'de> for RawCertificate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = toml::Value::deserialize(d)?;
        if value.get("managed").is_some() {
            return managed(value).map(RawCertificate::Managed);
        }
        value.try_into().map(RawCertificate::Files).map_err(|e| {
            serde::de::Error::custom(format!(
                "{}; a certificate from the online CA is {{ managed = \"NAME\", ... }}",
                e.message()
            ))
        })
    }
}

impl<'de> Deserialize<'de> for RawClientCert {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::String(file) => Ok(RawClientCert::File(file)),
            table @ toml::Value::Table(_) => managed(table).map(RawClientCert::Managed),
            _ => Err(serde::de::Error::custom(
                "a file name, or { managed = \"NAME\", ... } for a certificate from the online CA",
            )),
        }
    }
}

/// A managed certificate's table, which names no files of its own.
fn managed<E: serde::de::Error>(value: toml::Value) -> Result<RawManaged, E> {
    if value.get("cert").is_some() || value.get("key").is_some() {
        return Err(E::custom("a managed certificate has no cert or key files"));
    }
    value
        .try_into()
        .map_err(|e: toml::de::Error| E::custom(e.to_string().trim_end().replace('\n', " ")))
}

/// A certificate the gateway requests from the online CA and keeps renewed. A name declared
/// in several places must be declared alike; only one place needs the CA's fields.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawManaged {
    pub managed: String,
    pub ca_url: Option<String>,
    /// The CA's root certificate file, or
    pub root: Option<String>,
    /// its SHA-256 fingerprint (the root is then fetched and checked).
    pub fingerprint: Option<String>,
    /// A one-time token (`certgate ca token`) for the first certificate.
    pub token_file: Option<String>,
    pub lifetime: Option<String>,
    pub key_type: Option<String>,
    pub expires_in: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientAuth {
    pub mode: String,
    #[serde(default)]
    pub trust: Vec<String>,
    #[serde(default)]
    pub crls: Vec<String>,
    pub max_chain_depth: Option<u8>,
    #[serde(default)]
    pub allow_unknown_revocation: bool,
    #[serde(default)]
    pub full_chain_crls: bool,
    /// Keep using CRLs this long past their next update. Dangerous.
    pub dangerous_stale_crl_grace: Option<String>,
    /// How often CRLs given by URL are fetched again (default 5m).
    pub crl_refresh: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub handshake_timeout: Option<String>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_header_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub body_timeout: Option<String>,
    pub max_streams: Option<u32>,
    pub max_connection_age: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: String,
    pub url: String,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    /// CA file(s) that sign the upstream's certificate; default: the system roots.
    #[serde(default)]
    pub ca: Vec<String>,
    pub server_name: Option<String>,
    pub client_cert: Option<RawClientCert>,
    pub client_key: Option<String>,
    #[serde(default)]
    pub http2: bool,
    pub max_idle_connections: Option<usize>,
    pub max_connections: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<String>,
    pub listener: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub upstream: String,
    pub client_cert: Option<String>,
    pub allow: Option<RawAllow>,
    pub identity_headers: Option<String>,
    #[serde(default)]
    pub header_names: BTreeMap<String, String>,
    #[serde(default)]
    pub path_ignore_case: bool,
    #[serde(default)]
    pub path_ignore_trailing_dots: bool,
    pub max_body_bytes: Option<u64>,
    #[serde(default, rename = "error_page")]
    pub error_pages: Vec<RawErrorPage>,
    /// HTTP/1.1 upgrades forwarded to the upstream (`["websocket"]`); default: none.
    #[serde(default)]
    pub upgrades: Vec<String>,
    /// An upgraded connection with no byte either way for this long is closed.
    pub upgrade_idle_timeout: Option<String>,
    /// Check an OAuth access token on every request (RFC 6750, RFC 8705).
    pub token: Option<RawTokenCheck>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAllow {
    #[serde(default)]
    pub spiffe: Vec<String>,
    #[serde(default)]
    pub uri: Vec<String>,
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub email: Vec<String>,
    #[serde(default)]
    pub cn: Vec<String>,
    #[serde(default)]
    pub o: Vec<String>,
    #[serde(default)]
    pub ou: Vec<String>,
    #[serde(default)]
    pub issuer: Vec<String>,
    #[serde(default)]
    pub fingerprint_sha256: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub enabled: Option<bool>,
    /// A file to append to instead of stdout (reopened on SIGUSR1 and on reload).
    pub path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub worker_threads: Option<usize>,
    /// How long open connections get to finish after SIGTERM.
    pub shutdown_grace: Option<String>,
}
