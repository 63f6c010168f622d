//! Budgets: which budgets a call counts against (policy and plan), the gateway's ledger
//! over the store's reservation counters, and what a crossed alert fraction sets off: an
//! audit entry and the tenant's `budget.alert` webhooks (HMAC-signed, retried with backoff,
//! through the egress guard).

use crate::Platform;
use crate::auth::TenantCaller;
use berth_audit::NewEntry;
use berth_core::clock::now_ms;
use berth_core::{Id, IdKind, NanoUsd, Plan, Policy, TenantScope};
use berth_gateway::{BudgetLedger, Refusal, Reservation};
use berth_meter::budget::{ActiveBudget, applicable, crossed};
use berth_store::{BudgetLimit, Store, UsageDim, UsageQuery};
use berth_vault::Vault;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio_util::task::TaskTracker;

/// A reservation never settled (its process died mid-call) gives its room back after this.
const HOLD_TTL_MS: i64 = 10 * 60 * 1000;

/// The plan a tenant is held to (the default plan when its own is gone from the config).
pub fn plan_of<'a>(state: &'a Platform, plan: &str) -> Option<&'a Plan> {
    state
        .settings
        .plans
        .get(plan)
        .or_else(|| state.settings.plans.get(&state.settings.default_plan))
}

/// The budgets a call by this caller (for `agent`) counts against now.
pub fn for_call(
    state: &Platform,
    auth: &TenantCaller,
    policy: &Policy,
    agent: Option<&str>,
) -> Vec<ActiveBudget> {
    for_tenant(
        state,
        &auth.tenant.plan,
        policy,
        agent,
        auth.key.as_ref().map(|k| k.id.as_str()),
    )
}

pub fn for_tenant(
    state: &Platform,
    plan: &str,
    policy: &Policy,
    agent: Option<&str>,
    key_id: Option<&str>,
) -> Vec<ActiveBudget> {
    match plan_of(state, plan) {
        Some(p) => applicable(&policy.budgets, p, agent, key_id, now_ms()),
        None => Vec::new(),
    }
}

/// The gateway's ledger: reservations in the store, alerts to audit and webhooks.
#[derive(Clone)]
pub struct StoreLedger {
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
    http: reqwest::Client,
    tasks: TaskTracker,
    usage: berth_meter::UsageRecorder,
    /// Counters this process has already made sure exist (tenant, counter).
    known: Arc<Mutex<HashSet<(String, String)>>>,
}

impl StoreLedger {
    /// `http` must be the egress-guarded client: webhook URLs are the tenant's.
    pub fn new(
        store: Arc<dyn Store>,
        vault: Arc<Vault>,
        http: reqwest::Client,
        tasks: TaskTracker,
        usage: berth_meter::UsageRecorder,
    ) -> Self {
        StoreLedger {
            store,
            vault,
            http,
            tasks,
            usage,
            known: Arc::default(),
        }
    }

    /// Creates the counters this process has not seen yet, each starting from what its
    /// scope already spent in its period (from the usage ledger).
    async fn ensure_counters(
        &self,
        scope: &TenantScope,
        budgets: &[ActiveBudget],
    ) -> Result<(), berth_store::StoreError> {
        for b in budgets {
            let key = (scope.tenant_str().to_owned(), b.counter.clone());
            if self.known.lock().map(|k| k.contains(&key)).unwrap_or(false) {
                continue;
            }
            // Spend still in the recorder's batch counts too.
            self.usage.flush().await;
            let spent = spent_in_period(self.store.as_ref(), scope, b).await?;
            self.store.init_budget(scope, &b.counter, spent.0).await?;
            if let Ok(mut k) = self.known.lock() {
                k.insert(key);
            }
        }
        Ok(())
    }

    async fn alert(
        &self,
        scope: &TenantScope,
        budget: &ActiveBudget,
        fraction: f64,
        spent: NanoUsd,
    ) {
        let details = json!({"budget": budget.counter, "scope": budget.scope, "fraction": fraction,
                             "spent_usd": spent.as_usd(), "limit_usd": budget.limit.as_usd(), "hard": budget.hard});
        let entry = NewEntry::new("system", "budget.alert", &budget.scope, details.clone());
        if let Err(e) = self.store.append_audit(scope, &entry).await {
            tracing::error!(error = %e, "budget alert not audited");
        }
        let policy: Option<Policy> = match self.store.get_policy(scope).await {
            Ok(Some(p)) => serde_json::from_str(&p.document).ok(),
            _ => None,
        };
        for hook in policy.map(|p| p.webhooks).unwrap_or_default() {
            if !hook.events.iter().any(|e| e == "budget.alert") {
                continue;
            }
            let secret = match &hook.secret {
                Some(name) => match self
                    .vault
                    .reveal_for(scope, name, &webhook_destination(&hook.url))
                    .await
                {
                    Ok(Some(v)) => Some(v.expose().to_owned()),
                    _ => {
                        tracing::warn!(tenant = %scope.tenant(), secret = %name, "webhook secret missing; not delivered");
                        continue;
                    }
                },
                None => None,
            };
            let body = json!({"type": "budget.alert", "id": Id::new(IdKind::Event).into_string(),
                              "tenant": scope.tenant_str(), "at": berth_core::clock::rfc3339(now_ms()), "data": details})
            .to_string();
            let (http, url, tenant) = (self.http.clone(), hook.url.clone(), scope.tenant().clone());
            self.tasks.spawn(async move {
                deliver(&http, &url, &body, secret.as_deref(), &tenant).await
            });
        }
    }
}

/// A webhook of the policy as a place its signing secret goes to (policies are written by
/// admins only).
fn webhook_destination(url: &str) -> berth_core::binding::Destination {
    berth_core::binding::Destination {
        kind: berth_core::binding::DestinationKind::Webhook,
        name: url.to_owned(),
        host: reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            .unwrap_or_default(),
        written_by: berth_core::Role::Admin,
    }
}

/// What `budget`'s scope spent since its period began, from the usage ledger.
async fn spent_in_period(
    store: &dyn Store,
    scope: &TenantScope,
    b: &ActiveBudget,
) -> Result<NanoUsd, berth_store::StoreError> {
    let start = period_start(b, now_ms());
    let (dim, want) = if let Some(agent) = b.scope.strip_prefix("agent:") {
        (Some(UsageDim::Agent), Some(agent))
    } else if let Some(key) = b.scope.strip_prefix("key:") {
        (Some(UsageDim::Key), Some(key))
    } else {
        (None, None)
    };
    let rows = store
        .query_usage(
            scope,
            &UsageQuery {
                from_ms: Some(start),
                to_ms: None,
                group_by: dim.into_iter().collect(),
            },
        )
        .await?;
    Ok(NanoUsd(
        rows.iter()
            .filter(|r| want.is_none() || r.dims.first().and_then(|d| d.1.as_deref()) == want)
            .map(|r| r.cost_nano)
            .sum(),
    ))
}

/// When `b`'s current period began (UTC midnight of the day, or of the month's first day).
fn period_start(b: &ActiveBudget, now: i64) -> i64 {
    let day = berth_core::clock::rfc3339(now);
    let start = match b.period {
        berth_core::policy::Period::Day => {
            format!("{}T00:00:00Z", day.get(..10).unwrap_or_default())
        }
        berth_core::policy::Period::Month => {
            format!("{}-01T00:00:00Z", day.get(..7).unwrap_or_default())
        }
    };
    berth_core::clock::parse_rfc3339(&start).unwrap_or(now)
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: the receiver recomputes it with
/// the shared secret and refuses old timestamps, so a delivery can be neither forged nor
/// replayed later.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Posts one webhook delivery, retrying with exponential backoff (4 attempts).
async fn deliver(
    http: &reqwest::Client,
    url: &str,
    body: &str,
    secret: Option<&str>,
    tenant: &berth_core::TenantId,
) {
    let mut delay = Duration::from_millis(500);
    for attempt in 1..=4 {
        let mut req = http
            .post(url)
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(10))
            .body(body.to_owned());
        if let Some(s) = secret {
            req = req.header("berth-signature", signature(s, now_ms() / 1000, body));
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => {
                tracing::warn!(%tenant, attempt, status = r.status().as_u16(), "webhook delivery refused")
            }
            Err(e) => tracing::warn!(%tenant, attempt, error = %e, "webhook delivery failed"),
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
}

#[async_trait::async_trait]
impl BudgetLedger for StoreLedger {
    async fn reserve(
        &self,
        scope: &TenantScope,
        budgets: &[ActiveBudget],
        want: Option<NanoUsd>,
        floor: NanoUsd,
    ) -> Result<Reservation, Refusal> {
        let limits: Vec<BudgetLimit> = budgets
            .iter()
            .map(|b| BudgetLimit {
                budget: b.counter.clone(),
                limit_nano: b.hard.then_some(b.limit.0),
            })
            .collect();
        if let Err(e) = self.ensure_counters(scope, budgets).await {
            tracing::error!(error = %e, "budget counters unavailable");
            return Err(Refusal {
                scope: budgets.first().map(|b| b.scope.clone()).unwrap_or_default(),
                limit: budgets.first().map(|b| b.limit).unwrap_or(NanoUsd(0)),
                unavailable: true,
            });
        }
        let id = format!("hold_{}", Id::new(IdKind::Event).as_str());
        let refusal = || {
            // Name the budget with the least room.
            let b = budgets
                .iter()
                .filter(|b| b.hard)
                .min_by_key(|b| b.limit.0)
                .or(budgets.first());
            Refusal {
                scope: b.map(|b| b.scope.clone()).unwrap_or_default(),
                limit: b.map(|b| b.limit).unwrap_or(NanoUsd(0)),
                unavailable: false,
            }
        };
        match self
            .store
            .reserve_budget(
                scope,
                &id,
                &limits,
                want.map_or(i64::MAX, |w| w.0),
                floor.0,
                now_ms() + HOLD_TTL_MS,
            )
            .await
        {
            Ok(Some(amount)) => Ok(Reservation {
                id,
                amount: NanoUsd(amount),
                budgets: budgets.to_vec(),
            }),
            Ok(None) => Err(refusal()),
            Err(e) => {
                // Money is at stake: when the ledger cannot be read, refuse rather than
                // let calls run unaccounted.
                tracing::error!(error = %e, "budget reservation failed");
                Err(Refusal {
                    unavailable: true,
                    ..refusal()
                })
            }
        }
    }

    /// One attempt (the gateway's `Settler` retries from its journal); idempotent by hold
    /// id, so a retry after a lost answer charges once. Alerts follow the first landing.
    async fn settle(
        &self,
        scope: &TenantScope,
        reservation: &Reservation,
        actual: NanoUsd,
    ) -> Result<(), berth_store::StoreError> {
        let counters: Vec<String> = reservation
            .budgets
            .iter()
            .map(|b| b.counter.clone())
            .collect();
        let settled = self
            .store
            .settle_budget(scope, &reservation.id, actual.0, &counters)
            .await?;
        for s in settled {
            let Some(b) = reservation.budgets.iter().find(|b| b.counter == s.budget) else {
                continue;
            };
            for f in crossed(b, NanoUsd(s.spent_before_nano), NanoUsd(s.spent_after_nano)) {
                self.alert(scope, b, f, NanoUsd(s.spent_after_nano)).await;
            }
        }
        Ok(())
    }
}

/// One budget's state for `/v1/usage/summary`.
pub async fn states(
    state: &Platform,
    scope: &TenantScope,
    budgets: &[ActiveBudget],
) -> Result<Vec<Value>, crate::Error> {
    let counters: Vec<String> = budgets.iter().map(|b| b.counter.clone()).collect();
    let got = state.store.budget_states(scope, &counters).await?;
    Ok(budgets
        .iter()
        .zip(got)
        .map(|(b, s)| {
            let spent = NanoUsd(s.spent_nano);
            let at = b.alert_at.iter().copied().fold(f64::INFINITY, f64::min);
            let state = if s.spent_nano >= b.limit.0 {
                "exceeded"
            } else if at.is_finite() && (s.spent_nano as f64) >= at * b.limit.0 as f64 {
                "alert"
            } else {
                "ok"
            };
            json!({"scope": b.scope, "period": match b.period { berth_core::policy::Period::Day => "day", berth_core::policy::Period::Month => "month" },
                   "counter": b.counter, "limit_usd": b.limit.as_usd(), "hard": b.hard,
                   "spent_usd": spent.as_usd(), "reserved_usd": NanoUsd(s.reserved_nano).as_usd(), "state": state})
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_secret_time_and_body() {
        let a = signature("s3cret", 1_700_000_000, "{\"a\":1}");
        assert!(a.starts_with("t=1700000000,v1="));
        assert_eq!(a.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(a, signature("other", 1_700_000_000, "{\"a\":1}"));
        assert_ne!(a, signature("s3cret", 1_700_000_001, "{\"a\":1}"));
        assert_ne!(a, signature("s3cret", 1_700_000_000, "{\"a\":2}"));
    }
}
