//! [`SqliteInventory`]: the inventory in an embedded SQLite database (WAL, `synchronous =
//! FULL`, mode 0600), `inventory.db` in the CA directory, or a file of its own for tokens.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, params};
use time::OffsetDateTime;

use super::{
    Inventory, InventoryTx, ListFilter, Record, Revoked, Serial, Status, StoreError, StoredToken,
    Superseded, TokenInventory,
};
use crate::crl::{self, Reason};

/// Schema version stored in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 3;

/// `MIGRATIONS[n]` brings a database from schema `n` to `n + 1` (0 is a new file).
const MIGRATIONS: [&str; 3] = [
    "
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
",
    "
CREATE TABLE IF NOT EXISTS tokens (
    hash       BLOB PRIMARY KEY CHECK (length(hash) = 32),
    client_id  TEXT NOT NULL,
    claims     TEXT NOT NULL,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX IF NOT EXISTS tokens_expires_at ON tokens(expires_at);
CREATE INDEX IF NOT EXISTS tokens_client_id ON tokens(client_id);
",
    "
CREATE TABLE IF NOT EXISTS used_tokens (
    jti         TEXT PRIMARY KEY,
    provisioner TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS used_tokens_expires_at ON used_tokens(expires_at);
",
];

/// The inventory in one SQLite file. `Send`, not `Sync`: share it behind a `Mutex`.
pub struct SqliteInventory {
    conn: Connection,
    path: PathBuf,
}

impl SqliteInventory {
    /// Opens the database at `path`, creating it (mode 0600) if needed, and brings its schema
    /// up to [`SCHEMA_VERSION`] in one transaction. A newer schema is refused
    /// ([`StoreError::NewerSchema`]): this certgate would not know its rules.
    pub fn open(path: &Path) -> Result<SqliteInventory, StoreError> {
        // Created 0600 before SQLite opens it (its -wal and -shm files take the same mode), so
        // it is never readable by others, not even briefly.
        let mut create = std::fs::OpenOptions::new();
        create.read(true).write(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut create, 0o600);
        create.open(path).map_err(|e| StoreError::Backend(Box::new(e)))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // An older file made with another mode is narrowed too; best effort, as before.
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        let mut conn = Connection::open(path).map_err(backend)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(backend)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
            .map_err(backend)?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(backend)?;
        let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(backend)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema { found, known: SCHEMA_VERSION });
        }
        for step in MIGRATIONS.iter().skip(usize::try_from(found).unwrap_or(0)) {
            tx.execute_batch(step).map_err(backend)?;
        }
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}")).map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(SqliteInventory { conn, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Inventory for SqliteInventory {
    fn find(&self, serial: &Serial) -> Result<Option<Record>, StoreError> {
        find(&self.conn, serial)
    }

    fn latest_by_name(&self, name: &str) -> Result<Option<Record>, StoreError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM certificates WHERE name = ?1
                     ORDER BY (status = 'valid') DESC, issued_at DESC, rowid DESC LIMIT 1"
                ),
                params![name],
                Row::read,
            )
            .optional()
            .map_err(backend)?
            .map(Row::into_record)
            .transpose()
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<Record>, StoreError> {
        use super::Effective;
        let now = filter.now.unix_timestamp();
        // Each condition is true when its filter is absent (NULL).
        let status = filter.status.map(Effective::as_str);
        let sql = format!(
            "SELECT {COLUMNS} FROM certificates
             WHERE (?1 IS NULL OR name = ?1)
               AND (?2 IS NULL OR (status <> 'revoked' AND not_after > ?3 AND not_after <= ?2))
               AND (?4 IS NULL
                    OR (?4 = 'revoked' AND status = 'revoked')
                    OR (?4 = 'expired' AND status <> 'revoked' AND not_after <= ?3)
                    OR (?4 IN ('valid', 'superseded') AND status = ?4 AND not_after > ?3))
             ORDER BY issued_at, rowid"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(backend)?;
        let rows = stmt
            .query_map(
                params![
                    filter.name,
                    filter.expiring_before.map(OffsetDateTime::unix_timestamp),
                    now,
                    status
                ],
                Row::read,
            )
            .map_err(backend)?;
        rows.map(|row| row.map_err(backend)?.into_record()).collect()
    }

    fn begin(&mut self) -> Result<Box<dyn InventoryTx + '_>, StoreError> {
        // IMMEDIATE takes the write lock now (waiting up to the busy timeout), so what the
        // transaction reads stays true until it commits.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(backend)?;
        Ok(Box::new(SqliteTx { tx }))
    }
}

struct SqliteTx<'c> {
    tx: Transaction<'c>,
}

impl InventoryTx for SqliteTx<'_> {
    fn find(&mut self, serial: &Serial) -> Result<Option<Record>, StoreError> {
        find(&self.tx, serial)
    }

    fn insert(&mut self, r: &Record) -> Result<(), StoreError> {
        let sans = serde_json::to_string(&r.sans).map_err(|e| StoreError::Backend(Box::new(e)))?;
        self.tx
            .execute(
                "INSERT INTO certificates (serial, name, subject, sans, profile, issuer,
                    not_before, not_after, issued_at, status, der)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'valid', ?10)",
                params![
                    r.serial.as_str(),
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
            .map_err(|e| conflict_or(e, || format!("certificate {}", r.serial)))?;
        Ok(())
    }

    fn revoke(
        &mut self,
        serial: &Serial,
        why: Reason,
        at: OffsetDateTime,
    ) -> Result<Revoked, StoreError> {
        let changed = self
            .tx
            .execute(
                "UPDATE certificates SET status = 'revoked', revoked_at = ?2,
                    revocation_reason = ?3 WHERE serial = ?1 AND status <> 'revoked'",
                params![serial.as_str(), at.unix_timestamp(), why.as_str()],
            )
            .map_err(backend)?;
        if changed > 0 {
            return Ok(Revoked::Newly);
        }
        match find(&self.tx, serial)? {
            None => Err(StoreError::NotFound { record: format!("certificate {serial}") }),
            Some(Record { revoked_at: Some(at), status: Status::Revoked, .. }) => {
                Ok(Revoked::Already { at })
            }
            // Not revoked cannot be: the update above would have matched it.
            Some(_) => Err(StoreError::Corrupt {
                record: format!("certificate {serial}"),
                column: "revoked_at",
                value: "NULL".into(),
                reason: "missing on a revoked certificate",
            }),
        }
    }

    fn supersede(&mut self, old: &Serial, new: &Serial) -> Result<Superseded, StoreError> {
        let changed = self
            .tx
            .execute(
                "UPDATE certificates SET status = 'superseded', superseded_by = ?2
                 WHERE serial = ?1 AND status = 'valid'",
                params![old.as_str(), new.as_str()],
            )
            .map_err(backend)?;
        if changed > 0 {
            return Ok(Superseded::Newly);
        }
        match find(&self.tx, old)? {
            None => Err(StoreError::NotFound { record: format!("certificate {old}") }),
            Some(r) => Ok(match r.status {
                Status::Revoked => Superseded::Revoked,
                Status::Superseded | Status::Valid => Superseded::Already { by: r.superseded_by },
            }),
        }
    }

    fn supersede_name(&mut self, name: &str, new: &Serial) -> Result<Vec<Serial>, StoreError> {
        let mut stmt = self
            .tx
            .prepare(
                "UPDATE certificates SET status = 'superseded', superseded_by = ?2
                 WHERE name = ?1 AND status = 'valid' AND serial <> ?2
                 RETURNING serial, issued_at, rowid",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![name, new.as_str()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            })
            .map_err(backend)?;
        let mut done = rows.collect::<Result<Vec<_>, _>>().map_err(backend)?;
        done.sort_by_key(|(_, issued_at, rowid)| (*issued_at, *rowid));
        done.into_iter().map(|(serial, _, _)| stored_serial(serial)).collect()
    }

    fn revoked_by(&mut self, issuer: &str) -> Result<Vec<crl::Entry>, StoreError> {
        let mut stmt = self
            .tx
            .prepare(
                "SELECT serial, revoked_at, revocation_reason FROM certificates
                 WHERE status = 'revoked' AND issuer = ?1 ORDER BY revoked_at",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![issuer], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })
            .map_err(backend)?;
        let mut entries = Vec::new();
        for row in rows {
            let (serial, at, reason) = row.map_err(backend)?;
            let corrupt = |column, value: String, reason| StoreError::Corrupt {
                record: format!("certificate {serial}"),
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
            let serial = stored_serial(serial)?;
            entries.push(crl::Entry { serial: serial.to_bytes(), revoked_at, reason });
        }
        Ok(entries)
    }

    fn use_token(
        &mut self,
        jti: &str,
        provisioner: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.tx
            .execute("DELETE FROM used_tokens WHERE expires_at < ?1", [now.unix_timestamp()])
            .map_err(backend)?;
        let inserted = self
            .tx
            .execute(
                "INSERT INTO used_tokens (jti, provisioner, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (jti) DO NOTHING",
                params![jti, provisioner, expires_at.unix_timestamp()],
            )
            .map_err(backend)?;
        Ok(inserted == 1)
    }

    fn next_crl_number(&mut self) -> Result<u64, StoreError> {
        let n: i64 = self
            .tx
            .query_row(
                "INSERT INTO crl_state (id, last_number) VALUES (1, 1)
                 ON CONFLICT (id) DO UPDATE SET last_number = crl_state.last_number + 1
                 RETURNING last_number",
                [],
                |r| r.get(0),
            )
            .map_err(backend)?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt {
            record: "the CRL state".into(),
            column: "last_number",
            value: n.to_string(),
            reason: "negative",
        })
    }

    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.tx.commit().map_err(backend)
    }
}

impl TokenInventory for SqliteInventory {
    fn put_token(&mut self, t: &StoredToken) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO tokens (hash, client_id, claims, issued_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    t.hash.as_slice(),
                    t.client_id,
                    t.claims,
                    t.issued_at.unix_timestamp(),
                    t.expires_at.unix_timestamp()
                ],
            )
            .map_err(|e| conflict_or(e, || format!("token {}", crate::identity::hex(&t.hash))))?;
        Ok(())
    }

    fn find_token(
        &self,
        hash: &[u8; 32],
        now: OffsetDateTime,
    ) -> Result<Option<StoredToken>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT client_id, claims, issued_at, expires_at FROM tokens
                 WHERE hash = ?1 AND revoked_at IS NULL AND expires_at > ?2",
                params![hash.as_slice(), now.unix_timestamp()],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(backend)?;
        let Some((client_id, claims, issued_at, expires_at)) = row else { return Ok(None) };
        let record = || format!("token {}", crate::identity::hex(hash));
        Ok(Some(StoredToken {
            hash: *hash,
            client_id,
            claims,
            issued_at: stored_time(issued_at, "issued_at", record)?,
            expires_at: stored_time(expires_at, "expires_at", record)?,
        }))
    }

    fn revoke_token(&mut self, hash: &[u8; 32], at: OffsetDateTime) -> Result<bool, StoreError> {
        let changed = self
            .conn
            .execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE hash = ?1 AND revoked_at IS NULL",
                params![hash.as_slice(), at.unix_timestamp()],
            )
            .map_err(backend)?;
        Ok(changed > 0)
    }

    fn revoke_client_tokens(
        &mut self,
        client_id: &str,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let changed = self
            .conn
            .execute(
                "UPDATE tokens SET revoked_at = ?2
                 WHERE client_id = ?1 AND revoked_at IS NULL AND expires_at > ?2",
                params![client_id, at.unix_timestamp()],
            )
            .map_err(backend)?;
        Ok(count(changed))
    }

    fn purge_tokens(&mut self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let deleted = self
            .conn
            .execute("DELETE FROM tokens WHERE expires_at <= ?1", params![now.unix_timestamp()])
            .map_err(backend)?;
        Ok(count(deleted))
    }
}

/// A SQLite error: `Busy` when the lock stayed taken past the busy timeout, else `Backend`.
fn backend(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy,
        _ => StoreError::Backend(Box::new(e)),
    }
}

/// [`StoreError::Conflict`] naming `record` when `e` is a primary-key clash, else [`backend`].
fn conflict_or(e: rusqlite::Error, record: impl FnOnce() -> String) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            StoreError::Conflict { record: record() }
        }
        _ => backend(e),
    }
}

fn count(rows: usize) -> u64 {
    u64::try_from(rows).unwrap_or(u64::MAX)
}

fn find(conn: &Connection, serial: &Serial) -> Result<Option<Record>, StoreError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM certificates WHERE serial = ?1"),
        params![serial.as_str()],
        Row::read,
    )
    .optional()
    .map_err(backend)?
    .map(Row::into_record)
    .transpose()
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

    /// Checks every value; a damaged one is [`StoreError::Corrupt`] naming the serial, column
    /// and value, never a silent default.
    fn into_record(self) -> Result<Record, StoreError> {
        let record = || format!("certificate {}", self.serial);
        let corrupt = |column, value: String, reason| StoreError::Corrupt {
            record: record(),
            column,
            value,
            reason,
        };
        let sans: Vec<String> = serde_json::from_str(&self.sans)
            .map_err(|_| corrupt("sans", self.sans.clone(), "not a JSON list of strings"))?;
        let status = Status::parse(&self.status).ok_or_else(|| {
            corrupt("status", self.status.clone(), "not valid, revoked or superseded")
        })?;
        let revoked_at =
            self.revoked_at.map(|t| stored_time(t, "revoked_at", record)).transpose()?;
        let superseded_by = self
            .superseded_by
            .map(|s| Serial::parse(&s).ok_or_else(|| corrupt("superseded_by", s, "not a serial")))
            .transpose()?;
        Ok(Record {
            sans,
            not_before: stored_time(self.not_before, "not_before", record)?,
            not_after: stored_time(self.not_after, "not_after", record)?,
            issued_at: stored_time(self.issued_at, "issued_at", record)?,
            status,
            revoked_at,
            superseded_by,
            serial: stored_serial(self.serial)?,
            name: self.name,
            subject: self.subject,
            profile: self.profile,
            issuer: self.issuer,
            revocation_reason: self.revocation_reason,
            der: self.der,
        })
    }
}

/// A stored serial, which certgate always writes as [`Serial`] prints it.
fn stored_serial(text: String) -> Result<Serial, StoreError> {
    match Serial::parse(&text) {
        Some(serial) if serial.as_str() == text => Ok(serial),
        _ => Err(StoreError::Corrupt {
            record: format!("certificate {text}"),
            column: "serial",
            value: text,
            reason: "not an even number of lowercase hex digits",
        }),
    }
}

fn stored_time(
    t: i64,
    column: &'static str,
    record: impl FnOnce() -> String,
) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(t).map_err(|_| StoreError::Corrupt {
        record: record(),
        column,
        value: t.to_string(),
        reason: "not a time certgate can hold",
    })
}

fn format_opt(v: Option<i64>) -> String {
    v.map_or_else(|| "NULL".to_string(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Effective, by_serial_or_name};

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_767_225_600 + seconds).unwrap()
    }

    fn record(serial: &str, name: &str, issued: i64, lifetime: i64) -> Record {
        Record {
            serial: Serial::parse(serial).unwrap(),
            name: name.into(),
            subject: format!("CN={name}"),
            sans: vec![format!("URI:spiffe://example.test/{name}")],
            profile: "client".into(),
            issuer: "CN=Test CA".into(),
            not_before: at(issued),
            not_after: at(issued + lifetime),
            issued_at: at(issued),
            status: Status::Valid,
            revoked_at: None,
            revocation_reason: None,
            superseded_by: None,
            der: vec![0x30, 0x00],
        }
    }

    fn open(dir: &tempfile::TempDir) -> SqliteInventory {
        SqliteInventory::open(&dir.path().join("inventory.db")).unwrap()
    }

    fn insert(inv: &mut SqliteInventory, records: &[Record]) {
        let mut tx = inv.begin().unwrap();
        for r in records {
            tx.insert(r).unwrap();
        }
        tx.commit().unwrap();
    }

    fn inventory_with_one_row() -> (tempfile::TempDir, SqliteInventory, Record) {
        let dir = tempfile::tempdir().unwrap();
        let mut inv = open(&dir);
        let r = record("0a1b", "joe", 0, 86_400);
        insert(&mut inv, std::slice::from_ref(&r));
        (dir, inv, r)
    }

    /// Runs `sql` on the inventory with its CHECK constraints off, as a damaged file would be.
    fn damage(inv: &SqliteInventory, sql: &str) {
        inv.conn.execute_batch("PRAGMA ignore_check_constraints = ON;").unwrap();
        inv.conn.execute(sql, []).unwrap();
    }

    /// A serial is normalised once: case, colons, a 0x prefix and spaces around do not matter;
    /// anything else is not a serial.
    #[test]
    fn serial_is_normalised_once() {
        for text in ["0a1b", "0A1B", "0a:1B", " 0x0A:1b ", "0X0a1b"] {
            assert_eq!(Serial::parse(text).unwrap().as_str(), "0a1b", "{text}");
        }
        for text in ["", ":", "0x", "a1b", "joe", "0a1g", "0a 1b", "0a-1b"] {
            assert_eq!(Serial::parse(text), None, "{text:?}");
        }
        let serial = Serial::from_bytes(&[0x00, 0xff, 0x10]);
        assert_eq!(serial.as_str(), "00ff10");
        assert_eq!(serial.to_bytes(), vec![0x00, 0xff, 0x10]);
        assert_eq!(format!("[{serial:<8}]"), "[00ff10  ]", "Display honours the width");
        let (_dir, inv, r) = inventory_with_one_row();
        let found = inv.find(&Serial::parse("0A:1B").unwrap()).unwrap().unwrap();
        assert_eq!(found.serial, r.serial);
        let by_query = by_serial_or_name(&inv, "0A:1B").unwrap().unwrap();
        assert_eq!(by_query.serial, r.serial);
        assert_eq!(by_serial_or_name(&inv, "joe").unwrap().unwrap().serial, r.serial);
        assert!(by_serial_or_name(&inv, "0a1c").unwrap().is_none());
    }

    /// Recording a serial twice is a Conflict naming it, and the first record stays as it was.
    #[test]
    fn duplicate_serial_is_a_conflict() {
        let (_dir, mut inv, r) = inventory_with_one_row();
        let mut tx = inv.begin().unwrap();
        let err = tx.insert(&record("0a1b", "other", 5, 10)).unwrap_err();
        assert!(matches!(&err, StoreError::Conflict { record } if record == "certificate 0a1b"));
        assert_eq!(err.to_string(), "certificate 0a1b is already recorded");
        drop(tx);
        assert_eq!(inv.find(&r.serial).unwrap().unwrap().name, "joe");
    }

    /// Revoking is one conditional update: the second revocation changes nothing and reports
    /// the first one's time; an unknown serial is NotFound. Two connections racing to revoke
    /// the same serial: exactly one revokes it.
    #[test]
    fn revoke_twice_says_already_revoked() {
        let (dir, mut inv, r) = inventory_with_one_row();
        let mut tx = inv.begin().unwrap();
        assert_eq!(tx.revoke(&r.serial, Reason::KeyCompromise, at(10)).unwrap(), Revoked::Newly);
        let again = tx.revoke(&r.serial, Reason::Superseded, at(20)).unwrap();
        assert_eq!(again, Revoked::Already { at: at(10) });
        let unknown = tx.revoke(&Serial::parse("ffff").unwrap(), Reason::Unspecified, at(20));
        assert!(matches!(unknown, Err(StoreError::NotFound { .. })), "{unknown:?}");
        tx.commit().unwrap();
        let stored = inv.find(&r.serial).unwrap().unwrap();
        assert_eq!(stored.revocation_reason.as_deref(), Some("key-compromise"));
        assert_eq!(stored.revoked_at, Some(at(10)));

        insert(&mut inv, &[record("0c0d", "race", 0, 86_400)]);
        let serial = Serial::parse("0c0d").unwrap();
        let barrier = std::sync::Barrier::new(2);
        let outcomes: Vec<Revoked> = std::thread::scope(|s| {
            let racers: Vec<_> = (0..2)
                .map(|i| {
                    let (barrier, serial, dir) = (&barrier, &serial, &dir);
                    s.spawn(move || {
                        let mut inv = open(dir);
                        barrier.wait();
                        let mut tx = inv.begin().unwrap();
                        let outcome = tx.revoke(serial, Reason::Unspecified, at(30 + i)).unwrap();
                        tx.commit().unwrap();
                        outcome
                    })
                })
                .collect();
            racers.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert_eq!(outcomes.iter().filter(|o| **o == Revoked::Newly).count(), 1, "{outcomes:?}");
        assert!(outcomes.iter().any(|o| matches!(o, Revoked::Already { .. })), "{outcomes:?}");
    }

    /// Superseding is conditional too: only a valid certificate becomes superseded; a revoked
    /// or already superseded one is reported and left alone.
    #[test]
    fn supersede_only_changes_a_valid_certificate() {
        let (_dir, mut inv, r) = inventory_with_one_row();
        let (b, c) = (Serial::parse("0b").unwrap(), Serial::parse("0c").unwrap());
        let mut tx = inv.begin().unwrap();
        assert_eq!(tx.supersede(&r.serial, &b).unwrap(), Superseded::Newly);
        assert_eq!(tx.supersede(&r.serial, &c).unwrap(), Superseded::Already { by: Some(b) });
        tx.insert(&record("0d", "ann", 1, 10)).unwrap();
        let d = Serial::parse("0d").unwrap();
        tx.revoke(&d, Reason::Unspecified, at(2)).unwrap();
        assert_eq!(tx.supersede(&d, &c).unwrap(), Superseded::Revoked);
        let unknown = tx.supersede(&Serial::parse("0e").unwrap(), &c);
        assert!(matches!(unknown, Err(StoreError::NotFound { .. })), "{unknown:?}");
    }

    /// Re-issuing a name supersedes every other valid certificate of that name, oldest first.
    #[test]
    fn supersede_name_returns_the_earlier_valid_ones_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut inv = open(&dir);
        insert(
            &mut inv,
            &[
                record("03", "api", 30, 100),
                record("01", "api", 10, 100),
                record("02", "web", 20, 100),
                record("04", "api", 40, 100),
            ],
        );
        let new = Serial::parse("04").unwrap();
        let mut tx = inv.begin().unwrap();
        let done = tx.supersede_name("api", &new).unwrap();
        tx.commit().unwrap();
        let done: Vec<&str> = done.iter().map(Serial::as_str).collect();
        assert_eq!(done, ["01", "03"]);
        assert_eq!(inv.latest_by_name("api").unwrap().unwrap().serial, new);
        assert_eq!(inv.find(&Serial::parse("02").unwrap()).unwrap().unwrap().status, Status::Valid);
    }

    /// Each list filter runs in SQL and matches the status a person sees at `now`.
    #[test]
    fn list_filters_run_in_sql() {
        let dir = tempfile::tempdir().unwrap();
        let mut inv = open(&dir);
        insert(
            &mut inv,
            &[
                record("01", "valid-long", 0, 1000),
                record("02", "valid-soon", 1, 100),
                record("03", "expired", 2, 50),
                record("04", "revoked", 3, 1000),
                record("05", "superseded", 4, 1000),
                record("06", "superseded-expired", 5, 10),
                record("07", "revoked-expired", 6, 10),
            ],
        );
        let mut tx = inv.begin().unwrap();
        for s in ["04", "07"] {
            tx.revoke(&Serial::parse(s).unwrap(), Reason::Unspecified, at(7)).unwrap();
        }
        for s in ["05", "06"] {
            tx.supersede(&Serial::parse(s).unwrap(), &Serial::parse("01").unwrap()).unwrap();
        }
        tx.commit().unwrap();
        let now = at(60);
        let names = |filter: ListFilter| -> Vec<String> {
            let found = inv.list(&filter).unwrap();
            for r in &found {
                if let Some(status) = filter.status {
                    assert_eq!(r.effective_status(now), status, "{}", r.name);
                }
            }
            found.into_iter().map(|r| r.name).collect()
        };
        let with = |status| ListFilter { status: Some(status), ..ListFilter::all(now) };
        assert_eq!(names(ListFilter::all(now)).len(), 7);
        assert_eq!(names(with(Effective::Valid)), ["valid-long", "valid-soon"]);
        assert_eq!(names(with(Effective::Revoked)), ["revoked", "revoked-expired"]);
        assert_eq!(names(with(Effective::Expired)), ["expired", "superseded-expired"]);
        assert_eq!(names(with(Effective::Superseded)), ["superseded"]);
        let expiring = ListFilter { expiring_before: Some(at(200)), ..ListFilter::all(now) };
        assert_eq!(names(expiring), ["valid-soon"]);
        let named = ListFilter { name: Some("revoked".into()), ..with(Effective::Revoked) };
        assert_eq!(names(named), ["revoked"]);
        let none = ListFilter { name: Some("revoked".into()), ..with(Effective::Valid) };
        assert!(names(none).is_empty());
    }

    /// An unknown status is Corrupt naming the serial and value, not a "valid" certificate.
    #[test]
    fn unknown_status_is_corrupt_not_valid() {
        let (_dir, inv, r) = inventory_with_one_row();
        assert_eq!(inv.latest_by_name("joe").unwrap().unwrap().status, Status::Valid);
        damage(&inv, "UPDATE certificates SET status = 'compromised'");
        for err in [
            inv.latest_by_name("joe").unwrap_err(),
            inv.find(&r.serial).unwrap_err(),
            inv.list(&ListFilter::all(r.issued_at)).unwrap_err(),
        ] {
            let text = err.to_string();
            assert!(matches!(err, StoreError::Corrupt { column: "status", .. }), "{text}");
            assert!(
                text.contains("certificate 0a1b has an invalid status: \"compromised\""),
                "{text}"
            );
        }
    }

    /// Damaged SAN JSON is Corrupt, not a certificate without SANs.
    #[test]
    fn damaged_san_json_is_corrupt_not_an_empty_list() {
        let (_dir, inv, r) = inventory_with_one_row();
        damage(&inv, "UPDATE certificates SET sans = '[\"URI:spiffe://exa'");
        let err = inv.find(&r.serial).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { column: "sans", .. }), "{err}");
        assert!(err.to_string().contains("0a1b"), "{err}");
    }

    /// A revoked row whose reason or serial is damaged stops the CRL instead of publishing a
    /// wrong entry.
    #[test]
    fn damaged_revocation_stops_the_crl() {
        let (_dir, mut inv, r) = inventory_with_one_row();
        let mut tx = inv.begin().unwrap();
        tx.revoke(&r.serial, Reason::KeyCompromise, r.issued_at).unwrap();
        tx.commit().unwrap();
        damage(&inv, "UPDATE certificates SET revocation_reason = 'oops'");
        let err = inv.begin().unwrap().revoked_by("CN=Test CA").unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { column: "revocation_reason", .. }));
        damage(
            &inv,
            "UPDATE certificates SET revocation_reason = 'key-compromise', serial = 'xyz'",
        );
        let err = inv.begin().unwrap().revoked_by("CN=Test CA").unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { column: "serial", .. }), "{err}");
    }

    /// CRL numbers count up across transactions; a rolled-back number is used again.
    #[test]
    fn crl_numbers_count_up_and_roll_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut inv = open(&dir);
        for expected in [1, 2] {
            let mut tx = inv.begin().unwrap();
            assert_eq!(tx.next_crl_number().unwrap(), expected);
            tx.commit().unwrap();
        }
        assert_eq!(inv.begin().unwrap().next_crl_number().unwrap(), 3);
        assert_eq!(inv.begin().unwrap().next_crl_number().unwrap(), 3, "dropped: rolled back");
    }

    /// The file is 0600, in WAL mode, at the current schema; a newer schema is refused.
    #[test]
    fn file_is_private_wal_and_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.db");
        let inv = SqliteInventory::open(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mode: String = inv.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        let version: i64 = inv.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        inv.conn.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(inv);
        let err = SqliteInventory::open(&path).err().unwrap();
        assert!(matches!(err, StoreError::NewerSchema { found: 99, known: SCHEMA_VERSION }));
    }

    fn token(byte: u8, client: &str, issued: i64, lifetime: i64) -> StoredToken {
        StoredToken {
            hash: [byte; 32],
            client_id: client.into(),
            claims: format!(
                r#"{{"sub":"{client}","cnf":{{"x5t#S256":"bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}}}}"#
            ),
            issued_at: at(issued),
            expires_at: at(issued + lifetime),
        }
    }

    /// The gateway keeps the inventory in a `Mutex` and calls it from `spawn_blocking`.
    #[test]
    fn inventory_can_be_shared_behind_a_mutex() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<std::sync::Arc<std::sync::Mutex<SqliteInventory>>>();
        shareable::<std::sync::Arc<std::sync::Mutex<Box<dyn TokenInventory>>>>();
    }

    /// A stored token is found by its hash with its client, claims (verbatim) and times (to
    /// the second) until it expires; an unknown hash is not found.
    #[test]
    fn token_is_found_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let mut inv = open(&dir);
        let mut t = token(1, "app", 0, 300);
        t.issued_at += time::Duration::milliseconds(700);
        inv.put_token(&t).unwrap();
        let found = inv.find_token(&t.hash, at(299)).unwrap().unwrap();
        assert_eq!(found, StoredToken { issued_at: at(0), ..t.clone() });
        assert_eq!(inv.find_token(&t.hash, at(300)).unwrap(), None, "expired at expires_at");
        assert_eq!(inv.find_token(&t.hash, at(10_000)).unwrap(), None);
        assert_eq!(inv.find_token(&[2; 32], at(0)).unwrap(), None, "unknown");
    }

    /// Storing the same hash twice is a Conflict, and the first token stays.
    #[test]
    fn same_token_hash_is_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let mut inv = open(&dir);
        inv.put_token(&token(1, "app", 0, 300)).unwrap();
        let err = inv.put_token(&token(1, "other", 5, 300)).unwrap_err();
        assert!(
            matches!(&err, StoreError::Conflict { record } if record.starts_with("token 0101"))
        );
        assert_eq!(inv.find_token(&[1; 32], at(6)).unwrap().unwrap().client_id, "app");
    }

    /// A revoked token is no longer found; revoking it again, or an unknown one, says false.
    #[test]
    fn revoked_token_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut inv = open(&dir);
        inv.put_token(&token(1, "app", 0, 300)).unwrap();
        inv.put_token(&token(2, "app", 0, 300)).unwrap();
        assert!(inv.revoke_token(&[1; 32], at(10)).unwrap());
        assert!(!inv.revoke_token(&[1; 32], at(11)).unwrap(), "already revoked");
        assert!(!inv.revoke_token(&[3; 32], at(11)).unwrap(), "unknown");
        assert_eq!(inv.find_token(&[1; 32], at(12)).unwrap(), None);
        assert!(inv.find_token(&[2; 32], at(12)).unwrap().is_some(), "the other one stays");
    }

    /// Revoking a client's tokens revokes exactly its live ones and counts them.
    #[test]
    fn revoke_client_tokens_counts_its_live_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let mut inv = open(&dir);
        for t in [
            token(1, "app", 0, 300),
            token(2, "app", 0, 300),
            token(3, "app", 0, 10),  // expired at 100
            token(4, "app", 0, 300), // revoked before
            token(5, "other", 0, 300),
        ] {
            inv.put_token(&t).unwrap();
        }
        assert!(inv.revoke_token(&[4; 32], at(50)).unwrap());
        assert_eq!(inv.revoke_client_tokens("app", at(100)).unwrap(), 2);
        assert_eq!(inv.revoke_client_tokens("app", at(101)).unwrap(), 0);
        assert_eq!(inv.revoke_client_tokens("nobody", at(101)).unwrap(), 0);
        for byte in [1, 2, 3, 4] {
            assert_eq!(inv.find_token(&[byte; 32], at(102)).unwrap(), None, "token {byte}");
        }
        assert!(inv.find_token(&[5; 32], at(102)).unwrap().is_some());
    }

    /// Purging deletes the expired rows, revoked or not, and keeps the rest.
    #[test]
    fn purge_deletes_expired_tokens_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut inv = open(&dir);
        for t in [token(1, "a", 0, 10), token(2, "a", 0, 20), token(3, "a", 0, 300)] {
            inv.put_token(&t).unwrap();
        }
        inv.put_token(&token(4, "a", 0, 300)).unwrap();
        assert!(inv.revoke_token(&[2; 32], at(5)).unwrap());
        assert!(inv.revoke_token(&[4; 32], at(5)).unwrap());
        assert_eq!(inv.purge_tokens(at(20)).unwrap(), 2, "1 expired, 2 expired and revoked");
        assert_eq!(inv.purge_tokens(at(20)).unwrap(), 0);
        let left: i64 =
            inv.conn.query_row("SELECT count(*) FROM tokens", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 2, "the live token and the revoked one not yet expired");
        assert!(inv.find_token(&[3; 32], at(20)).unwrap().is_some());
        // A purged hash can be stored again.
        inv.put_token(&token(1, "a", 30, 10)).unwrap();
    }

    /// Tokens survive a restart, in the CA's inventory or in a token file of their own
    /// (`oauth.db`, whose certificate tables stay empty).
    #[test]
    fn reopening_the_file_keeps_tokens() {
        let dir = tempfile::tempdir().unwrap();
        for file in ["inventory.db", "oauth.db"] {
            let path = dir.path().join(file);
            let mut inv = SqliteInventory::open(&path).unwrap();
            inv.put_token(&token(1, "app", 0, 300)).unwrap();
            assert!(inv.revoke_token(&[1; 32], at(1)).unwrap());
            inv.put_token(&token(2, "app", 0, 300)).unwrap();
            drop(inv);
            let mut inv = SqliteInventory::open(&path).unwrap();
            assert_eq!(inv.find_token(&[2; 32], at(2)).unwrap(), Some(token(2, "app", 0, 300)));
            assert_eq!(inv.find_token(&[1; 32], at(2)).unwrap(), None, "still revoked");
            assert!(inv.list(&ListFilter::all(at(2))).unwrap().is_empty());
            assert_eq!(inv.begin().unwrap().next_crl_number().unwrap(), 1);
        }
    }

    /// An inventory written by schema 1 (certgate before the token table) opens, keeps its
    /// certificates and CRL number, and gains the token table.
    #[test]
    fn schema_1_inventory_gains_the_token_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(
                "INSERT INTO certificates VALUES ('0a1b', 'joe', 'CN=joe', '[\"DNS:joe.test\"]',
                    'client', 'CN=Test CA', 1767225600, 1767312000, 1767225600, 'valid',
                    NULL, NULL, NULL, x'3000');
                 INSERT INTO crl_state VALUES (1, 7);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
            let has_tokens: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'tokens'", [], |r| {
                    r.get(0)
                })
                .unwrap();
            assert_eq!(has_tokens, 0, "a schema 1 file has no token table");
        }
        let mut inv = SqliteInventory::open(&path).unwrap();
        let version: i64 = inv.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let joe = inv.find(&Serial::parse("0a1b").unwrap()).unwrap().unwrap();
        assert_eq!(
            (joe.name.as_str(), joe.sans.as_slice()),
            ("joe", ["DNS:joe.test".to_string()].as_slice())
        );
        assert_eq!(inv.begin().unwrap().next_crl_number().unwrap(), 8);
        inv.put_token(&token(1, "app", 0, 300)).unwrap();
        assert!(inv.find_token(&[1; 32], at(1)).unwrap().is_some());
        let indexes: Vec<String> = inv
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tokens'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(indexes.contains(&"tokens_expires_at".to_string()), "{indexes:?}");
    }

    /// A one-time token's `jti` is taken once: the second use in any later transaction is
    /// refused (one conditional insert), a rolled-back use leaves it free, and rows are
    /// purged once expired, so the same `jti` then counts as new (its token is expired anyway).
    #[test]
    fn one_time_token_ids_are_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut inv = open(&dir);
        {
            let mut tx = inv.begin().unwrap();
            assert!(tx.use_token("abc", "default", at(300), at(0)).unwrap());
            // Rolled back: never committed.
        }
        let mut tx = inv.begin().unwrap();
        assert!(tx.use_token("abc", "default", at(300), at(0)).unwrap());
        tx.commit().unwrap();
        let mut tx = inv.begin().unwrap();
        assert!(!tx.use_token("abc", "other", at(600), at(10)).unwrap());
        assert!(tx.use_token("def", "default", at(300), at(10)).unwrap());
        tx.commit().unwrap();
        let mut tx = inv.begin().unwrap();
        assert!(tx.use_token("abc", "default", at(900), at(301)).unwrap());
        tx.commit().unwrap();
        let left: i64 =
            inv.conn.query_row("SELECT count(*) FROM used_tokens", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 1, "expired rows are purged");
    }

    /// An inventory of schema 2 gains the table of used token ids and keeps its tokens.
    #[test]
    fn schema_2_inventory_gains_the_used_token_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.execute_batch("INSERT INTO crl_state VALUES (1, 3); PRAGMA user_version = 2;")
                .unwrap();
        }
        let mut inv = SqliteInventory::open(&path).unwrap();
        let version: i64 = inv.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, 3);
        let mut tx = inv.begin().unwrap();
        assert!(tx.use_token("abc", "default", at(300), at(0)).unwrap());
        assert_eq!(tx.next_crl_number().unwrap(), 4);
        tx.commit().unwrap();
    }
}
