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

    /// The status stored as `s`, or `None` for a value certgate never writes.
    fn parse(s: &str) -> Option<Status> {
        match s {
            "valid" => Some(Status::Valid),
            "revoked" => Some(Status::Revoked),
            "superseded" => Some(Status::Superseded),
            _ => None,
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
                Row::read,
            )
            .optional()
            .map_err(err)?;
        if let Some(row) = by_serial {
            return row.into_record(&self.path);
        }
        self.conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM certificates WHERE name = ?1
                     ORDER BY (status = 'valid') DESC, issued_at DESC, rowid DESC LIMIT 1"
                ),
                params![query],
                Row::read,
            )
            .optional()
            .map_err(err)?
            .ok_or_else(|| PkiError::UnknownCertificate { query: query.to_string() })?
            .into_record(&self.path)
    }

    /// Lists certificates, oldest issuance first.
    pub fn list(&self, filter: &ListFilter, now: OffsetDateTime) -> Result<Vec<Record>, PkiError> {
        let err = |source| PkiError::Store { path: self.path.clone(), source };
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM certificates ORDER BY issued_at, rowid"))
            .map_err(err)?;
        let rows = stmt.query_map([], Row::read).map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            let record = row.map_err(err)?.into_record(&self.path)?;
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

    /// Records every valid certificate named `name` as superseded by `new` (a re-issue of the
    /// name) and returns their serials, oldest first.
    pub fn supersede_name(&mut self, name: &str, new: &str) -> Result<Vec<String>, PkiError> {
        let serials = {
            let mut stmt = self
                .tx
                .prepare(
                    "SELECT serial FROM certificates WHERE name = ?1 AND status = 'valid'
                     AND serial != ?2 ORDER BY issued_at, rowid",
                )
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map(params![name, new], |row| row.get::<_, String>(0))
                .map_err(|e| self.err(e))?;
            rows.collect::<Result<Vec<String>, _>>().map_err(|e| self.err(e))?
        };
        for old in &serials {
            self.supersede(old, new)?;
        }
        Ok(serials)
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
            let corrupt = |column, value: String, reason| PkiError::CorruptRecord {
                path: self.path.clone(),
                serial: serial.clone(),
                column,
                value,
                reason,
            };
            let revoked_at = at
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
                .ok_or_else(|| corrupt("revoked_at", format_opt(at), "not a revocation time"))?;
            let reason = match reason {
                None => Reason::Unspecified,
                Some(r) => Reason::parse(&r)
                    .ok_or_else(|| corrupt("revocation_reason", r, "not a CRL reason"))?,
            };
            let serial_der = serial_bytes(&serial).ok_or_else(|| {
                corrupt("serial", serial.clone(), "not an even number of hex digits")
            })?;
            entries.push(crate::crl::Entry { serial: serial_der, revoked_at, reason });
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
        u64::try_from(n).map_err(|_| {
            PkiError::bad_file(&self.path, format!("the last CRL number, {n}, is negative"))
        })
    }
}

const COLUMNS: &str = "serial, name, subject, sans, profile, issuer, not_before, not_after, \
                       issued_at, status, revoked_at, revocation_reason, superseded_by, der";

/// One row as stored, before its values are checked.
struct Row {
    serial: String,
    name: String,
    subject: String,
    sans: String,
    profile: String,
    issuer: String,
    not_before: i64,
    not_after: i64,
    issued_at: i64,
    status: String,
    revoked_at: Option<i64>,
    revocation_reason: Option<String>,
    superseded_by: Option<String>,
    der: Vec<u8>,
}

impl Row {
    /// Reads the columns of [`COLUMNS`], in order.
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        Ok(Row {
            serial: row.get(0)?,
            name: row.get(1)?,
            subject: row.get(2)?,
            sans: row.get(3)?,
            profile: row.get(4)?,
            issuer: row.get(5)?,
            not_before: row.get(6)?,
            not_after: row.get(7)?,
            issued_at: row.get(8)?,
            status: row.get(9)?,
            revoked_at: row.get(10)?,
            revocation_reason: row.get(11)?,
            superseded_by: row.get(12)?,
            der: row.get(13)?,
        })
    }

    /// Checks every value; a damaged one is an error naming the serial, column and value,
    /// never a silent default.
    fn into_record(self, path: &Path) -> Result<Record, PkiError> {
        let corrupt = |column, value: String, reason| PkiError::CorruptRecord {
            path: path.to_path_buf(),
            serial: self.serial.clone(),
            column,
            value,
            reason,
        };
        let time = |column, t: i64| {
            OffsetDateTime::from_unix_timestamp(t)
                .map_err(|_| corrupt(column, t.to_string(), "not a time certgate can hold"))
        };
        let sans: Vec<String> = serde_json::from_str(&self.sans)
            .map_err(|_| corrupt("sans", self.sans.clone(), "not a JSON list of strings"))?;
        let status = Status::parse(&self.status).ok_or_else(|| {
            corrupt("status", self.status.clone(), "not valid, revoked or superseded")
        })?;
        let revoked_at = self.revoked_at.map(|t| time("revoked_at", t)).transpose()?;
        Ok(Record {
            sans,
            not_before: time("not_before", self.not_before)?,
            not_after: time("not_after", self.not_after)?,
            issued_at: time("issued_at", self.issued_at)?,
            status,
            revoked_at,
            serial: self.serial,
            name: self.name,
            subject: self.subject,
            profile: self.profile,
            issuer: self.issuer,
            revocation_reason: self.revocation_reason,
            superseded_by: self.superseded_by,
            der: self.der,
        })
    }
}

fn format_opt(v: Option<i64>) -> String {
    v.map_or_else(|| "NULL".to_string(), |t| t.to_string())
}

/// Lowercase hex without colons or a `0x` prefix.
pub fn normalize_serial(s: &str) -> String {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    s.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase()
}

/// The bytes of a stored serial, or `None` when it is not an even number of hex digits.
fn serial_bytes(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len() / 2).map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_one_row() -> (tempfile::TempDir, Store, Record) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("inventory.db")).unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap();
        let record = Record {
            serial: "0a1b".into(),
            name: "joe".into(),
            subject: "CN=joe".into(),
            sans: vec!["URI:spiffe://example.test/joe".into()],
            profile: "client".into(),
            issuer: "CN=Test CA".into(),
            not_before: now,
            not_after: now + time::Duration::days(1),
            issued_at: now,
            status: Status::Valid,
            revoked_at: None,
            revocation_reason: None,
            superseded_by: None,
            der: vec![0x30, 0x00],
        };
        store.transaction(|tx| tx.insert(&record)).unwrap();
        (dir, store, record)
    }

    /// Runs `sql` on the inventory with its CHECK constraints off, as a damaged file would be.
    fn damage(store: &Store, sql: &str) {
        store.conn.execute_batch("PRAGMA ignore_check_constraints = ON;").unwrap();
        store.conn.execute(sql, []).unwrap();
    }

    /// An unknown status is an error naming the serial and value, not a "valid" certificate.
    #[test]
    fn unknown_status_is_an_error_not_valid() {
        let (_dir, store, record) = store_with_one_row();
        assert_eq!(store.find("joe").unwrap().status, Status::Valid);
        damage(&store, "UPDATE certificates SET status = 'compromised'");
        for err in [
            store.find("joe").unwrap_err(),
            store.find(&record.serial).unwrap_err(),
            store.list(&ListFilter::default(), record.issued_at).unwrap_err(),
        ] {
            let text = err.to_string();
            assert!(matches!(err, PkiError::CorruptRecord { column: "status", .. }), "{text}");
            assert!(
                text.contains("certificate 0a1b has an invalid status: \"compromised\""),
                "{text}"
            );
        }
    }

    /// Damaged SAN JSON is an error, not a certificate without SANs.
    #[test]
    fn damaged_san_json_is_an_error_not_an_empty_list() {
        let (_dir, store, record) = store_with_one_row();
        damage(&store, "UPDATE certificates SET sans = '[\"URI:spiffe://exa'");
        let err = store.find(&record.serial).unwrap_err();
        assert!(matches!(err, PkiError::CorruptRecord { column: "sans", .. }), "{err}");
        assert!(err.to_string().contains("0a1b"), "{err}");
    }

    /// A revoked row whose reason or serial is damaged stops the CRL instead of publishing a
    /// wrong entry.
    #[test]
    fn damaged_revocation_stops_the_crl() {
        let (_dir, mut store, record) = store_with_one_row();
        store
            .transaction(|tx| tx.revoke(&record.serial, Reason::KeyCompromise, record.issued_at))
            .unwrap();
        damage(&store, "UPDATE certificates SET revocation_reason = 'oops'");
        let err = store.transaction(|tx| tx.revoked_by("CN=Test CA")).unwrap_err();
        assert!(matches!(err, PkiError::CorruptRecord { column: "revocation_reason", .. }));
        damage(
            &store,
            "UPDATE certificates SET revocation_reason = 'key-compromise', serial = 'xyz'",
        );
        let err = store.transaction(|tx| tx.revoked_by("CN=Test CA")).unwrap_err();
        assert!(matches!(err, PkiError::CorruptRecord { column: "serial", .. }), "{err}");
    }
}
