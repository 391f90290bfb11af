//! The errors of the PKI crate. Every variant carries what a person needs to fix the problem:
//! the file, the field or value, and the reason.
//!
//! A variant that wraps another error keeps it as its `#[source]` only, never in its own
//! message: `main` prints the whole chain (`{:#}`), so the cause appears exactly once.

use std::path::PathBuf;

use time::{Duration, OffsetDateTime};

/// Everything that can go wrong while running the CA or loading PKI material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} already exists; pass --force to overwrite it")]
    Exists { path: PathBuf },
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error("no CA in {dir}: {reason}")]
    NoCa { dir: PathBuf, reason: &'static str },
    #[error("{dir} already holds a CA ({existing}); pass --force to replace it")]
    CaExists { dir: PathBuf, existing: PathBuf },
    #[error("wrong password for {path} (or the file is corrupt)")]
    WrongPassword { path: PathBuf },
    #[error("{path} is encrypted; give its password with --password-file")]
    PasswordNeeded { path: PathBuf },
    #[error("password file {path} is empty")]
    EmptyPassword { path: PathBuf },
    #[error("invalid SAN {value:?}: {reason}")]
    InvalidSan { value: String, reason: String },
    #[error(
        "the SANs mix client identities ({}) with server names ({}); say what the certificate \
         is for with --profile server (TLS server), --profile client (TLS client) or --profile \
         dual (both)",
        client.join(", "),
        server.join(", ")
    )]
    AmbiguousProfile { client: Vec<String>, server: Vec<String> },
    #[error("invalid name constraint {value:?}: {reason}")]
    InvalidNameConstraint { value: String, reason: String },
    #[error("{reason}; not issued, since every verifier would refuse it")]
    OutsideNameConstraints { names: Vec<String>, reason: String },
    #[error("invalid CA option: {reason}")]
    InvalidCaOption { reason: &'static str },
    #[error("invalid subject {value:?}: {reason}")]
    InvalidSubject { value: String, reason: String },
    #[error("invalid name {value:?}: {reason}")]
    InvalidName { value: String, reason: &'static str },
    #[error("invalid CRL URL {value:?}: {reason}")]
    InvalidCrlUrl { value: String, reason: &'static str },
    #[error("the CA in {dir} has no intermediate (it was made with --no-intermediate): {reason}")]
    NoIntermediate { dir: PathBuf, reason: &'static str },
    #[error("invalid validity: {reason}")]
    InvalidValidity { reason: String },
    #[error("--{unit} {value}: a certificate lifetime is at most {max} {unit}")]
    LifetimeTooLong { unit: &'static str, value: u32, max: u32 },
    #[error(
        "{what}: {} plus {by} is past the last date certgate can represent",
        crate::validity::format_time(*from)
    )]
    TimeOutOfRange { what: &'static str, from: OffsetDateTime, by: Duration },
    #[error("invalid duration {value:?}: {reason}")]
    InvalidDuration { value: String, reason: &'static str },
    #[error("CSR {source_name}: {reason}")]
    CsrRejected { source_name: String, reason: String },
    #[error("no certificate with serial or name {query:?} in the inventory")]
    UnknownCertificate { query: String },
    #[error(
        "certificate {name} (serial {serial}) is revoked and cannot be renewed; issue a new one: \
         certgate cert issue {name} ... --force"
    )]
    RenewRevoked { serial: String, name: String },
    #[error(
        "certificate {name} (serial {serial}) was already renewed as serial {by}; renew the \
         current one: certgate cert renew {name}"
    )]
    RenewSuperseded { serial: String, name: String, by: String },
    #[error(
        "the CSR is for the key certificate {name} (serial {serial}) already has; a rekey \
         needs a new key"
    )]
    RekeySameKey { serial: String, name: String },
    #[error("token already used (jti {jti:?})")]
    TokenUsed { jti: String },
    #[error(
        "{path} does not hold {what} being renewed (serial {serial}), so renew will not \
         replace it; pass --force to overwrite it, or --out-dir for another directory"
    )]
    NotRenewedFile { path: PathBuf, what: &'static str, serial: String },
    #[error("certificate {serial} is already revoked (since {revoked_at})")]
    AlreadyRevoked { serial: String, revoked_at: String },
    #[error("{path}: the private key does not belong to the certificate")]
    KeyMismatch { path: PathBuf },
    #[error("key type {key_type}: {reason}")]
    KeyType { key_type: String, reason: &'static str },
    #[error("inventory {path}")]
    Store {
        path: PathBuf,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("certificate generation failed")]
    Generate(#[from] rcgen::Error),
    #[error("PKCS#12 export failed: {reason}")]
    Pkcs12 { reason: String },
    #[error("cryptographic operation failed: {what}")]
    Crypto { what: &'static str },
}

impl PkiError {
    pub(crate) fn bad_file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        PkiError::BadFile { path: path.into(), reason: reason.into() }
    }
}

/// An error followed by each of its causes, joined with ": ", for reports that hold one line
/// per problem (the gateway's configuration errors) rather than printing the chain with `{:#}`.
pub fn with_causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An OS error appears once in the printed chain: in the cause, not also in the message.
    #[test]
    fn os_error_is_printed_once() {
        let dir = tempfile::tempdir().unwrap();
        let err = crate::fs::read(&dir.path().join("absent.crt")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot read {}", dir.path().join("absent.crt").display())
        );
        let full = with_causes(&err);
        assert_eq!(full.matches("No such file or directory").count(), 1, "{full}");
    }
}
