//! Plans: the per-tenant limits an operator sells, set in the server config.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub requests_per_minute: u32,
    pub tokens_per_minute: u64,
    pub concurrent_runs: u32,
    /// A monthly spending cap that always applies (hard); a tenant's own budgets can only
    /// tighten it.
    #[serde(default)]
    pub monthly_budget_usd: Option<f64>,
    /// Share of capacity under contention (weighted fair queuing).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Added to a tenant's usage on its invoice, in percent of the subtotal.
    #[serde(default)]
    pub markup_percent: f64,
}

fn default_weight() -> u32 {
    1
}

/// The plans a server has when its config names none: `free` and `pro`.
pub fn default_plans() -> BTreeMap<String, Plan> {
    BTreeMap::from([
        (
            "free".to_owned(),
            Plan {
                requests_per_minute: 60,
                tokens_per_minute: 100_000,
                concurrent_runs: 2,
                monthly_budget_usd: Some(5.0),
                weight: 1,
                markup_percent: 0.0,
            },
        ),
        (
            "pro".to_owned(),
            Plan {
                requests_per_minute: 3000,
                tokens_per_minute: 5_000_000,
                concurrent_runs: 50,
                monthly_budget_usd: None,
                weight: 10,
                markup_percent: 0.0,
            },
        ),
    ])
}
