//! The per-tenant audit hash chain: appending inside the transaction of the change it
//! records, batch appends, and reading it back.

use super::{Db, DbRow, Store, Tx};
use crate::backend::{Backend, INSERT_ROWS, TxKind, chain_after};
use crate::{AuditHead, AuditStore, Result, StoreError};
use async_trait::async_trait;
use berth_audit::{Entry, NewEntry};
use berth_core::TenantScope;
use sqlx::Row as _;

/// A stored entry; its details are JSON text, and text that does not parse is corruption
/// (verification would fail on it anyway).
fn audit_from_row(row: &DbRow) -> Result<Entry> {
    let details: String = row.try_get("details")?;
    Ok(Entry {
        seq: row.try_get("seq")?,
        at_ms: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        details: serde_json::from_str(&details)
            .map_err(|e| StoreError::Corrupt(format!("audit details: {e}")))?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// Appends `entry` to the tenant's chain inside `tx`, so a change and its audit
/// entry commit or roll back together.
pub(super) async fn append_in_tx(tx: &mut Tx, tenant: &str, entry: &NewEntry) -> Result<Entry> {
    append_many_in_tx(tx, tenant, std::slice::from_ref(entry))
        .await?
        .pop()
        .ok_or_else(|| StoreError::Corrupt("an appended audit entry was not returned".into()))
}

/// Appends `entries`, in order, to the tenant's chain inside `tx`: one chain lock,
/// one read of the head and one `INSERT` per hundred entries, however many there are.
async fn append_many_in_tx(tx: &mut Tx, tenant: &str, entries: &[NewEntry]) -> Result<Vec<Entry>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    Store::lock_audit_chain(tx, tenant).await?;
    let head = sqlx::query(
        "SELECT seq, hash FROM audit_log WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(tenant)
    .fetch_optional(&mut **tx)
    .await?;
    let head = match head {
        Some(row) => AuditHead {
            seq: row.try_get("seq")?,
            hash: row.try_get("hash")?,
        },
        None => AuditHead::genesis(),
    };
    let stored = chain_after(tenant, &head, entries);
    for chunk in stored.chunks(INSERT_ROWS) {
        insert_audit_rows(tx, tenant, chunk).await?;
    }
    Ok(stored)
}

/// One multi-row `INSERT` of at most `INSERT_ROWS` chained entries. A row whose
/// `seq` is taken fails the whole statement (the primary key is `(tenant_id, seq)`).
pub(crate) async fn insert_audit_rows(
    conn: &mut <Db as sqlx::Database>::Connection,
    tenant: &str,
    rows: &[Entry],
) -> std::result::Result<(), sqlx::Error> {
    let mut qb = sqlx::QueryBuilder::<Db>::new(
        "INSERT INTO audit_log (tenant_id, seq, at, actor, action, target, details, prev_hash, \
         hash) ",
    );
    qb.push_values(rows, |mut b, e| {
        b.push_bind(tenant)
            .push_bind(e.seq)
            .push_bind(e.at_ms)
            .push_bind(&e.actor)
            .push_bind(&e.action)
            .push_bind(&e.target)
            .push_bind(e.details.to_string())
            .push_bind(&e.prev_hash)
            .push_bind(&e.hash);
    });
    qb.build().execute(conn).await?;
    Ok(())
}

#[async_trait]
impl AuditStore for Store {
    async fn append_audit(&self, scope: &TenantScope, entry: &NewEntry) -> Result<Entry> {
        let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
        let stored = append_in_tx(&mut tx, scope.tenant_str(), entry).await?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn append_audit_batch(
        &self,
        scope: &TenantScope,
        entries: &[NewEntry],
    ) -> Result<Vec<Entry>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
        let stored = append_many_in_tx(&mut tx, scope.tenant_str(), entries).await?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn append_audit_after(
        &self,
        scope: &TenantScope,
        head: &AuditHead,
        entries: &[NewEntry],
    ) -> Result<Option<Vec<Entry>>> {
        Store::append_after_head(self, scope, head, entries).await
    }

    async fn list_audit(&self, scope: &TenantScope, after: i64, limit: i64) -> Result<Vec<Entry>> {
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, target, details, prev_hash, hash FROM audit_log \
             WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(scope.tenant_str())
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(audit_from_row).collect()
    }
}
