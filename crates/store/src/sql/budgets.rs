//! Budget counters with reservations: a call reserves before it runs and settles after,
//! so concurrent calls never spend past a hard budget.

use super::Store;
use crate::backend::{Backend, TxKind};
use crate::{BudgetLimit, BudgetState, BudgetStore, Result, Settled};
use async_trait::async_trait;
use berth_core::TenantScope;
use berth_core::clock::now_ms;
use sqlx::Row as _;

#[async_trait]
impl BudgetStore for Store {
    async fn reserve_budget(
        &self,
        scope: &TenantScope,
        hold_id: &str,
        budgets: &[BudgetLimit],
        want: i64,
        floor: i64,
        expires_at_ms: i64,
    ) -> Result<Option<i64>> {
        let tenant = scope.tenant_str();
        // A concurrent reservation may take the headroom between the read and the
        // conditional update; the update then changes nothing and we look again.
        for _attempt in 0..8 {
            let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
            let mut amount = want.max(floor);
            for b in budgets {
                sqlx::query(
                    "INSERT INTO budget_counters (tenant_id, budget) VALUES ($1, $2) \
                     ON CONFLICT (tenant_id, budget) DO NOTHING",
                )
                .bind(tenant)
                .bind(&b.budget)
                .execute(&mut *tx)
                .await?;
                if let Some(limit) = b.limit_nano {
                    let row = sqlx::query(
                        "SELECT spent_nano, reserved_nano FROM budget_counters \
                         WHERE tenant_id = $1 AND budget = $2",
                    )
                    .bind(tenant)
                    .bind(&b.budget)
                    .fetch_one(&mut *tx)
                    .await?;
                    let spent: i64 = row.try_get("spent_nano")?;
                    let reserved: i64 = row.try_get("reserved_nano")?;
                    amount = amount.min(limit - spent - reserved);
                }
            }
            if amount < floor || amount <= 0 {
                return Ok(None);
            }
            let mut lost_race = false;
            for b in budgets {
                let done = sqlx::query(
                    "UPDATE budget_counters SET reserved_nano = reserved_nano + $1 \
                     WHERE tenant_id = $2 AND budget = $3 AND ($4 < 0 \
                     OR spent_nano + reserved_nano + $1 <= $4)",
                )
                .bind(amount)
                .bind(tenant)
                .bind(&b.budget)
                .bind(b.limit_nano.unwrap_or(-1))
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    lost_race = true;
                    break;
                }
                sqlx::query(
                    "INSERT INTO budget_holds (tenant_id, id, budget, amount_nano, expires_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(tenant)
                .bind(hold_id)
                .bind(&b.budget)
                .bind(amount)
                .bind(expires_at_ms)
                .execute(&mut *tx)
                .await?;
            }
            if lost_race {
                tx.rollback().await?;
                continue;
            }
            tx.commit().await?;
            return Ok(Some(amount));
        }
        Ok(None)
    }

    async fn settle_budget(
        &self,
        scope: &TenantScope,
        hold_id: &str,
        actual: i64,
        budgets: &[String],
    ) -> Result<Vec<Settled>> {
        let tenant = scope.tenant_str();
        let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
        let first = sqlx::query(
            "INSERT INTO budget_settlements (tenant_id, id, settled_at) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, id) DO NOTHING",
        )
        .bind(tenant)
        .bind(hold_id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        if first.rows_affected() == 0 {
            return Ok(Vec::new()); // settled before (a retry whose answer was lost)
        }
        let holds = sqlx::query(
            "DELETE FROM budget_holds WHERE tenant_id = $1 AND id = $2 \
             RETURNING budget, amount_nano",
        )
        .bind(tenant)
        .bind(hold_id)
        .fetch_all(&mut *tx)
        .await?;
        if holds.is_empty() {
            // The hold expired (and gave its room back) before the call ended: the
            // spend is still the tenant's.
            let mut out = Vec::with_capacity(budgets.len());
            for budget in budgets {
                sqlx::query(
                    "INSERT INTO budget_counters (tenant_id, budget) VALUES ($1, $2) \
                     ON CONFLICT (tenant_id, budget) DO NOTHING",
                )
                .bind(tenant)
                .bind(budget)
                .execute(&mut *tx)
                .await?;
                let after: i64 = sqlx::query_scalar(
                    "UPDATE budget_counters SET spent_nano = spent_nano + $1 \
                     WHERE tenant_id = $2 AND budget = $3 RETURNING spent_nano",
                )
                .bind(actual)
                .bind(tenant)
                .bind(budget)
                .fetch_one(&mut *tx)
                .await?;
                out.push(Settled {
                    budget: budget.clone(),
                    spent_before_nano: after - actual,
                    spent_after_nano: after,
                });
            }
            tx.commit().await?;
            return Ok(out);
        }
        let mut out = Vec::with_capacity(holds.len());
        for h in &holds {
            let budget: String = h.try_get("budget")?;
            let amount: i64 = h.try_get("amount_nano")?;
            let after: i64 = sqlx::query_scalar(
                "UPDATE budget_counters SET reserved_nano = reserved_nano - $1, \
                 spent_nano = spent_nano + $2 WHERE tenant_id = $3 AND budget = $4 \
                 RETURNING spent_nano",
            )
            .bind(amount)
            .bind(actual)
            .bind(tenant)
            .bind(&budget)
            .fetch_one(&mut *tx)
            .await?;
            out.push(Settled {
                budget,
                spent_before_nano: after - actual,
                spent_after_nano: after,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn init_budget(&self, scope: &TenantScope, budget: &str, spent: i64) -> Result<()> {
        let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
        sqlx::query(
            "INSERT INTO budget_counters (tenant_id, budget, spent_nano) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, budget) DO NOTHING",
        )
        .bind(scope.tenant_str())
        .bind(budget)
        .bind(spent)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release_expired_holds(&self, scope: &TenantScope, now: i64) -> Result<u64> {
        let tenant = scope.tenant_str();
        let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
        // A settlement is retried for minutes at most; a day of them is plenty.
        sqlx::query("DELETE FROM budget_settlements WHERE tenant_id = $1 AND settled_at < $2")
            .bind(tenant)
            .bind(now - 86_400_000)
            .execute(&mut *tx)
            .await?;
        let holds = sqlx::query(
            "DELETE FROM budget_holds WHERE tenant_id = $1 AND expires_at < $2 \
             RETURNING budget, amount_nano",
        )
        .bind(tenant)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        for h in &holds {
            sqlx::query(
                "UPDATE budget_counters SET reserved_nano = reserved_nano - $1 \
                 WHERE tenant_id = $2 AND budget = $3",
            )
            .bind(h.try_get::<i64, _>("amount_nano")?)
            .bind(tenant)
            .bind(h.try_get::<String, _>("budget")?)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(holds.len() as u64)
    }

    async fn budget_states(
        &self,
        scope: &TenantScope,
        budgets: &[String],
    ) -> Result<Vec<BudgetState>> {
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        let mut out = Vec::with_capacity(budgets.len());
        for b in budgets {
            let row = sqlx::query(
                "SELECT spent_nano, reserved_nano FROM budget_counters \
                 WHERE tenant_id = $1 AND budget = $2",
            )
            .bind(scope.tenant_str())
            .bind(b)
            .fetch_optional(&mut *tx)
            .await?;
            out.push(match row {
                Some(r) => BudgetState {
                    spent_nano: r.try_get("spent_nano")?,
                    reserved_nano: r.try_get("reserved_nano")?,
                },
                None => BudgetState::default(),
            });
        }
        tx.commit().await?;
        Ok(out)
    }
}
