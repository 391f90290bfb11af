//! Opaque tokens kept in the inventory database (`[oauth] store`), behind the token crate's
//! [`TokenStore`]: SQLite today, through `certgate_pki::store::TokenInventory`, so another
//! backend (shared by replicas) is another implementation of that trait. Calls block; the
//! gateway makes them on blocking threads.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use certgate_pki::store::SqliteInventory;
use certgate_pki::store::{StoreError, TokenInventory};
use certgate_token::service::{StoreFailure, StoredToken, TokenStore};
use time::OffsetDateTime;

/// Expired tokens are purged when the store opens and after this many new tokens.
const PURGE_EVERY: u64 = 1024;

pub struct InventoryStore {
    inventory: Mutex<SqliteInventory>,
    path: PathBuf,
    puts: AtomicU64,
}

impl std::fmt::Debug for InventoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InventoryStore").field("path", &self.path).finish()
    }
}

impl InventoryStore {
    /// Opens (creating, mode 0600) the database at `path` and purges expired tokens.
    pub fn open(path: &Path) -> Result<InventoryStore, StoreError> {
        let mut inventory = SqliteInventory::open(path)?;
        inventory.purge_tokens(OffsetDateTime::now_utc())?;
        Ok(InventoryStore {
            inventory: Mutex::new(inventory),
            path: path.to_path_buf(),
            puts: AtomicU64::new(0),
        })
    }

    fn failure(&self, e: &StoreError) -> StoreFailure {
        StoreFailure(format!("{}: {}", self.path.display(), certgate_pki::error::with_causes(e)))
    }
}

fn time_of(unix: u64) -> OffsetDateTime {
    i64::try_from(unix)
        .ok()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn unix_of(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp()).unwrap_or(0)
}

impl TokenStore for InventoryStore {
    fn put(&self, token: &StoredToken) -> Result<(), StoreFailure> {
        let mut inventory = self
            .inventory
            .lock()
            .map_err(|_| StoreFailure("the token store lock is poisoned".into()))?;
        let row = certgate_pki::store::StoredToken {
            hash: token.hash,
            client_id: token.client_id.clone(),
            claims: token.claims.clone(),
            issued_at: time_of(token.issued_at),
            expires_at: time_of(token.expires_at),
        };
        inventory.put_token(&row).map_err(|e| self.failure(&e))?;
        if self.puts.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1 {
            // Best effort: a failed purge leaves expired rows, which find_token ignores.
            let _ = inventory.purge_tokens(OffsetDateTime::now_utc());
        }
        Ok(())
    }

    fn find(&self, hash: &[u8; 32], now: u64) -> Result<Option<StoredToken>, StoreFailure> {
        let inventory = self
            .inventory
            .lock()
            .map_err(|_| StoreFailure("the token store lock is poisoned".into()))?;
        let found = inventory.find_token(hash, time_of(now)).map_err(|e| self.failure(&e))?;
        Ok(found.map(|row| StoredToken {
            hash: row.hash,
            client_id: row.client_id,
            claims: row.claims,
            issued_at: unix_of(row.issued_at),
            expires_at: unix_of(row.expires_at),
        }))
    }
}
