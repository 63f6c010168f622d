//! Hard budgets at the gateway: before a call, the worst it can cost is reserved on every
//! budget it counts against (or, when the request sets no `max_tokens`, what the budgets
//! still allow, with the call's output capped to it); after the call the reservation is
//! settled to the real cost. Where reservations are kept (the store) and what a crossed
//! alert fraction sets off (audit, webhooks) is the ledger's business.

use async_trait::async_trait;
use berth_core::{NanoUsd, TenantScope};
use berth_meter::budget::ActiveBudget;
use serde::{Deserialize, Serialize};

/// What a call holds until it settles.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reservation {
    pub id: String,
    pub amount: NanoUsd,
    pub budgets: Vec<ActiveBudget>,
}

/// A call refused because a hard budget has no room for it, or because the ledger could
/// not be read (money is at stake: no call runs unaccounted).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub scope: String,
    pub limit: NanoUsd,
    /// The ledger was unavailable: the budget may well have room (503, not 402).
    pub unavailable: bool,
}

#[async_trait]
pub trait BudgetLedger: Send + Sync {
    /// Reserves up to `want` (unbounded: `None`) and at least `floor` on `budgets`.
    async fn reserve(
        &self,
        scope: &TenantScope,
        budgets: &[ActiveBudget],
        want: Option<NanoUsd>,
        floor: NanoUsd,
    ) -> Result<Reservation, Refusal>;
    /// Releases the reservation and charges `actual`, once however often it is asked for
    /// the same reservation (a retry after a lost answer must not charge twice). One
    /// attempt: [`crate::settle::Settler`] retries, from its journal, unless the store
    /// refused the settlement for what it is (a retry could never land).
    async fn settle(
        &self,
        scope: &TenantScope,
        reservation: &Reservation,
        actual: NanoUsd,
    ) -> Result<(), berth_store::StoreError>;
}
