//! The tenant's policy document, stored by revision with optimistic concurrency.

use super::{Store, audit::append_in_tx};
use crate::backend::{Backend, TxKind};
use crate::{PolicyStore, Result, StoreError, StoredPolicy};
use async_trait::async_trait;
use berth_audit::NewEntry;
use berth_core::TenantScope;
use berth_core::clock::now_ms;
use sqlx::Row as _;

#[async_trait]
impl PolicyStore for Store {
    async fn get_policy(&self, scope: &TenantScope) -> Result<Option<StoredPolicy>> {
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        let row =
            sqlx::query("SELECT revision, document, updated_at FROM policies WHERE tenant_id = $1")
                .bind(scope.tenant_str())
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        row.map(|r| {
            Ok(StoredPolicy {
                revision: r.try_get("revision")?,
                document: r.try_get("document")?,
                updated_at_ms: r.try_get("updated_at")?,
            })
        })
        .transpose()
    }

    async fn put_policy(
        &self,
        scope: &TenantScope,
        document: &str,
        expected: Option<i64>,
        audit: &NewEntry,
    ) -> Result<StoredPolicy> {
        let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
        let current: i64 = sqlx::query_scalar("SELECT revision FROM policies WHERE tenant_id = $1")
            .bind(scope.tenant_str())
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or(0);
        if let Some(want) = expected
            && want != current
        {
            return Err(StoreError::Conflict(format!(
                "the policy is at revision {current}, not {want}"
            )));
        }
        let now = now_ms();
        let revision = current + 1;
        // The WHERE on the update makes a concurrent writer that read the same
        // revision lose instead of silently overwriting.
        let done = sqlx::query(
            "INSERT INTO policies (tenant_id, revision, document, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO UPDATE \
             SET revision = excluded.revision, document = excluded.document, \
             updated_at = excluded.updated_at WHERE policies.revision = $5",
        )
        .bind(scope.tenant_str())
        .bind(revision)
        .bind(document)
        .bind(now)
        .bind(current)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                "the policy changed concurrently".to_owned(),
            ));
        }
        append_in_tx(&mut tx, scope.tenant_str(), audit).await?;
        tx.commit().await?;
        Ok(StoredPolicy {
            revision,
            document: document.to_owned(),
            updated_at_ms: now,
        })
    }
}
