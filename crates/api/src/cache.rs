//! A small time-bounded cache for what the hot path would otherwise read from the store on
//! every request (tenant policies, the tools an agent's versions use). A change on this
//! node evicts its entry at once; other nodes see the change within the time to live.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;
use std::time::{Duration, Instant};

pub struct TtlCache<K, V> {
    ttl: Duration,
    entries: RwLock<HashMap<K, (V, Instant)>>,
}

/// Entries held at most; past that the cache starts over rather than grow without bound.
const MAX_ENTRIES: usize = 100_000;

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        TtlCache {
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The value stored for `key` less than the time to live ago.
    pub fn get(&self, key: &K) -> Option<V> {
        let map = self.entries.read().ok()?;
        let (value, at) = map.get(key)?;
        (at.elapsed() < self.ttl).then(|| value.clone())
    }

    pub fn put(&self, key: K, value: V) {
        if let Ok(mut map) = self.entries.write() {
            if map.len() >= MAX_ENTRIES && !map.contains_key(&key) {
                map.clear();
            }
            map.insert(key, (value, Instant::now()));
        }
    }

    pub fn evict(&self, key: &K) {
        if let Ok(mut map) = self.entries.write() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_can_be_evicted() {
        let cache = TtlCache::new(Duration::from_millis(50));
        cache.put("a", 1);
        cache.put("b", 2);
        assert_eq!(cache.get(&"a"), Some(1));
        cache.evict(&"a");
        assert_eq!(cache.get(&"a"), None);
        assert_eq!(cache.get(&"b"), Some(2));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&"b"), None, "older than the time to live");
        cache.put("b", 3);
        assert_eq!(cache.get(&"b"), Some(3));
    }
}
