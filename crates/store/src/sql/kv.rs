//! Component agents' key-value data (per tenant and agent), the bundles their code comes
//! from, and the bytes a tenant keeps stored.

use super::Store;
use crate::backend::{Backend, TxKind};
use crate::{KvStore, Result};
use async_trait::async_trait;
use berth_core::TenantScope;
use berth_core::clock::now_ms;

#[async_trait]
impl KvStore for Store {
    async fn kv_get(&self, scope: &TenantScope, agent: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        let v: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT value FROM agent_kv WHERE tenant_id = $1 AND agent = $2 AND key = $3",
        )
        .bind(scope.tenant_str())
        .bind(agent)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(v)
    }

    async fn kv_set(
        &self,
        scope: &TenantScope,
        agent: &str,
        key: &str,
        value: &[u8],
    ) -> Result<()> {
        let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
        sqlx::query(
            "INSERT INTO agent_kv (tenant_id, agent, key, value, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, agent, key) DO UPDATE \
             SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(scope.tenant_str())
        .bind(agent)
        .bind(key)
        .bind(value)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn kv_delete(&self, scope: &TenantScope, agent: &str, key: &str) -> Result<()> {
        let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
        sqlx::query("DELETE FROM agent_kv WHERE tenant_id = $1 AND agent = $2 AND key = $3")
            .bind(scope.tenant_str())
            .bind(agent)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn stored_bytes(&self, scope: &TenantScope) -> Result<i64> {
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        let mut total = 0i64;
        for (table, col) in [
            ("agent_versions", "bundle"),
            ("agent_versions", "manifest"),
            ("agent_kv", "value"),
            ("thread_messages", "message"),
            ("run_steps", "data"),
        ] {
            let n: i64 = sqlx::query_scalar(&format!(
                "SELECT CAST(COALESCE(SUM(octet_length({col})), 0) AS BIGINT) FROM {table} \
                 WHERE tenant_id = $1"
            ))
            .bind(scope.tenant_str())
            .fetch_one(&mut *tx)
            .await?;
            total += n;
        }
        tx.commit().await?;
        Ok(total)
    }

    async fn version_bundle(
        &self,
        scope: &TenantScope,
        agent: &str,
        version: i64,
    ) -> Result<Option<Vec<u8>>> {
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        let v: Option<Option<Vec<u8>>> = sqlx::query_scalar(
            "SELECT bundle FROM agent_versions WHERE tenant_id = $1 AND agent = $2 \
             AND version = $3",
        )
        .bind(scope.tenant_str())
        .bind(agent)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(v.flatten())
    }
}
