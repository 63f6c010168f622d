//! The in-memory GCRA limiter: one node's limits, in a sharded map of theoretical arrival
//! times (nanoseconds since the limiter was made).

use super::{Decision, Gcra, RateLimiter};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shards of the map: a check locks one, so threads checking different keys rarely wait
/// on each other.
const SHARDS: usize = 32;
/// Entries a shard keeps before stale ones (whose TAT has passed) are swept.
const SWEEP_AT: usize = 100_000 / SHARDS;

pub struct MemoryLimiter {
    origin: Instant,
    hasher: std::collections::hash_map::RandomState,
    shards: Box<[Mutex<HashMap<String, i128>>]>,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        MemoryLimiter {
            origin: Instant::now(),
            hasher: Default::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl MemoryLimiter {
    /// [`RateLimiter::check`] without the future: the limiter itself never waits.
    pub fn check_now(&self, key: &str, limit: u64, window: Duration, cost: u64) -> Decision {
        self.check_at(key, limit, window, cost, Instant::now())
    }

    /// [`RateLimiter::settle`] without the future.
    pub fn settle_now(&self, key: &str, limit: u64, window: Duration, delta: i64) {
        self.settle_at(key, limit, window, delta, Instant::now());
    }

    fn shard(&self, key: &str) -> &Mutex<HashMap<String, i128>> {
        let i = (self.hasher.hash_one(key) as usize) % self.shards.len();
        &self.shards[i]
    }

    fn now(&self, at: Instant) -> i128 {
        at.saturating_duration_since(self.origin).as_nanos() as i128
    }

    fn check_at(
        &self,
        key: &str,
        limit: u64,
        window: Duration,
        cost: u64,
        at: Instant,
    ) -> Decision {
        let g = Gcra::new(limit, window);
        let now = self.now(at);
        let Ok(mut tats) = self.shard(key).lock() else {
            // A poisoned lock means a panic elsewhere; failing open keeps serving.
            return g.decision(0, 0, true);
        };
        if tats.len() >= SWEEP_AT {
            tats.retain(|_, tat| *tat > now);
        }
        let debt = tats.get(key).map_or(0, |tat| (*tat - now).max(0));
        let allowed = g.allows(debt, cost);
        // A check of cost 0 (a look at the bucket) stores nothing.
        if allowed && cost > 0 {
            let tat = now + debt + g.cost(cost);
            match tats.get_mut(key) {
                Some(stored) => *stored = tat,
                None => {
                    tats.insert(key.to_owned(), tat);
                }
            }
        }
        g.decision(debt, cost, allowed)
    }

    fn settle_at(&self, key: &str, limit: u64, window: Duration, delta: i64, at: Instant) {
        let g = Gcra::new(limit, window);
        let now = self.now(at);
        let Ok(mut tats) = self.shard(key).lock() else {
            return;
        };
        let debt = tats.get(key).map_or(0, |tat| (*tat - now).max(0));
        let debt = debt + i128::from(delta).saturating_mul(g.t);
        if debt <= 0 {
            tats.remove(key);
        } else {
            tats.insert(key.to_owned(), now + debt);
        }
    }
}

#[async_trait::async_trait]
impl RateLimiter for MemoryLimiter {
    async fn check(&self, key: &str, limit: u64, window: Duration, cost: u64) -> Decision {
        self.check_now(key, limit, window, cost)
    }

    async fn settle(&self, key: &str, limit: u64, window: Duration, delta: i64) {
        self.settle_now(key, limit, window, delta);
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_burst_then_refusal_then_steady_refill() {
        let l = MemoryLimiter::default();
        let t0 = l.origin + Duration::from_secs(1);
        let minute = Duration::from_secs(60);
        for i in 0..10 {
            let d = l.check_at("a", 10, minute, 1, t0);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 9 - i);
        }
        let refused = l.check_at("a", 10, minute, 1, t0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_secs(6));
        // One slot comes back every 6 s.
        assert!(
            !l.check_at("a", 10, minute, 1, t0 + Duration::from_secs(5))
                .allowed
        );
        let d = l.check_at("a", 10, minute, 1, t0 + Duration::from_secs(6));
        assert!(d.allowed && d.remaining == 0);
        // Keys are independent.
        assert!(l.check_at("b", 10, minute, 1, t0).allowed);
        // After a whole window everything is back.
        assert_eq!(
            l.check_at("a", 10, minute, 1, t0 + Duration::from_secs(120))
                .remaining,
            9
        );
    }

    #[test]
    fn over_a_long_run_the_rate_holds() {
        let l = MemoryLimiter::default();
        let start = l.origin;
        let mut allowed = 0;
        // 100 attempts per second for 10 minutes against 60 per minute.
        for ms in (0..600_000).step_by(10) {
            if l.check_at(
                "k",
                60,
                Duration::from_secs(60),
                1,
                start + Duration::from_millis(ms),
            )
            .allowed
            {
                allowed += 1;
            }
        }
        // The initial burst of 60, then one per second.
        assert!((659..=661).contains(&allowed), "{allowed}");
    }

    #[test]
    fn costs_and_settlements_move_the_same_clock() {
        let l = MemoryLimiter::default();
        let t0 = l.origin + Duration::from_secs(1);
        let minute = Duration::from_secs(60);
        // 1,000 tokens a minute: a reservation of 900 leaves 100.
        let d = l.check_at("tok", 1000, minute, 900, t0);
        assert_eq!((d.allowed, d.remaining), (true, 100));
        let refused = l.check_at("tok", 1000, minute, 200, t0);
        assert_eq!((refused.allowed, refused.remaining), (false, 100));
        assert_eq!(refused.retry_after, Duration::from_secs(6));
        // The call used 50: 850 come back, and 200 now fit.
        l.settle_at("tok", 1000, minute, -850, t0);
        let d = l.check_at("tok", 1000, minute, 200, t0);
        assert_eq!((d.allowed, d.remaining), (true, 750));
        // Using more than reserved is taken without a check, and can run into debt.
        l.settle_at("tok", 1000, minute, 2000, t0);
        let d = l.check_at("tok", 1000, minute, 1, t0);
        assert!(!d.allowed);
        // Owed: 2,251 tokens of 60 ms, of which a window's worth may be outstanding.
        assert_eq!(d.retry_after, Duration::from_millis(135_060 - 60_000));
        // A refund larger than the debt empties the bucket, no further.
        l.settle_at("tok", 1000, minute, -1_000_000, t0);
        assert_eq!(l.check_at("tok", 1000, minute, 1, t0).remaining, 999);
    }
}
