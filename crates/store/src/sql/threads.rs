//! Threads: a conversation's identity and its messages, appended by the runs that use it.
//!
//! `RunStore` groups threads with runs and approvals; its implementation (`runs.rs`)
//! forwards the thread methods here, so each table's SQL has one home.

use super::{Store, Tx};
use crate::backend::{Backend, TxKind};
use crate::{Result, ThreadRecord};
use berth_core::TenantScope;
use berth_core::clock::now_ms;
use sqlx::Row as _;

/// `RunStore::create_thread`.
pub(super) async fn create_thread(
    store: &Store,
    scope: &TenantScope,
    t: &ThreadRecord,
) -> Result<()> {
    let mut tx = store
        .begin(TxKind::Tenant(scope.tenant_str()), true)
        .await?;
    sqlx::query(
        "INSERT INTO threads (tenant_id, id, agent, version, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(scope.tenant_str())
    .bind(&t.id)
    .bind(&t.agent)
    .bind(t.version)
    .bind(t.created_at_ms)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// `RunStore::get_thread`: the thread with its messages in order, read in one transaction.
pub(super) async fn get_thread(
    store: &Store,
    scope: &TenantScope,
    id: &str,
) -> Result<Option<ThreadRecord>> {
    let mut tx = store
        .begin(TxKind::Tenant(scope.tenant_str()), false)
        .await?;
    let Some(row) = sqlx::query(
        "SELECT id, agent, version, created_at FROM threads WHERE tenant_id = $1 AND id = $2",
    )
    .bind(scope.tenant_str())
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(None);
    };
    let messages: Vec<String> = sqlx::query_scalar(
        "SELECT message FROM thread_messages WHERE tenant_id = $1 AND thread_id = $2 ORDER BY seq",
    )
    .bind(scope.tenant_str())
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(ThreadRecord {
        id: row.try_get("id")?,
        agent: row.try_get("agent")?,
        version: row.try_get("version")?,
        created_at_ms: row.try_get("created_at")?,
        messages,
    }))
}

/// `RunStore::delete_thread`: its messages first, then the thread; `false` when there was
/// none.
pub(super) async fn delete_thread(store: &Store, scope: &TenantScope, id: &str) -> Result<bool> {
    let mut tx = store
        .begin(TxKind::Tenant(scope.tenant_str()), true)
        .await?;
    sqlx::query("DELETE FROM thread_messages WHERE tenant_id = $1 AND thread_id = $2")
        .bind(scope.tenant_str())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let done = sqlx::query("DELETE FROM threads WHERE tenant_id = $1 AND id = $2")
        .bind(scope.tenant_str())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected() > 0)
}

/// Appends a finished run's new messages to its thread inside the run's transaction, so
/// the thread never holds the messages of a run that did not finish. Numbering continues
/// from the thread's last message.
pub(super) async fn append_messages(
    tx: &mut Tx,
    tenant: &str,
    thread: &str,
    messages: &[String],
) -> Result<()> {
    let last: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(seq) FROM thread_messages WHERE tenant_id = $1 AND thread_id = $2",
    )
    .bind(tenant)
    .bind(thread)
    .fetch_one(&mut **tx)
    .await?;
    let mut seq = last.unwrap_or(0);
    for m in messages {
        seq += 1;
        sqlx::query(
            "INSERT INTO thread_messages (tenant_id, thread_id, seq, message, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant)
        .bind(thread)
        .bind(seq)
        .bind(m)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
