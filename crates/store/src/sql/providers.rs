//! The tenant's own LLM providers (bring your own key); the key itself is a secret, named
//! here.

use super::{DbRow, Store, audit::append_in_tx};
use crate::backend::{Backend, TxKind};
use crate::{ProviderStore, Result, TenantProvider};
use async_trait::async_trait;
use berth_audit::NewEntry;
use berth_core::TenantScope;
use sqlx::Row as _;

/// A row of [`PROVIDER_COLS`].
fn provider_from_row(r: &DbRow) -> Result<TenantProvider> {
    Ok(TenantProvider {
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        base_url: r.try_get("base_url")?,
        api_key_secret: r.try_get("api_key_secret")?,
        created_at_ms: r.try_get("created_at")?,
        updated_at_ms: r.try_get("updated_at")?,
    })
}

/// A provider's columns, read by `get_provider` and `list_providers`.
const PROVIDER_COLS: &str = "name, kind, base_url, api_key_secret, created_at, updated_at";

#[async_trait]
impl ProviderStore for Store {
    async fn put_provider(
        &self,
        scope: &TenantScope,
        p: &TenantProvider,
        audit: &NewEntry,
    ) -> Result<()> {
        let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
        sqlx::query(
            "INSERT INTO providers (tenant_id, name, kind, base_url, api_key_secret, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET kind = excluded.kind, \
             base_url = excluded.base_url, api_key_secret = excluded.api_key_secret, \
             updated_at = excluded.updated_at",
        )
        .bind(scope.tenant_str())
        .bind(&p.name)
        .bind(&p.kind)
        .bind(p.base_url.as_deref())
        .bind(&p.api_key_secret)
        .bind(p.created_at_ms)
        .bind(p.updated_at_ms)
        .execute(&mut *tx)
        .await?;
        append_in_tx(&mut tx, scope.tenant_str(), audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_provider(
        &self,
        scope: &TenantScope,
        name: &str,
    ) -> Result<Option<TenantProvider>> {
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        let row = sqlx::query(&format!(
            "SELECT {PROVIDER_COLS} FROM providers WHERE tenant_id = $1 AND name = $2"
        ))
        .bind(scope.tenant_str())
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(provider_from_row).transpose()
    }

    async fn list_providers(&self, scope: &TenantScope) -> Result<Vec<TenantProvider>> {
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        let rows = sqlx::query(&format!(
            "SELECT {PROVIDER_COLS} FROM providers WHERE tenant_id = $1 ORDER BY name"
        ))
        .bind(scope.tenant_str())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(provider_from_row).collect()
    }

    async fn delete_provider(
        &self,
        scope: &TenantScope,
        name: &str,
        audit: &NewEntry,
    ) -> Result<bool> {
        let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
        let done = sqlx::query("DELETE FROM providers WHERE tenant_id = $1 AND name = $2")
            .bind(scope.tenant_str())
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        append_in_tx(&mut tx, scope.tenant_str(), audit).await?;
        tx.commit().await?;
        Ok(true)
    }
}
