//! Rate limits by GCRA (the generic cell rate algorithm): one trait, two backends (in
//! memory on one node, in Redis for several), one arithmetic.
//!
//! Per key, one number is kept: the theoretical arrival time (TAT) of the next unit. A
//! limit of `L` per window `W` spaces units `T = W / L` apart and lets a burst of `L`
//! through at once; a check of cost `n` (a request is 1, a call's tokens are N) takes
//! `n·T`. The state is the *debt* `TAT - now`: a check is allowed when `debt + n·T ≤ W`.
//! Written here rather than taken from `governor` because each key has its own limit
//! (tenant plans differ), callers need the remaining count for `x-ratelimit-*` headers,
//! and the Redis version for several replicas must be the very same arithmetic: both
//! backends only find the debt (from their clock and their store) and leave every other
//! number to [`Gcra`].

mod memory;
mod redis_limiter;

pub use memory::MemoryLimiter;
pub use redis_limiter::{RedisLimiter, RedisLimiterError, RedisOptions};

use std::time::Duration;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    /// Units that could still go through right now (after this check, if it was allowed).
    pub remaining: u64,
    /// Until the window is whole again (all `limit` available).
    pub reset: Duration,
    /// When refused: how long until this check (same cost) would be allowed. A cost above
    /// the limit is never allowed; its `retry_after` is then longer than the window.
    pub retry_after: Duration,
}

/// A rate limiter shared by every request of a process (and, for Redis, of every process).
///
/// `check` never fails: a backend that cannot reach its store decides by its own policy
/// (see [`RedisLimiter`]) rather than handing the request path an error to guess about.
#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync {
    /// Counts `cost` units against `key`, limited to `limit` per `window`. A refused check
    /// takes nothing. `key` must already name its tenant; the limiter adds only its own
    /// prefix.
    async fn check(&self, key: &str, limit: u64, window: Duration, cost: u64) -> Decision;

    /// Settles an earlier allowed check whose cost was an estimate: `delta` more units
    /// (positive: they were used, so they are taken without a check) or fewer (negative:
    /// given back, never below an empty bucket).
    async fn settle(&self, key: &str, limit: u64, window: Duration, delta: i64);

    /// `memory` or `redis`, for logs and the benchmark.
    fn backend(&self) -> &'static str;
}

/// The GCRA numbers of one limit, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    pub limit: u64,
    /// The window `W`.
    pub w: i128,
    /// The emission interval `T = W / L`, at least 1 ns: limits above one unit per
    /// nanosecond are held to that.
    pub t: i128,
}

impl Gcra {
    pub fn new(limit: u64, window: Duration) -> Self {
        let limit = limit.max(1);
        let w = window.as_nanos() as i128;
        Gcra {
            limit,
            w,
            t: (w / i128::from(limit)).max(1),
        }
    }

    /// What `cost` units cost in time.
    pub fn cost(&self, cost: u64) -> i128 {
        i128::from(cost).saturating_mul(self.t)
    }

    /// Whether a check of `cost` against `debt` (`TAT - now`, not below zero) is allowed.
    pub fn allows(&self, debt: i128, cost: u64) -> bool {
        debt + self.cost(cost) <= self.w
    }

    /// The decision for a check of `cost` against `debt`, given whether it was allowed
    /// (which the backend decided with [`Gcra::allows`], atomically with its update).
    pub fn decision(&self, debt: i128, cost: u64, allowed: bool) -> Decision {
        let debt = debt.max(0);
        let after = if allowed {
            debt + self.cost(cost)
        } else {
            debt
        };
        let remaining = ((self.w - after).max(0) / self.t) as u64;
        Decision {
            allowed,
            limit: self.limit,
            remaining: remaining.min(self.limit),
            reset: nanos(after),
            retry_after: if allowed {
                Duration::ZERO
            } else {
                nanos(debt + self.cost(cost) - self.w)
            },
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
    fn the_arithmetic_of_one_limit() {
        let g = Gcra::new(10, Duration::from_secs(60));
        let s = 1_000_000_000i128;
        assert_eq!(g.t, 6 * s);
        // An empty bucket: the first unit leaves 9 and a debt of T.
        let d = g.decision(0, 1, g.allows(0, 1));
        assert_eq!(
            (d.allowed, d.remaining, d.reset),
            (true, 9, Duration::from_secs(6))
        );
        // A full one refuses, and says when one unit comes back.
        assert!(!g.allows(60 * s, 1));
        let d = g.decision(60 * s, 1, false);
        assert_eq!((d.remaining, d.retry_after), (0, Duration::from_secs(6)));
        // Cost 3 with 2 units left waits for one more.
        let d = g.decision(48 * s, 3, g.allows(48 * s, 3));
        assert_eq!(
            (d.allowed, d.remaining, d.retry_after),
            (false, 2, Duration::from_secs(6))
        );
        // A cost above the limit is never allowed, even from empty.
        assert!(!g.allows(0, 11));
        assert!(g.decision(0, 11, false).retry_after > Duration::ZERO);
        // Limits beyond one unit per nanosecond do not divide by zero.
        let huge = Gcra::new(u64::MAX, Duration::from_secs(1));
        assert_eq!(huge.t, 1);
        assert!(huge.allows(0, 1_000));
    }
}
