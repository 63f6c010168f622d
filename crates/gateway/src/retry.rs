//! Retries with exponential backoff and full jitter, and which failures deserve them.

use rand::Rng;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per target, the first included.
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 2,
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The pause before attempt `n` (1 = the first retry): uniform in [0, min(max, base·2ⁿ⁻¹)],
    /// so that clients retrying together spread out instead of arriving in waves.
    pub fn backoff(&self, n: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << n.saturating_sub(1).min(16));
        let cap = exp.min(self.max);
        let ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::thread_rng().gen_range(0..=ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_millis(500),
        };
        for _ in 0..100 {
            assert!(p.backoff(1) <= Duration::from_millis(100));
            assert!(p.backoff(3) <= Duration::from_millis(400));
            assert!(p.backoff(10) <= Duration::from_millis(500));
        }
        // Jitter: not always the same value.
        let samples: std::collections::HashSet<_> = (0..50).map(|_| p.backoff(3)).collect();
        assert!(samples.len() > 1);
    }
}
