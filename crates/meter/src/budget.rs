//! Budgets as calls meet them: which of a tenant's budgets a call counts against (the
//! tenant's, its agent's and its key's, for this day or this month, plus the plan's monthly
//! cap when the tenant set no monthly tenant budget), the counter each one is kept in, and
//! the alert fractions a settle crosses.

use berth_core::clock::rfc3339;
use berth_core::policy::{Budget, Period};
use berth_core::{NanoUsd, Plan};

/// The scope of the plan's monthly cap when the tenant has a monthly budget of its own
/// that does not cover it; it counts everything the tenant spends, like `tenant`.
pub const PLAN_SCOPE: &str = "plan";

/// A budget in force for one call (kept with a settlement in the journal, hence serde).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ActiveBudget {
    /// `tenant`, `agent:NAME`, `key:key_…` or [`PLAN_SCOPE`].
    pub scope: String,
    pub period: Period,
    /// The counter: `"<scope>|<period start>"`, e.g. `"tenant|2026-12"`.
    pub counter: String,
    pub limit: NanoUsd,
    pub hard: bool,
    pub alert_at: Vec<f64>,
}

/// `2026-12` for a month, `2026-12-01` for a day (UTC).
pub fn period_key(period: Period, now_ms: i64) -> String {
    let day = rfc3339(now_ms);
    match period {
        Period::Month => day.get(..7).unwrap_or_default().to_owned(),
        Period::Day => day.get(..10).unwrap_or_default().to_owned(),
    }
}

/// The budgets a call by `key_id` for `agent` counts against now.
pub fn applicable(
    budgets: &[Budget],
    plan: &Plan,
    agent: Option<&str>,
    key_id: Option<&str>,
    now_ms: i64,
) -> Vec<ActiveBudget> {
    select(budgets, plan, now_ms, |scope: &str| {
        scope == "tenant"
            || agent.is_some_and(|a| scope.strip_prefix("agent:") == Some(a))
            || key_id.is_some_and(|k| scope.strip_prefix("key:") == Some(k))
    })
}

/// Every budget of the tenant in force now (for reports).
pub fn all(budgets: &[Budget], plan: &Plan, now_ms: i64) -> Vec<ActiveBudget> {
    select(budgets, plan, now_ms, |_| true)
}

fn select(
    budgets: &[Budget],
    plan: &Plan,
    now_ms: i64,
    applies: impl Fn(&str) -> bool,
) -> Vec<ActiveBudget> {
    let mut out: Vec<ActiveBudget> = budgets
        .iter()
        .filter(|b| applies(&b.scope))
        .map(|b| ActiveBudget {
            scope: b.scope.clone(),
            period: b.period,
            counter: format!("{}|{}", b.scope, period_key(b.period, now_ms)),
            limit: NanoUsd::from_usd(b.limit_usd),
            hard: b.hard,
            alert_at: b.alert_at.clone(),
        })
        .collect();
    // The plan's cap always holds: a tenant's own monthly budget can only tighten it. A
    // hard tenant budget at or below the cap already enforces it; otherwise (none, larger,
    // or soft) the cap is a budget of its own, so the lower limit wins and a soft budget
    // (which only alerts) never lifts it.
    if let Some(cap) = plan.monthly_budget_usd {
        let cap = NanoUsd::from_usd(cap);
        let tenant_months: Vec<&Budget> = budgets
            .iter()
            .filter(|b| b.scope == "tenant" && b.period == Period::Month)
            .collect();
        let covered = tenant_months
            .iter()
            .any(|b| b.hard && NanoUsd::from_usd(b.limit_usd) <= cap);
        if !covered {
            // With no tenant budget the cap is the tenant's monthly budget, as reports
            // have always shown it; next to one of the tenant's own it is the plan's.
            let scope = if tenant_months.is_empty() {
                "tenant"
            } else {
                PLAN_SCOPE
            };
            out.push(ActiveBudget {
                scope: scope.to_owned(),
                period: Period::Month,
                counter: format!("{scope}|{}", period_key(Period::Month, now_ms)),
                limit: cap,
                hard: true,
                alert_at: vec![0.8, 1.0],
            });
        }
    }
    out
}

/// The alert fractions that spending from `before` to `after` crosses (each is crossed by
/// exactly one settle, the one that reaches it).
pub fn crossed(budget: &ActiveBudget, before: NanoUsd, after: NanoUsd) -> Vec<f64> {
    let limit = budget.limit.0 as f64;
    budget
        .alert_at
        .iter()
        .copied()
        .filter(|f| {
            let at = f * limit;
            (before.0 as f64) < at && (after.0 as f64) >= at
        })
        .collect()
}

/// The worst a call can cost: its input (estimated) plus `max_output` tokens at `price`.
/// With no `max_output` the worst case is unbounded (`None`): the caller reserves what the
/// budget allows and caps the call's output to it.
pub fn worst_case(
    price: crate::Price,
    input_tokens: u64,
    max_output: Option<u32>,
) -> Option<NanoUsd> {
    max_output.map(|m| price.cost(input_tokens, u64::from(m), 0))
}

/// How many output tokens `amount` pays for after the input.
pub fn affordable_output(price: crate::Price, input_tokens: u64, amount: NanoUsd) -> u64 {
    let input = price.cost(input_tokens, 0, 0).0;
    if price.output <= 0 {
        return u64::MAX;
    }
    // price.output is nano-USD per million tokens.
    let left = i128::from(amount.0 - input).max(0) * 1_000_000;
    u64::try_from(left / i128::from(price.output)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(scope: &str, period: Period, usd: f64) -> Budget {
        Budget {
            scope: scope.into(),
            period,
            limit_usd: usd,
            hard: true,
            alert_at: vec![0.5, 1.0],
        }
    }

    fn plan(cap: Option<f64>) -> Plan {
        Plan {
            requests_per_minute: 1,
            tokens_per_minute: 1,
            concurrent_runs: 1,
            monthly_budget_usd: cap,
            weight: 1,
            markup_percent: 0.0,
        }
    }

    // 2026-12-01T10:00:00Z
    const NOW: i64 = 1_796_119_200_000;

    #[test]
    fn scopes_periods_and_the_plan_cap() {
        let b = [
            budget("tenant", Period::Day, 1.0),
            budget("agent:support", Period::Month, 2.0),
            budget("key:key_1", Period::Month, 3.0),
            budget("agent:other", Period::Month, 4.0),
        ];
        let got = applicable(&b, &plan(Some(5.0)), Some("support"), Some("key_1"), NOW);
        let counters: Vec<&str> = got.iter().map(|a| a.counter.as_str()).collect();
        assert_eq!(
            counters,
            [
                "tenant|2026-12-01",
                "agent:support|2026-12",
                "key:key_1|2026-12",
                "tenant|2026-12"
            ]
        );
        assert_eq!(
            got[3].limit,
            NanoUsd::from_usd(5.0),
            "plan default when no monthly tenant budget"
        );
        assert!(applicable(&[], &plan(None), None, None, NOW).is_empty());
    }

    #[test]
    fn the_plan_cap_holds_whatever_the_tenant_sets() {
        let limits = |got: &[ActiveBudget]| -> Vec<(String, f64, bool)> {
            got.iter()
                .map(|a| (a.counter.clone(), a.limit.as_usd(), a.hard))
                .collect()
        };
        let cap = plan(Some(5.0));
        // A larger hard budget of the tenant's: both hold, so the cap (lower) wins.
        let larger = [budget("tenant", Period::Month, 9.0)];
        assert_eq!(
            limits(&applicable(&larger, &cap, None, None, NOW)),
            [
                ("tenant|2026-12".to_owned(), 9.0, true),
                ("plan|2026-12".to_owned(), 5.0, true)
            ]
        );
        // A soft one, even far lower, never lifts the hard cap.
        let mut soft = budget("tenant", Period::Month, 1.0);
        soft.hard = false;
        assert_eq!(
            limits(&applicable(&[soft], &cap, None, None, NOW)),
            [
                ("tenant|2026-12".to_owned(), 1.0, false),
                ("plan|2026-12".to_owned(), 5.0, true)
            ]
        );
        // A hard one at or below the cap enforces it already.
        let lower = [budget("tenant", Period::Month, 2.0)];
        assert_eq!(
            limits(&applicable(&lower, &cap, None, None, NOW)),
            [("tenant|2026-12".to_owned(), 2.0, true)]
        );
        // A daily tenant budget leaves the monthly cap as the tenant's monthly budget.
        let daily = [budget("tenant", Period::Day, 50.0)];
        assert_eq!(
            limits(&applicable(&daily, &cap, None, None, NOW)),
            [
                ("tenant|2026-12-01".to_owned(), 50.0, true),
                ("tenant|2026-12".to_owned(), 5.0, true)
            ]
        );
        // Without a plan cap, the tenant's budget is the only one.
        assert_eq!(applicable(&larger, &plan(None), None, None, NOW).len(), 1);
    }

    #[test]
    fn each_alert_fraction_is_crossed_once() {
        let a = &applicable(
            &[budget("tenant", Period::Month, 1.0)],
            &plan(None),
            None,
            None,
            NOW,
        )[0];
        let usd = NanoUsd::from_usd;
        assert_eq!(crossed(a, usd(0.4), usd(0.5)), [0.5]);
        assert!(crossed(a, usd(0.5), usd(0.6)).is_empty());
        assert_eq!(crossed(a, usd(0.1), usd(1.2)), [0.5, 1.0]);
    }

    #[test]
    fn worst_case_and_what_a_reservation_affords() {
        let p = crate::Price::from_usd_per_million(1.0, 2.0, None);
        assert_eq!(
            worst_case(p, 1000, Some(500)),
            Some(NanoUsd(1000 * 1000 + 500 * 2000))
        );
        assert_eq!(worst_case(p, 1000, None), None);
        assert_eq!(
            affordable_output(p, 1000, NanoUsd(1_000_000 + 2000 * 10)),
            10
        );
        assert_eq!(affordable_output(p, 1000, NanoUsd(10)), 0);
    }
}
