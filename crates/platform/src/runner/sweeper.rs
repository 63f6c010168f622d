//! The sweeper: once at start and then every half lease, runs whose lease ran out fail as
//! `interrupted`, approvals past their time expire, and queued runs nobody holds are
//! taken. One tenant's failure is logged and counted, never stops the others.

use super::record::{end_live, record_tool_calls};
use crate::Platform;
use crate::error::Error;
use crate::limits::share_of;
use crate::policy;
use berth_audit::NewEntry;
use berth_core::TenantScope;
use berth_core::clock::now_ms;
use berth_store::PageRequest;
use serde_json::json;
use std::time::Duration;

/// Once at start and then every lease period: runs of dead processes fail as
/// `interrupted`, approvals past their time expire, queued runs nobody holds are taken.
pub(crate) async fn sweeper(state: Platform) {
    loop {
        if let Err(e) = sweep(&state).await {
            tracing::warn!(error = %e.message, "run sweep failed");
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(state.runner.settings.lease.max(Duration::from_millis(200)) / 2) => {}
        }
    }
}

/// Sweeps every tenant. One tenant's failure (a store error on its rows, a policy that no
/// longer reads) is logged, counted and skipped: the tenants after it are swept all the
/// same. Only a failure to list tenants ends the pass early.
pub async fn sweep(state: &Platform) -> Result<(), Error> {
    let mut cursor = None;
    loop {
        let page = state
            .store
            .list_tenants(&PageRequest {
                limit: PageRequest::MAX_LIMIT,
                cursor: cursor.clone(),
            })
            .await?;
        for tenant in &page.items {
            if let Err(e) = sweep_tenant(state, tenant).await {
                metrics::counter!("berth_sweep_tenant_failures_total").increment(1);
                tracing::warn!(tenant = %tenant.id, error = %e.message, "sweep of one tenant failed; the others go on");
            }
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            return Ok(());
        }
    }
}

pub(super) async fn sweep_tenant(
    state: &Platform,
    tenant: &berth_store::Tenant,
) -> Result<(), Error> {
    let interrupted = json!({"type": "internal", "code": "interrupted",
        "message": "the process running this run stopped before it finished; usage spent so far is kept"})
    .to_string();
    let scope = TenantScope::for_system(tenant.id.clone());
    for id in state
        .store
        .fail_expired_leases(&scope, now_ms(), &interrupted)
        .await?
    {
        tracing::warn!(tenant = %tenant.id, run = %id, "run interrupted: its process stopped");
        let Ok(Some(run)) = state.store.get_run(&scope, &id).await else {
            continue;
        };
        // The tool calls its steps recorded before the crash are billed (model calls were
        // metered by the gateway as they were answered). Event ids are the steps', so a
        // call the dead process had already metered counts once.
        match state.store.run_steps(&scope, &id).await {
            Ok(steps) => record_tool_calls(state, &scope, &run, &steps).await,
            Err(e) => tracing::warn!(run = %id, error = %e, "steps of an interrupted run not read"),
        }
        if let Some(live) = state.runner.hub.get(&scope, &id) {
            end_live(state, &scope, run, &live);
        }
    }
    // Holds first: they need no policy, so a policy that no longer reads does not keep
    // this tenant's expired holds (and their money) from being settled.
    state.store.release_expired_holds(&scope, now_ms()).await?;
    let policy = policy::effective(state, &scope).await?;
    let share = share_of(state, &tenant.plan, &policy);
    for a in state.store.expired_approvals(&scope, now_ms()).await? {
        let entry = NewEntry::new(
            "system",
            "approval.expire",
            &a.id,
            json!({"run": a.run_id, "tool": a.tool}),
        );
        if state
            .store
            .decide_approval(
                &scope,
                &a.id,
                "expired",
                Some("no decision in time"),
                "system",
                &entry,
            )
            .await?
            .is_some()
            && let Some(run_id) = a.run_id.as_deref()
        {
            state.runner.enqueue(&scope, share, run_id);
        }
    }
    for run in state.store.queued_runs(&scope, 100).await? {
        state.runner.enqueue(&scope, share, &run.id);
    }
    Ok(())
}
