//! The inventory: every certificate the CA issued, in an embedded SQLite database inside the CA
//! directory (`inventory.db`, mode 0600). Each issuance is recorded in the same transaction
//! that hands the certificate out, so a failed or killed issuance leaves no row behind.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use time::OffsetDateTime;

use crate::PkiError;
use crate::crl::Reason;

/// Schema version stored in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS certificates (
    serial            TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    subject           TEXT NOT NULL,
    sans              TEXT NOT NULL,
    profile           TEXT NOT NULL,
    issuer            TEXT NOT NULL,
    not_before        INTEGER NOT NULL,
    not_after         INTEGER NOT NULL,
    issued_at         INTEGER NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('valid', 'revoked', 'superseded')),
    revoked_at        INTEGER,
    revocation_reason TEXT,
    superseded_by     TEXT,
    der               BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS certificates_name ON certificates(name);
CREATE INDEX IF NOT EXISTS certificates_not_after ON certificates(not_after);
CREATE TABLE IF NOT EXISTS crl_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    last_number INTEGER NOT NULL
);
";

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

    fn parse(s: &str) -> Status {
        match s {
            "revoked" => Status::Revoked,
            "superseded" => Status::Superseded,
            _ => Status::Valid,
        }
    }
}

/// One issued certificate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Record {
    pub serial: String,
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
    pub superseded_by: Option<String>,
    #[serde(skip)]
    pub der: Vec<u8>,
}

impl Record {
    /// The status a person cares about at `now`: revoked wins, then expired, then the record.
    pub fn effective_status(&self, now: OffsetDateTime) -> &'static str {
        match self.status {
            Status::Revoked => "revoked",
            _ if self.not_after <= now => "expired",
            other => other.as_str(),
        }
    }
}

/// Filters for [`Store::list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only certificates that are not revoked and expire before this time (and have not yet).
    pub expiring_before: Option<OffsetDateTime>,
    /// Only certificates whose effective status is this (`valid`, `revoked`, `expired`,
    /// `superseded`).
    pub status: Option<String>,
}

/// The inventory database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the inventory at `path`, mode 0600.
    pub fn open(path: &Path) -> Result<Store, PkiError> {
        let err = |source| PkiError::Store { path: path.to_path_buf(), source };
        let conn = Connection::open(path).map_err(err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(err)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;").map_err(err)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(err)?;
        if version > SCHEMA_VERSION {
            return Err(PkiError::bad_file(
                path,
                format!("inventory schema {version} is newer than this certgate understands"),
            ));
        }
        conn.execute_batch(SCHEMA).map_err(err)?;
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}")).map_err(err)?;
        Ok(Store { conn, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` inside one transaction and commits only if it succeeds.
    pub fn transaction<T>(
        &mut self,
        work: impl FnOnce(&mut Tx<'_>) -> Result<T, PkiError>,
    ) -> Result<T, PkiError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction()
            .map_err(|source| PkiError::Store { path: path.clone(), source })?;
        let mut wrapped = Tx { tx, path: path.clone() };
        let out = work(&mut wrapped)?;
        wrapped.tx.commit().map_err(|source| PkiError::Store { path, source })?;
        Ok(out)
    }

    /// Finds a certificate by serial (hex, any case, colons allowed) or, failing that, by name
    /// (the most recently issued certificate with that name).
    pub fn find(&self, query: &str) -> Result<Record, PkiError> {
        let err = |source| PkiError::Store { path: self.path.clone(), source };
        let serial = normalize_serial(query);
        let by_serial = self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM certificates WHERE serial = ?1"),
                params![serial],
                row_to_record,
            )
            .optional()
            .map_err(err)?;
        if let Some(record) = by_serial {
            return Ok(record);
        }
        self.conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM certificates WHERE name = ?1
                     ORDER BY (status = 'valid') DESC, issued_at DESC, rowid DESC LIMIT 1"
                ),
                params![query],
                row_to_record,
            )
            .optional()
            .map_err(err)?
            .ok_or_else(|| PkiError::UnknownCertificate { query: query.to_string() })
    }

    /// Lists certificates, oldest issuance first.
    pub fn list(&self, filter: &ListFilter, now: OffsetDateTime) -> Result<Vec<Record>, PkiError> {
        let err = |source| PkiError::Store { path: self.path.clone(), source };
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM certificates ORDER BY issued_at, rowid"))
            .map_err(err)?;
        let rows = stmt.query_map([], row_to_record).map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            let record = row.map_err(err)?;
            let status = record.effective_status(now);
            if filter.status.as_deref().is_some_and(|wanted| status != wanted) {
                continue;
            }
            let expiring_after =
                |before| status == "revoked" || status == "expired" || record.not_after > before;
            if filter.expiring_before.is_some_and(expiring_after) {
                continue;
            }
            out.push(record);
        }
        Ok(out)
    }
}

/// An open inventory transaction.
pub struct Tx<'c> {
    tx: Transaction<'c>,
    path: PathBuf,
}

impl Tx<'_> {
    fn err(&self, source: rusqlite::Error) -> PkiError {
        PkiError::Store { path: self.path.clone(), source }
    }

    /// Records a newly issued certificate.
    pub fn insert(&mut self, r: &Record) -> Result<(), PkiError> {
        let sans = serde_json::to_string(&r.sans).unwrap_or_else(|_| "[]".into());
        self.tx
            .execute(
                "INSERT INTO certificates (serial, name, subject, sans, profile, issuer,
                    not_before, not_after, issued_at, status, der)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'valid', ?10)",
                params![
                    r.serial,
                    r.name,
                    r.subject,
                    sans,
                    r.profile,
                    r.issuer,
                    r.not_before.unix_timestamp(),
                    r.not_after.unix_timestamp(),
                    r.issued_at.unix_timestamp(),
                    r.der,
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Marks `serial` revoked. Fails if it is already revoked.
    pub fn revoke(
        &mut self,
        serial: &str,
        reason: Reason,
        at: OffsetDateTime,
    ) -> Result<(), PkiError> {
        let current: Option<(String, Option<i64>)> = self
            .tx
            .query_row(
                "SELECT status, revoked_at FROM certificates WHERE serial = ?1",
                params![serial],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        match current {
            None => return Err(PkiError::UnknownCertificate { query: serial.to_string() }),
            Some((status, revoked_at)) if status == "revoked" => {
                let at = revoked_at
                    .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
                    .map(crate::validity::format_time)
                    .unwrap_or_default();
                return Err(PkiError::AlreadyRevoked { serial: serial.into(), revoked_at: at });
            }
            Some(_) => {}
        }
        self.tx
            .execute(
                "UPDATE certificates SET status = 'revoked', revoked_at = ?2,
                    revocation_reason = ?3 WHERE serial = ?1",
                params![serial, at.unix_timestamp(), reason.as_str()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records that `old` was renewed as `new`.
    pub fn supersede(&mut self, old: &str, new: &str) -> Result<(), PkiError> {
        self.tx
            .execute(
                "UPDATE certificates SET status = CASE WHEN status = 'valid' THEN 'superseded'
                    ELSE status END, superseded_by = ?2 WHERE serial = ?1",
                params![old, new],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Revoked certificates issued by `issuer`, for a CRL.
    pub fn revoked_by(&mut self, issuer: &str) -> Result<Vec<crate::crl::Entry>, PkiError> {
        let mut stmt = self
            .tx
            .prepare(
                "SELECT serial, revoked_at, revocation_reason FROM certificates
                 WHERE status = 'revoked' AND issuer = ?1 ORDER BY revoked_at",
            )
            .map_err(|e| PkiError::Store { path: self.path.clone(), source: e })?;
        let rows = stmt
            .query_map(params![issuer], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })
            .map_err(|e| PkiError::Store { path: self.path.clone(), source: e })?;
        let mut entries = Vec::new();
        for row in rows {
            let (serial, at, reason) =
                row.map_err(|e| PkiError::Store { path: self.path.clone(), source: e })?;
            entries.push(crate::crl::Entry {
                serial: serial_bytes(&serial),
                revoked_at: at
                    .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                reason: reason.as_deref().and_then(Reason::parse).unwrap_or(Reason::Unspecified),
            });
        }
        Ok(entries)
    }

    /// Takes the next CRL number (1, 2, 3, ...).
    pub fn next_crl_number(&mut self) -> Result<u64, PkiError> {
        self.tx
            .execute(
                "INSERT INTO crl_state (id, last_number) VALUES (1, 1)
                 ON CONFLICT(id) DO UPDATE SET last_number = last_number + 1",
                [],
            )
            .map_err(|e| self.err(e))?;
        let n: i64 = self
            .tx
            .query_row("SELECT last_number FROM crl_state WHERE id = 1", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        Ok(u64::try_from(n).unwrap_or(1))
    }
}

const COLUMNS: &str = "serial, name, subject, sans, profile, issuer, not_before, not_after, \
                       issued_at, status, revoked_at, revocation_reason, superseded_by, der";

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    let time = |i: usize| -> rusqlite::Result<OffsetDateTime> {
        let t: i64 = row.get(i)?;
        OffsetDateTime::from_unix_timestamp(t).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                i,
                rusqlite::types::Type::Integer,
                Box::new(e),
            )
        })
    };
    let sans: String = row.get(3)?;
    let status: String = row.get(9)?;
    let revoked_at: Option<i64> = row.get(10)?;
    Ok(Record {
        serial: row.get(0)?,
        name: row.get(1)?,
        subject: row.get(2)?,
        sans: serde_json::from_str(&sans).unwrap_or_default(),
        profile: row.get(4)?,
        issuer: row.get(5)?,
        not_before: time(6)?,
        not_after: time(7)?,
        issued_at: time(8)?,
        status: Status::parse(&status),
        revoked_at: revoked_at.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok()),
        revocation_reason: row.get(11)?,
        superseded_by: row.get(12)?,
        der: row.get(13)?,
    })
}

/// Lowercase hex without colons or a `0x` prefix.
pub fn normalize_serial(s: &str) -> String {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    s.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase()
}

fn serial_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}
