//! Human decisions on tool calls: list them, approve or deny one (audited); a run whose
//! every approval is decided is queued again and resumes where it paused.

use crate::Platform;
use crate::auth::TenantCaller;
use crate::error::Error;
use berth_audit::NewEntry;
use berth_core::{Role, TenantScope};
use berth_store::{ApprovalFilter, ApprovalRecord, Page, PageRequest, started_by_actor};
use serde_json::json;

fn approval_not_found(id: &str) -> Error {
    Error::not_found("approval_not_found", format!("no approval with id '{id}'"))
}

/// Any role reads the tenant's approvals; a key restricted to one agent sees that agent's.
pub async fn list(
    state: &Platform,
    auth: &TenantCaller,
    mut filter: ApprovalFilter,
    page: &PageRequest,
) -> Result<Page<ApprovalRecord>, Error> {
    let scope = auth.require_role(Role::Viewer)?;
    if let Some(s) = filter.status.as_deref()
        && !matches!(
            s,
            "pending" | "approved" | "denied" | "expired" | "cancelled" | "used"
        )
    {
        return Err(Error::bad_request(
            "invalid_status",
            "status is one of pending, approved, denied, expired, cancelled, used",
        )
        .with_param("status"));
    }
    let Some(agent) = auth.agent_filter(filter.agent.take()) else {
        return Ok(Page {
            items: vec![],
            next_cursor: None,
        });
    };
    filter.agent = agent;
    Ok(state.store.list_approvals(scope, &filter, page).await?)
}

pub async fn get(state: &Platform, auth: &TenantCaller, id: &str) -> Result<ApprovalRecord, Error> {
    let scope = auth.require_role(Role::Viewer)?;
    let a = state
        .store
        .get_approval(scope, id)
        .await?
        .ok_or_else(|| approval_not_found(id))?;
    if !auth.sees_agent(&a.agent) {
        return Err(approval_not_found(id));
    }
    Ok(a)
}

/// Approves or denies a pending call. An invoker decides only for runs it started;
/// developers and admins decide for any run of the tenant.
pub async fn decide(
    state: &Platform,
    auth: &TenantCaller,
    id: &str,
    decision: &str,
    reason: Option<String>,
) -> Result<ApprovalRecord, Error> {
    let status = match decision {
        "approve" => "approved",
        "deny" => "denied",
        _ => {
            return Err(Error::invalid(
                "invalid_decision",
                "decision",
                "decision is 'approve' or 'deny'",
            ));
        }
    };
    if reason.as_ref().is_some_and(|r| r.len() > 2000) {
        return Err(Error::invalid(
            "invalid_reason",
            "reason",
            "reason is at most 2000 bytes",
        ));
    }
    let approval = get(state, auth, id).await?;
    let scope = auth.require_for_agent(Role::Invoker, &approval.agent)?;
    if !scope.principal().role().allows(Role::Developer)
        && !started_by_caller(state, scope, &approval).await?
    {
        return Err(Error::forbidden(
            "not_your_run",
            "an invoker may decide only the approvals of runs it started",
        ));
    }
    if approval.status != "pending" {
        return Err(Error::conflict(
            "approval_decided",
            format!("approval '{id}' is already {}", approval.status),
        ));
    }
    let actor = scope.principal().actor();
    let entry = NewEntry::new(
        &actor,
        if status == "approved" {
            "approval.approve"
        } else {
            "approval.deny"
        },
        id,
        json!({"run": approval.run_id, "agent": approval.agent, "tool": approval.tool, "reason": reason}),
    );
    let decided = state
        .store
        .decide_approval(scope, id, status, reason.as_deref(), &actor, &entry)
        .await?
        .ok_or_else(|| {
            Error::conflict(
                "approval_decided",
                format!("approval '{id}' was decided meanwhile"),
            )
        })?;
    // The store queued the run again if it waits for nothing else; a claim decides who
    // resumes it, so queueing it here too is harmless.
    // An approval of an `/mcp` call has no run: the caller makes the call again.
    if let Some(run_id) = decided.run_id.as_deref() {
        let policy = crate::policy::effective(state, scope).await?;
        let share = crate::limits::share_of(state, &auth.tenant.plan, &policy);
        state.runner.enqueue(scope, share, run_id);
    }
    Ok(decided)
}

/// Whether the caller started what `approval` gates: the run it pauses (a run's approvals
/// belong to whoever started the run) or, for an `/mcp` call, the call itself.
async fn started_by_caller(
    state: &Platform,
    scope: &TenantScope,
    approval: &ApprovalRecord,
) -> Result<bool, Error> {
    let actor = scope.principal().actor();
    let Some(run_id) = &approval.run_id else {
        return Ok(started_by_actor(
            approval.started_by.as_deref(),
            approval.key_id.as_deref(),
            &actor,
        ));
    };
    Ok(match state.store.get_run(scope, run_id).await? {
        Some(run) => run.started_by_actor(&actor),
        None => false,
    })
}
