//! The errors of the PKI crate. Every variant carries what a person needs to fix the problem:
//! the file, the field or value, and the reason.

use std::path::PathBuf;

/// Everything that can go wrong while running the CA or loading PKI material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
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
    #[error("invalid name {value:?}: {reason}")]
    InvalidName { value: String, reason: &'static str },
    #[error("invalid validity: {reason}")]
    InvalidValidity { reason: String },
    #[error("invalid duration {value:?}: {reason}")]
    InvalidDuration { value: String, reason: &'static str },
    #[error("CSR {source_name}: {reason}")]
    CsrRejected { source_name: String, reason: String },
    #[error("no certificate with serial or name {query:?} in the inventory")]
    UnknownCertificate { query: String },
    #[error("certificate {serial} is already revoked (since {revoked_at})")]
    AlreadyRevoked { serial: String, revoked_at: String },
    #[error("{path}: the private key does not belong to the certificate")]
    KeyMismatch { path: PathBuf },
    #[error("key type {key_type}: {reason}")]
    KeyType { key_type: String, reason: &'static str },
    #[error("inventory {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("certificate generation failed: {0}")]
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
