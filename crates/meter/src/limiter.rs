//! Rate limits by GCRA (the generic cell rate algorithm), in memory on one node.
//!
//! Per key, one number is kept: the theoretical arrival time (TAT) of the next request.
//! A limit of `L` per window `W` spaces requests `T = W / L` apart and lets a burst of `L`
//! through at once. Written here rather than taken from `governor` because each key has its
//! own limit (tenant plans differ), callers need the remaining count for `x-ratelimit-*`
//! headers, and the Redis version for several replicas must be the very same arithmetic.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    /// Requests that could still go through right now.
    pub remaining: u64,
    /// Until the window is whole again (all `limit` available).
    pub reset: Duration,
    /// When refused: how long until one request would be allowed.
    pub retry_after: Duration,
}

pub struct Limiter {
    origin: Instant,
    tats: Mutex<HashMap<String, i128>>,
}

/// Entries kept before stale ones (whose TAT has passed) are swept.
const SWEEP_AT: usize = 100_000;

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            origin: Instant::now(),
            tats: Mutex::new(HashMap::new()),
        }
    }
}

impl Limiter {
    /// Counts one request against `key`, limited to `limit` per `window`.
    pub fn check(&self, key: &str, limit: u64, window: Duration) -> Decision {
        self.check_at(key, limit, window, Instant::now())
    }

    fn check_at(&self, key: &str, limit: u64, window: Duration, now: Instant) -> Decision {
        let limit = limit.max(1);
        let w = window.as_nanos() as i128;
        let t = w / i128::from(limit);
        let tau = w - t;
        let now = now.saturating_duration_since(self.origin).as_nanos() as i128;
        let Ok(mut tats) = self.tats.lock() else {
            // A poisoned lock means a panic elsewhere; failing open keeps serving.
            return Decision {
                allowed: true,
                limit,
                remaining: limit,
                reset: Duration::ZERO,
                retry_after: Duration::ZERO,
            };
        };
        if tats.len() >= SWEEP_AT {
            tats.retain(|_, tat| *tat > now);
        }
        let tat = tats.get(key).copied().unwrap_or(now).max(now);
        let debt = tat - now;
        if debt > tau {
            return Decision {
                allowed: false,
                limit,
                remaining: 0,
                reset: nanos(debt),
                retry_after: nanos(debt - tau),
            };
        }
        let new_tat = tat + t;
        match tats.get_mut(key) {
            Some(stored) => *stored = new_tat,
            None => {
                tats.insert(key.to_owned(), new_tat);
            }
        }
        let debt = new_tat - now;
        let remaining = ((w - debt).max(0) / t.max(1)) as u64;
        Decision {
            allowed: true,
            limit,
            remaining: remaining.min(limit),
            reset: nanos(debt),
            retry_after: Duration::ZERO,
        }
    }
}

fn nanos(n: i128) -> Duration {
    Duration::from_nanos(u64::try_from(n.max(0)).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_burst_then_refusal_then_steady_refill() {
        let l = Limiter::default();
        let t0 = l.origin + Duration::from_secs(1);
        let minute = Duration::from_secs(60);
        for i in 0..10 {
            let d = l.check_at("a", 10, minute, t0);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 9 - i);
        }
        let refused = l.check_at("a", 10, minute, t0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_secs(6));
        // One slot comes back every 6 s.
        assert!(
            !l.check_at("a", 10, minute, t0 + Duration::from_secs(5))
                .allowed
        );
        let d = l.check_at("a", 10, minute, t0 + Duration::from_secs(6));
        assert!(d.allowed && d.remaining == 0);
        // Keys are independent.
        assert!(l.check_at("b", 10, minute, t0).allowed);
        // After a whole window everything is back.
        assert_eq!(
            l.check_at("a", 10, minute, t0 + Duration::from_secs(120))
                .remaining,
            9
        );
    }

    #[test]
    fn over_a_long_run_the_rate_holds() {
        let l = Limiter::default();
        let start = l.origin;
        let mut allowed = 0;
        // 100 attempts per second for 10 minutes against 60 per minute.
        for ms in (0..600_000).step_by(10) {
            if l.check_at(
                "k",
                60,
                Duration::from_secs(60),
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
}
