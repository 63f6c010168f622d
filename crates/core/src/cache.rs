//! A small time-bounded cache for what the hot path would otherwise read from the store on
//! every request (API keys, tenants, policies, the tools an agent's versions use, a
//! tenant's MCP servers and their tools). A change on this node evicts its entry at once;
//! other nodes see the change within the time to live.
//!
//! A value read from the store before a change and put after that change's eviction would
//! bring the old value back for a whole time to live. So a loader takes a [`Ticket`]
//! before it reads, and [`TtlCache::put`] keeps the value only if its key was not evicted
//! since (the caller still uses what it read).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::RwLock;
use std::time::{Duration, Instant};

pub struct TtlCache<K, V> {
    ttl: Duration,
    inner: RwLock<Inner<K, V>>,
}

struct Inner<K, V> {
    entries: HashMap<K, (V, Instant)>,
    /// Evictions so far; a ticket is this count when it was taken.
    evictions: u64,
    /// The count at each key's latest eviction: a put of that key with an older ticket is
    /// dropped, and puts of other keys are not disturbed.
    evicted: HashMap<K, u64>,
    /// A put with a ticket older than this is dropped whatever its key (after an
    /// `evict_where`, which cannot name the keys still being loaded, or after `evicted`
    /// was cleared to stay bounded).
    floor: u64,
}

/// Taken before reading a value from the store; see [`TtlCache::put`].
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

/// Entries held at most; past that the cache starts over rather than grow without bound.
const MAX_ENTRIES: usize = 100_000;

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        TtlCache {
            ttl,
            inner: RwLock::new(Inner {
                entries: HashMap::new(),
                evictions: 0,
                evicted: HashMap::new(),
                floor: 0,
            }),
        }
    }

    /// The value stored for `key` less than the time to live ago.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let inner = self.inner.read().ok()?;
        let (value, at) = inner.entries.get(key)?;
        (at.elapsed() < self.ttl).then(|| value.clone())
    }

    /// The cached value for `key`, or what `load` reads, cached under a ticket taken
    /// before the read (see [`TtlCache::put`]).
    pub async fn get_or_load<E, F, Fut>(&self, key: &K, load: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        if let Some(value) = self.get(key) {
            return Ok(value);
        }
        let ticket = self.ticket();
        let value = load().await?;
        self.put(ticket, key.clone(), value.clone());
        Ok(value)
    }

    /// To take before reading what will be put.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.inner.read().map_or(u64::MAX, |i| i.evictions))
    }

    /// Stores `value` unless its key was evicted since `ticket` was taken: then the value
    /// may predate a change, and the next reader reads again.
    pub fn put(&self, ticket: Ticket, key: K, value: V) {
        if let Ok(mut inner) = self.inner.write() {
            let evicted = inner.evicted.get(&key).copied().unwrap_or(0);
            if ticket.0 < inner.floor.max(evicted) {
                return;
            }
            if inner.entries.len() >= MAX_ENTRIES && !inner.entries.contains_key(&key) {
                inner.entries.clear();
            }
            inner.entries.insert(key, (value, Instant::now()));
        }
    }

    pub fn evict(&self, key: &K) {
        if let Ok(mut inner) = self.inner.write() {
            inner.entries.remove(key);
            inner.evictions += 1;
            if inner.evicted.len() >= MAX_ENTRIES {
                inner.evicted.clear();
                inner.floor = inner.evictions;
            }
            let now = inner.evictions;
            inner.evicted.insert(key.clone(), now);
        }
    }

    /// Evicts every entry `matches` picks, and drops every put whose read began before.
    pub fn evict_where(&self, matches: impl Fn(&K, &V) -> bool) {
        if let Ok(mut inner) = self.inner.write() {
            inner.entries.retain(|k, (v, _)| !matches(k, v));
            inner.evictions += 1;
            inner.floor = inner.evictions;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_can_be_evicted() {
        let cache = TtlCache::new(Duration::from_millis(50));
        cache.put(cache.ticket(), "a", 1);
        cache.put(cache.ticket(), "b", 2);
        assert_eq!(cache.get(&"a"), Some(1));
        cache.evict(&"a");
        assert_eq!(cache.get(&"a"), None);
        assert_eq!(cache.get(&"b"), Some(2));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&"b"), None, "older than the time to live");
        cache.put(cache.ticket(), "b", 3);
        assert_eq!(cache.get(&"b"), Some(3));
        cache.put(cache.ticket(), "c", 30);
        cache.evict_where(|_, v| *v > 10);
        assert_eq!((cache.get(&"b"), cache.get(&"c")), (Some(3), None));
    }

    #[test]
    fn a_value_read_before_an_eviction_is_not_kept() {
        let cache = TtlCache::new(Duration::from_secs(60));
        // A loader reads the old value, a change evicts, then the loader puts what it read.
        let ticket = cache.ticket();
        cache.evict(&"policy");
        cache.put(ticket, "policy", "old");
        assert_eq!(cache.get(&"policy"), None);
        // The next loader's value is kept.
        cache.put(cache.ticket(), "policy", "new");
        assert_eq!(cache.get(&"policy"), Some("new"));
        // Evicting one key does not disturb a load of another.
        let ticket = cache.ticket();
        cache.evict(&"policy");
        cache.put(ticket, "other", "fresh");
        assert_eq!(cache.get(&"other"), Some("fresh"));
        // `evict_where` cannot name the keys being loaded: every older load is dropped.
        let ticket = cache.ticket();
        cache.evict_where(|_, _| false);
        cache.put(ticket, "third", "maybe old");
        assert_eq!(cache.get(&"third"), None);
    }
}
