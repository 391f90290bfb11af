//! OAuth in the gateway (docs/oauth.md):
//!
//! - [`service`]: the built-in token service served as a route target (`upstream = "@oauth"`):
//!   client credentials with mTLS client authentication, JWKS, RFC 8414 metadata and RFC 7662
//!   introspection, all from `certgate-token`;
//! - [`check`]: a route's `[route.token]` phase: bearer token, signature and claims, phantom
//!   swap of opaque tokens, proof of possession against this connection's certificate, scopes;
//! - [`introspect`]: the introspection client for phantom tokens from another authorization
//!   server, bounded in body size, in-flight calls and cache;
//! - [`store`]: opaque tokens kept in the inventory database.

pub mod check;
pub mod introspect;
pub mod service;
pub mod store;

use crate::tls::server::ClientCert;

/// The `x5t#S256` of the certificate this connection proved possession of: a verified one,
/// or one that failed verification but still signed the handshake (RFC 8705 section 3 needs
/// only proof of possession).
pub fn presented_x5t(client: &ClientCert) -> Option<&str> {
    match client {
        ClientCert::Verified { identity, .. } => Some(&identity.x5t_s256),
        ClientCert::Failed { identity: Some(identity), .. } => Some(&identity.x5t_s256),
        ClientCert::Failed { identity: None, .. } | ClientCert::None => None,
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
