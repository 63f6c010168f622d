//! Approvals: a tool call waiting for a person's decision, either inside a paused run or
//! for a call through `/mcp` (no run), and what a decision does to the run.

use super::{DbRow, Store, Tx, audit::append_in_tx};
use crate::backend::{Backend, TxKind, limit_plus_one, newest_first_cursor};
use crate::{ApprovalFilter, ApprovalRecord, Page, PageRequest, Result};
use berth_audit::NewEntry;
use berth_core::TenantScope;
use berth_core::clock::now_ms;
use sqlx::Row as _;

/// An approval's columns, in the order `insert_approval` binds them.
const APPROVAL_COLS: &str = "id, run_id, agent, tool, call_id, arguments, key_id, status, \
                             reason, decided_by, created_at, expires_at, decided_at, started_by";

/// A row of [`APPROVAL_COLS`].
fn approval_from_row(r: &DbRow) -> Result<ApprovalRecord> {
    Ok(ApprovalRecord {
        id: r.try_get("id")?,
        run_id: r.try_get("run_id")?,
        agent: r.try_get("agent")?,
        tool: r.try_get("tool")?,
        call_id: r.try_get("call_id")?,
        arguments: r.try_get("arguments")?,
        key_id: r.try_get("key_id")?,
        status: r.try_get("status")?,
        reason: r.try_get("reason")?,
        decided_by: r.try_get("decided_by")?,
        created_at_ms: r.try_get("created_at")?,
        expires_at_ms: r.try_get("expires_at")?,
        decided_at_ms: r.try_get("decided_at")?,
        started_by: r.try_get("started_by")?,
    })
}

/// Inserts an approval inside the caller's transaction: a paused run's approvals commit with
/// its checkpoint, a call approval with its audit entry.
pub(super) async fn insert_approval(tx: &mut Tx, tenant: &str, a: &ApprovalRecord) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO approvals (tenant_id, {APPROVAL_COLS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
    ))
    .bind(tenant)
    .bind(&a.id)
    .bind(a.run_id.as_deref())
    .bind(&a.agent)
    .bind(&a.tool)
    .bind(&a.call_id)
    .bind(&a.arguments)
    .bind(a.key_id.as_deref())
    .bind(&a.status)
    .bind(a.reason.as_deref())
    .bind(a.decided_by.as_deref())
    .bind(a.created_at_ms)
    .bind(a.expires_at_ms)
    .bind(a.decided_at_ms)
    .bind(a.started_by.as_deref())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `RunStore::get_approval`.
pub(super) async fn get_approval(
    store: &Store,
    scope: &TenantScope,
    id: &str,
) -> Result<Option<ApprovalRecord>> {
    let mut tx = store
        .begin(TxKind::Tenant(scope.tenant_str()), false)
        .await?;
    let row = sqlx::query(&format!(
        "SELECT {APPROVAL_COLS} FROM approvals WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(scope.tenant_str())
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    row.as_ref().map(approval_from_row).transpose()
}

/// `RunStore::list_approvals`: newest first, filtered by status, agent and run.
pub(super) async fn list_approvals(
    store: &Store,
    scope: &TenantScope,
    f: &ApprovalFilter,
    page: &PageRequest,
) -> Result<Page<ApprovalRecord>> {
    let mut tx = store
        .begin(TxKind::Tenant(scope.tenant_str()), false)
        .await?;
    // Newest first; the cursor is "<created_at>:<id>" of the last one seen.
    let (c_at, c_id) = newest_first_cursor(page);
    let rows = sqlx::query(&format!(
        "SELECT {APPROVAL_COLS} FROM approvals WHERE tenant_id = $1 \
         AND ($2 = '' OR status = $2) AND ($3 = '' OR agent = $3) AND ($4 = '' OR run_id = $4) \
         AND (created_at < $5 OR (created_at = $5 AND id < $6)) \
         ORDER BY created_at DESC, id DESC LIMIT $7"
    ))
    .bind(scope.tenant_str())
    .bind(f.status.as_deref().unwrap_or(""))
    .bind(f.agent.as_deref().unwrap_or(""))
    .bind(f.run_id.as_deref().unwrap_or(""))
    .bind(c_at)
    .bind(c_id)
    .bind(limit_plus_one(page))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let items = rows
        .iter()
        .map(approval_from_row)
        .collect::<Result<Vec<_>>>()?;
    Ok(Page::from_rows(items, page.limit, |a| {
        format!("{}:{}", a.created_at_ms, a.id)
    }))
}

/// `RunStore::decide_approval`: the decision, the run queued again once it waits for
/// nothing else, and the audit entry commit together.
pub(super) async fn decide_approval(
    store: &Store,
    scope: &TenantScope,
    id: &str,
    status: &str,
    reason: Option<&str>,
    decided_by: &str,
    audit: &NewEntry,
) -> Result<Option<ApprovalRecord>> {
    let tenant = scope.tenant_str();
    let mut tx = store.begin(TxKind::Tenant(tenant), true).await?;
    let done = sqlx::query(
        "UPDATE approvals SET status = $1, reason = $2, decided_by = $3, decided_at = $4 \
         WHERE tenant_id = $5 AND id = $6 AND status = 'pending'",
    )
    .bind(status)
    .bind(reason)
    .bind(decided_by)
    .bind(now_ms())
    .bind(tenant)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    let row = sqlx::query(&format!(
        "SELECT {APPROVAL_COLS} FROM approvals WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let approval = approval_from_row(&row)?;
    if let Some(run_id) = approval.run_id.as_deref() {
        let pending: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM approvals WHERE tenant_id = $1 AND run_id = $2 \
             AND status = 'pending'",
        )
        .bind(tenant)
        .bind(run_id)
        .fetch_one(&mut *tx)
        .await?;
        if pending == 0 {
            sqlx::query(
                "UPDATE runs SET status = 'queued' WHERE tenant_id = $1 AND id = $2 \
                 AND status = 'waiting_approval'",
            )
            .bind(tenant)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        }
    }
    append_in_tx(&mut tx, tenant, audit).await?;
    tx.commit().await?;
    Ok(Some(approval))
}

/// `RunStore::expired_approvals`, soonest expired first.
pub(super) async fn expired_approvals(
    store: &Store,
    scope: &TenantScope,
    now: i64,
) -> Result<Vec<ApprovalRecord>> {
    let mut tx = store
        .begin(TxKind::Tenant(scope.tenant_str()), false)
        .await?;
    let rows = sqlx::query(&format!(
        "SELECT {APPROVAL_COLS} FROM approvals WHERE tenant_id = $1 AND status = 'pending' \
         AND expires_at < $2 ORDER BY expires_at"
    ))
    .bind(scope.tenant_str())
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.iter().map(approval_from_row).collect()
}

/// `RunStore::create_call_approval`.
pub(super) async fn create_call_approval(
    store: &Store,
    scope: &TenantScope,
    a: &ApprovalRecord,
    audit: &NewEntry,
) -> Result<()> {
    let tenant = scope.tenant_str();
    let mut tx = store.begin(TxKind::Tenant(tenant), true).await?;
    insert_approval(&mut tx, tenant, a).await?;
    append_in_tx(&mut tx, tenant, audit).await?;
    tx.commit().await?;
    Ok(())
}

/// `RunStore::use_call_approval`: find, then take it with a status guard, in one
/// transaction.
pub(super) async fn use_call_approval(
    store: &Store,
    scope: &TenantScope,
    key_id: Option<&str>,
    started_by: &str,
    tool: &str,
    arguments: &str,
    now: i64,
) -> Result<Option<ApprovalRecord>> {
    let tenant = scope.tenant_str();
    let mut tx = store.begin(TxKind::Tenant(tenant), true).await?;
    let id: Option<String> = sqlx::query_scalar(
        "SELECT id FROM approvals WHERE tenant_id = $1 AND run_id IS NULL AND status = 'approved' \
         AND tool = $2 AND arguments = $3 AND expires_at >= $4 \
         AND ((key_id IS NULL AND $5 IS NULL) OR key_id = $5) \
         AND (started_by IS NULL OR started_by = $6) ORDER BY created_at LIMIT 1",
    )
    .bind(tenant)
    .bind(tool)
    .bind(arguments)
    .bind(now)
    .bind(key_id)
    .bind(started_by)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = id else {
        return Ok(None);
    };
    // The status guard makes two concurrent uses of one approval end with one winner.
    let done = sqlx::query(
        "UPDATE approvals SET status = 'used' WHERE tenant_id = $1 AND id = $2 \
         AND status = 'approved'",
    )
    .bind(tenant)
    .bind(&id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    let row = sqlx::query(&format!(
        "SELECT {APPROVAL_COLS} FROM approvals WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant)
    .bind(&id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(approval_from_row(&row)?))
}

/// Cancels the pending approvals of a run being cancelled, inside its transaction, so no
/// decision can queue it again.
pub(super) async fn cancel_pending(tx: &mut Tx, tenant: &str, run_id: &str) -> Result<()> {
    sqlx::query(
        "UPDATE approvals SET status = 'cancelled', decided_at = $1 \
         WHERE tenant_id = $2 AND run_id = $3 AND status = 'pending'",
    )
    .bind(now_ms())
    .bind(tenant)
    .bind(run_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
