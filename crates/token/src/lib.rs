//! certgate-token: certificate-bound OAuth access tokens, for the token service the gateway
//! serves and for the checks it makes on API routes (see docs/oauth.md).
//!
//! - [`service::TokenService`]: the authorization server's endpoints (client credentials
//!   token, JWKS, RFC 8414 metadata, RFC 7662 introspection) with mTLS client authentication
//!   ([`client`]: `tls_client_auth` and `self_signed_tls_client_auth`, RFC 8705 section 2);
//! - [`jwt`]: RFC 9068 access tokens signed with [`keys::Keyring`] keys, and
//!   [`jwt::Verifier`], the resource-server check in the order that avoids the known traps;
//! - [`binding`]: the proof-of-possession check (`cnf.x5t#S256`, RFC 8705 section 3);
//! - [`form`], [`error`], [`cache`]: the pieces those are built from.
//!
//! Everything here is synchronous and reaches no network: the gateway feeds it the request
//! and the connection's certificate, and runs the store behind [`service::TokenStore`].

pub mod binding;
pub mod cache;
pub mod client;
pub mod error;
pub mod form;
pub mod jwt;
pub mod keys;
pub mod ott;
pub mod service;

/// SHA-256 of `bytes`: how tokens are keyed in caches and stores (never by their text).
pub fn token_hash(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// `n` random bytes, base64url without padding: token handles and `jti` values.
pub fn random_b64(n: usize) -> Result<String, aws_lc_rs::error::Unspecified> {
    use base64::Engine;
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}
