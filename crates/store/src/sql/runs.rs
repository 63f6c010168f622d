//! Runs and the queue: a run's record, its lease while a worker executes it, its steps,
//! and how it ends (finished, paused for approval, cancelled, or failed when its lease runs
//! out).
//!
//! This file holds the `RunStore` implementation; the thread and approval methods of that
//! trait forward to `threads.rs` and `approvals.rs`.

use super::{DbRow, Store, Tx, approvals, audit::append_in_tx, threads};
use crate::backend::{Backend, TxKind, limit_plus_one, newest_first_cursor};
use crate::{
    ApprovalFilter, ApprovalRecord, Page, PageRequest, Result, RunFilter, RunRecord, RunStep,
    RunStore, ThreadRecord,
};
use async_trait::async_trait;
use berth_audit::NewEntry;
use berth_core::TenantScope;
use berth_core::clock::now_ms;
use sqlx::Row as _;

/// A run's columns, in the order `insert_run` binds them after the tenant.
const RUN_COLS: &str = "id, agent, version, thread_id, key_id, status, output, error, usage, \
                        created_at, finished_at, request, checkpoint, lease_until, started_by";

/// A row of [`RUN_COLS`].
fn run_from_row(r: &DbRow) -> Result<RunRecord> {
    Ok(RunRecord {
        id: r.try_get("id")?,
        agent: r.try_get("agent")?,
        version: r.try_get("version")?,
        thread_id: r.try_get("thread_id")?,
        key_id: r.try_get("key_id")?,
        status: r.try_get("status")?,
        output: r.try_get("output")?,
        error: r.try_get("error")?,
        usage: r.try_get("usage")?,
        created_at_ms: r.try_get("created_at")?,
        finished_at_ms: r.try_get("finished_at")?,
        request: r.try_get("request")?,
        checkpoint: r.try_get("checkpoint")?,
        lease_until_ms: r.try_get("lease_until")?,
        started_by: r.try_get("started_by")?,
    })
}

/// Stores steps inside the caller's transaction; a step already stored (same `seq`) is
/// skipped, so a heartbeat retried, or the end writing every step again, keeps one copy.
async fn insert_steps(tx: &mut Tx, tenant: &str, run_id: &str, steps: &[RunStep]) -> Result<()> {
    for s in steps {
        sqlx::query(
            "INSERT INTO run_steps (tenant_id, run_id, seq, kind, at, data) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, run_id, seq) DO NOTHING",
        )
        .bind(tenant)
        .bind(run_id)
        .bind(s.seq)
        .bind(&s.kind)
        .bind(s.at_ms)
        .bind(&s.data)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Reads a run inside the caller's transaction, to answer what the same transaction
/// just changed.
async fn fetch_run(tx: &mut Tx, tenant: &str, id: &str) -> Result<Option<RunRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {RUN_COLS} FROM runs WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(run_from_row).transpose()
}

#[async_trait]
impl RunStore for Store {
    async fn insert_run(&self, scope: &TenantScope, r: &RunRecord) -> Result<()> {
        let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
        sqlx::query(&format!(
            "INSERT INTO runs (tenant_id, {RUN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
             $9, $10, $11, $12, $13, $14, $15, $16)"
        ))
        .bind(scope.tenant_str())
        .bind(&r.id)
        .bind(&r.agent)
        .bind(r.version)
        .bind(r.thread_id.as_deref())
        .bind(r.key_id.as_deref())
        .bind(&r.status)
        .bind(r.output.as_deref())
        .bind(r.error.as_deref())
        .bind(&r.usage)
        .bind(r.created_at_ms)
        .bind(r.finished_at_ms)
        .bind(r.request.as_deref())
        .bind(r.checkpoint.as_deref())
        .bind(r.lease_until_ms)
        .bind(r.started_by.as_deref())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_run(
        &self,
        scope: &TenantScope,
        id: &str,
        lease_until_ms: i64,
    ) -> Result<Option<RunRecord>> {
        let tenant = scope.tenant_str();
        let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
        let done = sqlx::query(
            "UPDATE runs SET status = 'running', lease_until = $1 \
             WHERE tenant_id = $2 AND id = $3 AND status = 'queued'",
        )
        .bind(lease_until_ms)
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let run = if done.rows_affected() == 1 {
            fetch_run(&mut tx, tenant, id).await?
        } else {
            None
        };
        tx.commit().await?;
        Ok(run)
    }

    async fn renew_lease(
        &self,
        scope: &TenantScope,
        id: &str,
        lease_until_ms: i64,
        usage: &str,
        steps: &[RunStep],
    ) -> Result<()> {
        let tenant = scope.tenant_str();
        let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
        let renewed = sqlx::query(
            "UPDATE runs SET lease_until = $1, usage = $2 WHERE tenant_id = $3 AND id = $4 \
             AND status = 'running'",
        )
        .bind(lease_until_ms)
        .bind(usage)
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if renewed > 0 {
            insert_steps(&mut tx, tenant, id, steps).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn finish_run(
        &self,
        scope: &TenantScope,
        r: &RunRecord,
        steps: &[RunStep],
        thread_messages: &[String],
    ) -> Result<String> {
        let tenant = scope.tenant_str();
        let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
        // A cancel that landed while the run was finishing wins: the caller asked
        // for it, and was told so.
        sqlx::query(
            "UPDATE runs SET status = CASE WHEN status = 'cancelled' THEN status ELSE $1 END, \
             output = $2, error = CASE WHEN status = 'cancelled' THEN error ELSE $3 END, \
             usage = $4, finished_at = COALESCE(finished_at, $5), checkpoint = NULL, \
             lease_until = NULL WHERE tenant_id = $6 AND id = $7",
        )
        .bind(&r.status)
        .bind(r.output.as_deref())
        .bind(r.error.as_deref())
        .bind(&r.usage)
        .bind(r.finished_at_ms)
        .bind(tenant)
        .bind(&r.id)
        .execute(&mut *tx)
        .await?;
        insert_steps(&mut tx, tenant, &r.id, steps).await?;
        if let Some(thread) = &r.thread_id {
            threads::append_messages(&mut tx, tenant, thread, thread_messages).await?;
        }
        let status: String =
            sqlx::query_scalar("SELECT status FROM runs WHERE tenant_id = $1 AND id = $2")
                .bind(tenant)
                .bind(&r.id)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(status)
    }

    async fn pause_run(
        &self,
        scope: &TenantScope,
        r: &RunRecord,
        steps: &[RunStep],
        approvals: &[ApprovalRecord],
    ) -> Result<bool> {
        let tenant = scope.tenant_str();
        let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
        let done = sqlx::query(
            "UPDATE runs SET status = 'waiting_approval', checkpoint = $1, usage = $2, \
             lease_until = NULL WHERE tenant_id = $3 AND id = $4 AND status = 'running'",
        )
        .bind(r.checkpoint.as_deref())
        .bind(&r.usage)
        .bind(tenant)
        .bind(&r.id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_steps(&mut tx, tenant, &r.id, steps).await?;
        for a in approvals {
            approvals::insert_approval(&mut tx, tenant, a).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn cancel_run(
        &self,
        scope: &TenantScope,
        id: &str,
        audit: &NewEntry,
    ) -> Result<Option<(RunRecord, bool)>> {
        let tenant = scope.tenant_str();
        let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
        let error = serde_json::json!({
            "type": "cancelled",
            "code": "cancelled",
            "message": "the run was cancelled",
        })
        .to_string();
        let done = sqlx::query(
            "UPDATE runs SET status = 'cancelled', error = $1, finished_at = $2, \
             checkpoint = NULL, lease_until = NULL WHERE tenant_id = $3 AND id = $4 \
             AND status IN ('queued', 'running', 'waiting_approval')",
        )
        .bind(&error)
        .bind(now_ms())
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let changed = done.rows_affected() == 1;
        if changed {
            approvals::cancel_pending(&mut tx, tenant, id).await?;
            append_in_tx(&mut tx, tenant, audit).await?;
        }
        let run = fetch_run(&mut tx, tenant, id).await?;
        tx.commit().await?;
        Ok(run.map(|r| (r, changed)))
    }

    async fn queued_runs(&self, scope: &TenantScope, limit: i64) -> Result<Vec<RunRecord>> {
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLS} FROM runs WHERE tenant_id = $1 AND status = 'queued' \
             ORDER BY created_at, id LIMIT $2"
        ))
        .bind(scope.tenant_str())
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn fail_expired_leases(
        &self,
        scope: &TenantScope,
        now: i64,
        error: &str,
    ) -> Result<Vec<String>> {
        let tenant = scope.tenant_str();
        let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE runs SET status = 'failed', error = $1, finished_at = $2, \
             lease_until = NULL, checkpoint = NULL WHERE tenant_id = $3 AND status = 'running' \
             AND (lease_until IS NULL OR lease_until < $2) RETURNING id",
        )
        .bind(error)
        .bind(now)
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids)
    }
    async fn get_run(&self, scope: &TenantScope, id: &str) -> Result<Option<RunRecord>> {
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        let run = fetch_run(&mut tx, scope.tenant_str(), id).await?;
        tx.commit().await?;
        Ok(run)
    }

    async fn list_runs(
        &self,
        scope: &TenantScope,
        f: &RunFilter,
        page: &PageRequest,
    ) -> Result<Page<RunRecord>> {
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        // Newest first; the cursor is "<created_at>:<id>" of the last one seen.
        let (c_at, c_id) = newest_first_cursor(page);
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLS} FROM runs WHERE tenant_id = $1 AND ($2 = '' OR agent = $2) \
             AND ($3 = '' OR status = $3) AND ($4 = '' OR thread_id = $4) AND created_at >= $5 \
             AND ($6 = '' OR key_id = $6) AND (created_at < $7 OR (created_at = $7 \
             AND id < $8)) ORDER BY created_at DESC, id DESC LIMIT $9"
        ))
        .bind(scope.tenant_str())
        .bind(f.agent.as_deref().unwrap_or(""))
        .bind(f.status.as_deref().unwrap_or(""))
        .bind(f.thread.as_deref().unwrap_or(""))
        .bind(f.since_ms.unwrap_or(0))
        .bind(f.key_id.as_deref().unwrap_or(""))
        .bind(c_at)
        .bind(c_id)
        .bind(limit_plus_one(page))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let runs = rows.iter().map(run_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(runs, page.limit, |r| {
            format!("{}:{}", r.created_at_ms, r.id)
        }))
    }

    async fn run_steps(&self, scope: &TenantScope, run_id: &str) -> Result<Vec<RunStep>> {
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        let rows = sqlx::query(
            "SELECT seq, kind, at, data FROM run_steps WHERE tenant_id = $1 AND run_id = $2 \
             ORDER BY seq",
        )
        .bind(scope.tenant_str())
        .bind(run_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(RunStep {
                    seq: r.try_get("seq")?,
                    kind: r.try_get("kind")?,
                    at_ms: r.try_get("at")?,
                    data: r.try_get("data")?,
                })
            })
            .collect()
    }
    // Threads and approvals have their own modules; the trait groups them with runs.

    async fn create_thread(&self, scope: &TenantScope, thread: &ThreadRecord) -> Result<()> {
        threads::create_thread(self, scope, thread).await
    }

    async fn get_thread(&self, scope: &TenantScope, id: &str) -> Result<Option<ThreadRecord>> {
        threads::get_thread(self, scope, id).await
    }

    async fn delete_thread(&self, scope: &TenantScope, id: &str) -> Result<bool> {
        threads::delete_thread(self, scope, id).await
    }

    async fn get_approval(&self, scope: &TenantScope, id: &str) -> Result<Option<ApprovalRecord>> {
        approvals::get_approval(self, scope, id).await
    }

    async fn list_approvals(
        &self,
        scope: &TenantScope,
        filter: &ApprovalFilter,
        page: &PageRequest,
    ) -> Result<Page<ApprovalRecord>> {
        approvals::list_approvals(self, scope, filter, page).await
    }

    async fn decide_approval(
        &self,
        scope: &TenantScope,
        id: &str,
        status: &str,
        reason: Option<&str>,
        decided_by: &str,
        audit: &NewEntry,
    ) -> Result<Option<ApprovalRecord>> {
        approvals::decide_approval(self, scope, id, status, reason, decided_by, audit).await
    }

    async fn expired_approvals(
        &self,
        scope: &TenantScope,
        now_ms: i64,
    ) -> Result<Vec<ApprovalRecord>> {
        approvals::expired_approvals(self, scope, now_ms).await
    }

    async fn create_call_approval(
        &self,
        scope: &TenantScope,
        approval: &ApprovalRecord,
        audit: &NewEntry,
    ) -> Result<()> {
        approvals::create_call_approval(self, scope, approval, audit).await
    }

    async fn use_call_approval(
        &self,
        scope: &TenantScope,
        key_id: Option<&str>,
        started_by: &str,
        tool: &str,
        arguments: &str,
        now_ms: i64,
    ) -> Result<Option<ApprovalRecord>> {
        approvals::use_call_approval(self, scope, key_id, started_by, tool, arguments, now_ms).await
    }
}
