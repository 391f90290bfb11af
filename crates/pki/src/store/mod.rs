//! The inventory: every certificate the CA issued, behind a backend-neutral interface.
//!
//! [`Inventory`] reads; [`InventoryTx`] writes, inside one transaction that commits only when
//! [`InventoryTx::commit`] is called (dropping it rolls back). Each issuance is recorded in the
//! same transaction that hands the certificate out, so a failed or killed issuance leaves no
//! row behind. [`SqliteInventory`] is the backend: `inventory.db` in the CA directory, 0600.
//!
//! The traits are object-safe (`Box<dyn Inventory>`), so a second backend (PostgreSQL, for
//! several CA replicas) is a second implementation, not a change to its callers. Every write
//! that depends on the current state is one conditional statement, so it stays race-free
//! under a database with concurrent writers.
//!
//! [`TokenInventory`] keeps opaque OAuth reference tokens, by their hash, in the same database
//! (or a file of its own).

use std::fmt;

use time::OffsetDateTime;

use crate::crl::{self, Reason};

mod sqlite;

pub use sqlite::{SCHEMA_VERSION, SqliteInventory};

/// Read access to the certificates issued, and the start of every write.
pub trait Inventory: Send {
    /// The certificate with this serial, if recorded.
    fn find(&self, serial: &Serial) -> Result<Option<Record>, StoreError>;

    /// The newest valid certificate named `name`, or else the newest of any status. For the
    /// CLI, where people type names; a network caller is pinned to a serial instead.
    fn latest_by_name(&self, name: &str) -> Result<Option<Record>, StoreError>;

    /// The certificates `filter` selects (the filter runs in the database), oldest issuance
    /// first.
    fn list(&self, filter: &ListFilter) -> Result<Vec<Record>, StoreError>;

    /// Starts a write transaction; dropping it without [`InventoryTx::commit`] rolls back.
    fn begin(&mut self) -> Result<Box<dyn InventoryTx + '_>, StoreError>;
}

/// Writes, inside one transaction.
pub trait InventoryTx {
    /// The certificate with this serial as this transaction sees it.
    fn find(&mut self, serial: &Serial) -> Result<Option<Record>, StoreError>;

    /// Records a newly issued certificate as valid. A serial already recorded is
    /// [`StoreError::Conflict`].
    fn insert(&mut self, r: &Record) -> Result<(), StoreError>;

    /// Marks `serial` revoked at `at`, unless it already is (one conditional update). An
    /// unknown serial is [`StoreError::NotFound`].
    fn revoke(
        &mut self,
        serial: &Serial,
        why: Reason,
        at: OffsetDateTime,
    ) -> Result<Revoked, StoreError>;

    /// Marks `old` superseded by `new` if it is still valid (one conditional update); a
    /// revoked or already superseded `old` is left as it is and reported. An unknown `old` is
    /// [`StoreError::NotFound`].
    fn supersede(&mut self, old: &Serial, new: &Serial) -> Result<Superseded, StoreError>;

    /// Marks every valid certificate named `name`, other than `new`, superseded by `new` (a
    /// re-issue of the name) and returns their serials, oldest first.
    fn supersede_name(&mut self, name: &str, new: &Serial) -> Result<Vec<Serial>, StoreError>;

    /// The revoked certificates issued by `issuer` (its RFC 4514 subject), for a CRL.
    fn revoked_by(&mut self, issuer: &str) -> Result<Vec<crl::Entry>, StoreError>;

    /// Records the one-time token `jti` (of `provisioner`, valid until `expires_at`) as used,
    /// in one conditional insert: `false` when it was already used (a replay). Rows expired at
    /// `now` are purged first.
    fn use_token(
        &mut self,
        jti: &str,
        provisioner: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Takes the next CRL number (1, 2, 3, ...), one sequence for every CA of the directory.
    fn next_crl_number(&mut self) -> Result<u64, StoreError>;

    /// Makes every write of this transaction durable.
    fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// Opaque OAuth reference tokens, kept by their SHA-256 hash with their expiry, so a restart
/// keeps them and replicas can share them. The token itself is never stored. Times are kept
/// to the second (rounded down). Each method is one statement.
pub trait TokenInventory: Send {
    /// Records a token. A hash already recorded is [`StoreError::Conflict`].
    fn put_token(&mut self, t: &StoredToken) -> Result<(), StoreError>;

    /// The token with this hash, or `None` when it is unknown, expired at `now`, or revoked.
    fn find_token(
        &self,
        hash: &[u8; 32],
        now: OffsetDateTime,
    ) -> Result<Option<StoredToken>, StoreError>;

    /// Marks the token revoked at `at`. `true` when this call revoked it; `false` when it is
    /// unknown (or already purged) or was already revoked.
    fn revoke_token(&mut self, hash: &[u8; 32], at: OffsetDateTime) -> Result<bool, StoreError>;

    /// Revokes every token of `client_id` that is neither revoked nor expired at `at`, and
    /// returns how many.
    fn revoke_client_tokens(
        &mut self,
        client_id: &str,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError>;

    /// Deletes the tokens expired at `now` (revoked or not) and returns how many.
    fn purge_tokens(&mut self, now: OffsetDateTime) -> Result<u64, StoreError>;
}

/// An opaque token as issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    /// SHA-256 of the token; the token itself is never stored.
    pub hash: [u8; 32],
    pub client_id: String,
    /// The JSON claims object (RFC 9068 claims including `cnf`), as issued.
    pub claims: String,
    pub issued_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// Why the inventory could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("the database is locked by another writer; try again")]
    Busy,
    #[error("{record} is already recorded")]
    Conflict { record: String },
    #[error("{record} is not recorded")]
    NotFound { record: String },
    #[error("{record} has an invalid {column}: {value:?} is {reason}")]
    Corrupt { record: String, column: &'static str, value: String, reason: &'static str },
    #[error("the database has schema version {found}; this certgate understands up to {known}")]
    NewerSchema { found: i64, known: i64 },
    #[error("database error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A certificate serial number: lowercase hex of its bytes, two digits a byte, as certgate
/// prints and stores it. Made once from user input ([`Serial::parse`]) or from DER.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Serial(String);

impl Serial {
    /// A serial as people write it: hex in any case, with or without `:` separators or a
    /// `0x` prefix (`0A:1B`, `0x0a1b`, `0a1b`). `None` when that leaves no hex digits, any
    /// other character, or an odd number of digits: then it is not a serial (the CLI then
    /// tries it as a name).
    pub fn parse(text: &str) -> Option<Serial> {
        let text = text.trim();
        let text = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")).unwrap_or(text);
        let hex: String = text.chars().filter(|c| *c != ':').collect();
        let well_formed = !hex.is_empty()
            && hex.len().is_multiple_of(2)
            && hex.chars().all(|c| c.is_ascii_hexdigit());
        well_formed.then(|| Serial(hex.to_ascii_lowercase()))
    }

    /// The serial of a certificate whose DER serial bytes are `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Serial {
        Serial(crate::identity::hex(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The serial's bytes, as a CRL lists them.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Every Serial holds an even number of hex digits (parse and from_bytes), so each pair
        // parses; `filter_map` only keeps this free of a panic path.
        (0..self.0.len() / 2)
            .filter_map(|i| u8::from_str_radix(self.0.get(2 * i..2 * i + 2)?, 16).ok())
            .collect()
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// The recorded state of a certificate. Expiry is not stored: it follows from `not_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Valid,
    Revoked,
    /// Renewed: a newer certificate replaces it. It stays usable until it expires.
    Superseded,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Valid => "valid",
            Status::Revoked => "revoked",
            Status::Superseded => "superseded",
        }
    }

    /// The status stored as `s`, or `None` for a value certgate never writes (which a backend
    /// reports as [`StoreError::Corrupt`], never as some default).
    pub fn parse(s: &str) -> Option<Status> {
        [Status::Valid, Status::Revoked, Status::Superseded].into_iter().find(|v| v.as_str() == s)
    }
}

/// The status a person sees at some time: the recorded [`Status`], with `expired` derived from
/// `not_after` (revoked wins over expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effective {
    Valid,
    Revoked,
    Expired,
    Superseded,
}

impl Effective {
    pub const ALL: [Effective; 4] =
        [Effective::Valid, Effective::Revoked, Effective::Expired, Effective::Superseded];

    pub fn as_str(self) -> &'static str {
        match self {
            Effective::Valid => "valid",
            Effective::Revoked => "revoked",
            Effective::Expired => "expired",
            Effective::Superseded => "superseded",
        }
    }
}

impl std::str::FromStr for Effective {
    type Err = String;

    fn from_str(s: &str) -> Result<Effective, String> {
        Effective::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not valid, revoked, expired or superseded"))
    }
}

impl fmt::Display for Effective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One issued certificate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Record {
    pub serial: Serial,
    pub name: String,
    pub subject: String,
    /// `KIND:value` strings (`DNS:api.example.com`, `URI:spiffe://...`).
    pub sans: Vec<String>,
    pub profile: String,
    pub issuer: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    #[serde(skip)]
    pub status: Status,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    pub revocation_reason: Option<String>,
    pub superseded_by: Option<Serial>,
    #[serde(skip)]
    pub der: Vec<u8>,
}

impl Record {
    /// The status a person cares about at `now`: revoked wins, then expired, then the record.
    pub fn effective_status(&self, now: OffsetDateTime) -> Effective {
        match self.status {
            Status::Revoked => Effective::Revoked,
            _ if self.not_after <= now => Effective::Expired,
            Status::Valid => Effective::Valid,
            Status::Superseded => Effective::Superseded,
        }
    }
}

/// What [`Inventory::list`] selects. Every filter is optional; each one given must match.
#[derive(Debug, Clone)]
pub struct ListFilter {
    /// The time statuses and expiry are judged at.
    pub now: OffsetDateTime,
    /// Only certificates that are neither revoked nor expired and expire by this time.
    pub expiring_before: Option<OffsetDateTime>,
    /// Only certificates with this status at `now`.
    pub status: Option<Effective>,
    /// Only certificates with this name.
    pub name: Option<String>,
}

impl ListFilter {
    /// Every certificate.
    pub fn all(now: OffsetDateTime) -> ListFilter {
        ListFilter { now, expiring_before: None, status: None, name: None }
    }
}

/// What [`InventoryTx::revoke`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked now.
    Newly,
    /// It was already revoked, at `at`; nothing changed.
    Already { at: OffsetDateTime },
}

/// What [`InventoryTx::supersede`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Superseded {
    /// It was valid and is now superseded.
    Newly,
    /// It is revoked; nothing changed.
    Revoked,
    /// It was already superseded, by `by`; nothing changed.
    Already { by: Option<Serial> },
}

/// The certificate a person means by `query`: the serial it spells, if recorded, or else the
/// latest certificate named `query` ([`Inventory::latest_by_name`]). A CLI convenience; a
/// network caller must be pinned to a serial ([`Inventory::find`]).
pub fn by_serial_or_name(
    inventory: &dyn Inventory,
    query: &str,
) -> Result<Option<Record>, StoreError> {
    if let Some(serial) = Serial::parse(query)
        && let Some(found) = inventory.find(&serial)?
    {
        return Ok(Some(found));
    }
    inventory.latest_by_name(query)
}
