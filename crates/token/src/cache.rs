//! A small bounded cache with per-entry expiry, keyed by a token's SHA-256 (tokens are
//! secrets: their text is never a key). When full, expired entries go first, then the oldest
//! insertion; nothing grows past the bound. Lookups share a read lock: the hit path of every
//! request on a token route takes no exclusive lock.

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;

/// Entries expire at a unix time in seconds.
pub struct TtlCache<V> {
    inner: RwLock<Inner<V>>,
    capacity: usize,
}

struct Inner<V> {
    map: HashMap<[u8; 32], (V, u64)>,
    order: VecDeque<[u8; 32]>,
}

impl<V> std::fmt::Debug for TtlCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtlCache").field("capacity", &self.capacity).finish()
    }
}

impl<V: Clone> TtlCache<V> {
    pub fn new(capacity: usize) -> TtlCache<V> {
        TtlCache {
            inner: RwLock::new(Inner { map: HashMap::new(), order: VecDeque::new() }),
            capacity: capacity.max(1),
        }
    }

    /// The value for `key` if it has not expired at unix time `now`.
    pub fn get(&self, key: &[u8; 32], now: u64) -> Option<V> {
        let inner = self.inner.read().ok()?;
        inner.map.get(key).filter(|(_, until)| now < *until).map(|(v, _)| v.clone())
    }

    /// Keeps `value` until unix time `until`. Returns how many entries were evicted.
    pub fn insert(&self, key: [u8; 32], value: V, until: u64, now: u64) -> usize {
        let Ok(mut inner) = self.inner.write() else { return 0 };
        let mut evicted = 0;
        if inner.map.len() >= self.capacity && !inner.map.contains_key(&key) {
            let before = inner.map.len();
            inner.map.retain(|_, (_, t)| now < *t);
            evicted += before - inner.map.len();
            let Inner { map, order } = &mut *inner;
            order.retain(|k| map.contains_key(k));
            while inner.map.len() >= self.capacity {
                let Some(oldest) = inner.order.pop_front() else { break };
                if inner.map.remove(&oldest).is_some() {
                    evicted += 1;
                }
            }
        }
        if inner.map.insert(key, (value, until)).is_none() {
            inner.order.push_back(key);
        }
        evicted
    }

    pub fn len(&self) -> usize {
        self.inner.read().map(|i| i.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_cache_stays_bounded() {
        let cache = TtlCache::new(3);
        let key = |i: u8| [i; 32];
        cache.insert(key(1), "a", 100, 0);
        assert_eq!(cache.get(&key(1), 99), Some("a"));
        assert_eq!(cache.get(&key(1), 100), None);
        cache.insert(key(2), "b", 50, 0);
        cache.insert(key(3), "c", 200, 0);
        // Full: at t=60 the expired entry (2) goes first.
        cache.insert(key(4), "d", 200, 60);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&key(1), 60), Some("a"));
        // Full again, nothing expired: the oldest (1) goes.
        cache.insert(key(5), "e", 200, 60);
        assert_eq!(cache.get(&key(1), 60), None);
        assert_eq!(cache.len(), 3);
        for i in 10..200 {
            cache.insert(key(i), "x", 300, 61);
        }
        assert_eq!(cache.len(), 3);
    }
}
