//! What a call holds before it runs and settles after: its worst case reserved on the
//! budgets it counts against and held within its cost limit (or refused when neither has
//! room, or when a hard budget meets an unpriced model), and the settlement of what it
//! really cost, journaled through the [`Settler`](crate::Settler).

use crate::{
    CallMeta, Gateway, GatewayError, Kind, NanoUsd, Refusal, Reservation, TenantScope,
    UNBOUNDED_OUTPUT_CAP,
};

/// The gateway error for a ledger's refusal.
fn refused(r: Refusal) -> GatewayError {
    if r.unavailable {
        GatewayError::BudgetUnavailable { scope: r.scope }
    } else {
        GatewayError::BudgetExceeded {
            scope: r.scope,
            limit_usd: r.limit.as_usd(),
        }
    }
}

/// The scope named by a refusal under [`CallMeta::cost_limit`].
pub const RUN_BUDGET_SCOPE: &str = "run";

/// What a call holds until it settles: its reservation on the ledger (if budgets apply)
/// and the output cap that what it holds pays for.
#[derive(Default)]
pub(crate) struct Hold {
    pub(crate) reservation: Option<Reservation>,
    pub(crate) cap: Option<u32>,
    /// The cap is what the call's cost limit pays for (not a budget's room).
    pub(crate) capped_by_cost_limit: bool,
}

impl Gateway {
    /// Holds the call's worst case: `input_tokens` plus `max_tokens` of output (or
    /// `UNBOUNDED_OUTPUT_CAP` when a hard budget or a cost limit applies and the call sets
    /// none) at the dearest target's price, reserved on every budget the call counts
    /// against and held within its cost limit. When less room is left than that, the call
    /// gets what is left and its output is capped to what that pays for. Under a hard
    /// budget every target must be priced: an unpriced one would run for free, so the call
    /// is refused.
    pub(crate) async fn hold(
        &self,
        scope: &TenantScope,
        meta: &CallMeta,
        targets: &[String],
        input_tokens: u64,
        max_tokens: Option<u32>,
    ) -> Result<Hold, GatewayError> {
        let ledger = self.budgets.as_ref().filter(|_| !meta.budgets.is_empty());
        if ledger.is_none() && meta.cost_limit.is_none() {
            return Ok(Hold::default());
        }
        let hard = ledger.and(meta.budgets.iter().find(|b| b.hard));
        // The dearest target decides: a fallback may be pricier than the primary.
        let mut dearest: Option<berth_meter::Price> = None;
        for full in targets {
            match (self.target_price(scope, full).await?, hard) {
                // No such provider: the call fails there, before anything is spent.
                (None, _) | (Some(None), None) => {}
                (Some(Some(p)), _) => {
                    if dearest.is_none_or(|d| (p.output, p.input) > (d.output, d.input)) {
                        dearest = Some(p);
                    }
                }
                (Some(None), Some(b)) => {
                    return Err(GatewayError::Unpriced {
                        model: full.clone(),
                        scope: b.scope.clone(),
                    });
                }
            }
        }
        // Nothing priced costs nothing (and no hard budget applies: see above).
        let Some(price) = dearest else {
            return Ok(Hold::default());
        };
        let bounded = hard.is_some() || meta.cost_limit.is_some();
        let max_out = match max_tokens {
            Some(m) => m,
            None if bounded => UNBOUNDED_OUTPUT_CAP,
            None => 0,
        };
        let worst = price.cost(input_tokens, u64::from(max_out), 0);
        let floor = price.cost(input_tokens, 1, 0);
        let mut want = worst;
        if let Some(limit) = meta.cost_limit {
            if floor > limit {
                return Err(GatewayError::BudgetExceeded {
                    scope: RUN_BUDGET_SCOPE.to_owned(),
                    limit_usd: limit.as_usd(),
                });
            }
            want = want.min(limit);
        }
        let (reservation, amount) = match ledger.map(|s| s.ledger()) {
            Some(l) => {
                let r = l
                    .reserve(scope, &meta.budgets, Some(want), floor)
                    .await
                    .map_err(refused)?;
                let amount = r.amount;
                (Some(r), amount)
            }
            None => (None, want),
        };
        let cap = match (bounded, amount >= worst, max_tokens) {
            (false, _, _) | (true, true, Some(_)) => None,
            (true, true, None) => Some(UNBOUNDED_OUTPUT_CAP),
            (true, false, asked) => Some(
                u32::try_from(berth_meter::budget::affordable_output(
                    price,
                    input_tokens,
                    amount,
                ))
                .unwrap_or(u32::MAX)
                .min(asked.unwrap_or(UNBOUNDED_OUTPUT_CAP))
                .max(1),
            ),
        };
        let capped_by_cost_limit =
            cap.is_some() && meta.cost_limit.is_some_and(|l| l < worst && amount >= l);
        Ok(Hold {
            reservation,
            cap,
            capped_by_cost_limit,
        })
    }

    /// The price of `full_model` as it would be charged: by its provider's kind, a
    /// platform provider's or the tenant's own. Outer `None`: no provider of that name.
    async fn target_price(
        &self,
        scope: &TenantScope,
        full_model: &str,
    ) -> Result<Option<Option<berth_meter::Price>>, GatewayError> {
        let Some((provider, _)) = full_model.split_once('/') else {
            return Ok(None);
        };
        let kind = match self.platform.get(provider) {
            Some(p) => p.kind,
            None => {
                let own = self
                    .providers
                    .get_provider(scope, provider)
                    .await
                    .map_err(|e| GatewayError::Internal(e.to_string()))?;
                match own.and_then(|o| Kind::parse(&o.kind)) {
                    Some(k) => k,
                    None => return Ok(None),
                }
            }
        };
        Ok(Some(self.prices.lookup(full_model, kind.price_family())))
    }

    /// Settles `hold`: journaled now; answers the journal line that makes it durable
    /// (see [`Gateway::settled`]), if there is one to wait for.
    pub(crate) fn settle(&self, scope: &TenantScope, hold: Hold, actual: NanoUsd) -> Option<u64> {
        match (&self.budgets, hold.reservation) {
            (Some(settler), Some(r)) => settler.settle(scope, r, actual),
            _ => None,
        }
    }

    /// Waits until the settlement journaled as line `seq` is durable; at once for a call
    /// that settled nothing (no hold, or no journal), so calls outside hard budgets never
    /// wait for another call's group commit.
    pub(crate) async fn settled(&self, seq: Option<u64>) {
        if let (Some(settler), Some(seq)) = (&self.budgets, seq) {
            settler.synced(seq).await;
        }
    }
}
