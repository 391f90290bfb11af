//! certgate-pki: the certificate authority and the path validation that certgate's CLI and
//! gateway share.
//!
//! Everything here is synchronous and free of any async runtime, so `certgate verify` and the
//! gateway's client-certificate verifier run the very same code ([`verify::TrustStore`]).
//!
//! - [`ca::Authority`]: a CA directory (root, optional intermediate, inventory) that issues,
//!   signs CSRs, renews, revokes and publishes CRLs;
//! - [`verify`]: path validation with reasons a person can act on, and
//!   [`chain_cache::CachingVerifier`], which remembers chains that verified;
//! - [`identity::PeerIdentity`]: what a verified leaf says about its holder;
//! - [`inspect`], [`pkcs12`], [`store`], [`fs`]: the pieces those are built from.

pub mod ca;
pub mod chain_cache;
pub mod crl;
pub mod csr;
pub mod dn;
pub mod dn_match;
pub mod error;
pub mod fs;
#[cfg(feature = "testkit")]
pub mod fuzz;
pub mod identity;
pub mod inspect;
pub mod issue;
pub mod keys;
pub mod names;
pub mod pem;
pub mod pkcs12;
pub mod profile;
pub mod provisioner;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod validity;
pub mod verify;

pub use error::PkiError;
