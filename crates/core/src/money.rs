//! Money as integer nano-USD, so sums are exact; rounded to 9 decimals only at the edge.

use serde::{Deserialize, Serialize};
use std::ops::{Add, AddAssign};

/// Integer nano-dollars (1 USD = 1_000_000_000).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct NanoUsd(pub i64);

impl NanoUsd {
    pub const PER_USD: i64 = 1_000_000_000;

    /// The value reported as `cost_usd`: a JSON number with at most 9 decimals.
    pub fn as_usd(self) -> f64 {
        self.0 as f64 / Self::PER_USD as f64
    }

    /// Converts a configured USD amount (e.g. a budget) to nano-USD, rounding to nearest.
    pub fn from_usd(usd: f64) -> Self {
        NanoUsd((usd * Self::PER_USD as f64).round() as i64)
    }
}

impl Add for NanoUsd {
    type Output = NanoUsd;
    fn add(self, rhs: NanoUsd) -> NanoUsd {
        NanoUsd(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for NanoUsd {
    fn add_assign(&mut self, rhs: NanoUsd) {
        self.0 = self.0.saturating_add(rhs.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_are_exact_at_nano_resolution() {
        assert_eq!(NanoUsd::from_usd(0.15).0, 150_000_000);
        assert_eq!(NanoUsd(1).as_usd(), 1e-9);
        assert_eq!((NanoUsd(2) + NanoUsd(3)).0, 5);
    }
}
