//! Sealed secrets and each tenant's wrapped data key. Values are ciphertext here; sealing
//! and opening them is the vault's work.

use super::{Store, audit::append_in_tx};
use crate::backend::{Backend, TxKind, limit_plus_one};
use crate::{Page, PageRequest, Result, SealedSecret, SecretMeta, SecretStore, WrappedKey};
use async_trait::async_trait;
use berth_audit::NewEntry;
use berth_core::TenantScope;
use berth_core::clock::now_ms;
use sqlx::Row as _;

#[async_trait]
impl SecretStore for Store {
    async fn data_key(&self, scope: &TenantScope) -> Result<Option<WrappedKey>> {
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        let row = sqlx::query("SELECT nonce, wrapped FROM tenant_data_keys WHERE tenant_id = $1")
            .bind(scope.tenant_str())
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.map(|r| {
            Ok(WrappedKey {
                nonce: r.try_get("nonce")?,
                wrapped: r.try_get("wrapped")?,
            })
        })
        .transpose()
    }

    async fn insert_data_key(&self, scope: &TenantScope, key: &WrappedKey) -> Result<WrappedKey> {
        let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
        sqlx::query(
            "INSERT INTO tenant_data_keys (tenant_id, nonce, wrapped, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(scope.tenant_str())
        .bind(&key.nonce)
        .bind(&key.wrapped)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query("SELECT nonce, wrapped FROM tenant_data_keys WHERE tenant_id = $1")
            .bind(scope.tenant_str())
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(WrappedKey {
            nonce: row.try_get("nonce")?,
            wrapped: row.try_get("wrapped")?,
        })
    }

    async fn put_secret(
        &self,
        scope: &TenantScope,
        secret: &SealedSecret,
        audit: &NewEntry,
    ) -> Result<()> {
        let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
        sqlx::query(
            "INSERT INTO secrets (tenant_id, name, nonce, ciphertext, created_at, updated_at, \
             binding, writer_role) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET nonce = excluded.nonce, \
             ciphertext = excluded.ciphertext, updated_at = excluded.updated_at, \
             binding = excluded.binding, writer_role = excluded.writer_role",
        )
        .bind(scope.tenant_str())
        .bind(&secret.name)
        .bind(&secret.nonce)
        .bind(&secret.ciphertext)
        .bind(secret.created_at_ms)
        .bind(secret.updated_at_ms)
        .bind(secret.binding.as_deref())
        .bind(secret.writer_role.as_deref())
        .execute(&mut *tx)
        .await?;
        append_in_tx(&mut tx, scope.tenant_str(), audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_secret(&self, scope: &TenantScope, name: &str) -> Result<Option<SealedSecret>> {
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        let row = sqlx::query(
            "SELECT name, nonce, ciphertext, binding, writer_role, created_at, updated_at \
             FROM secrets WHERE tenant_id = $1 AND name = $2",
        )
        .bind(scope.tenant_str())
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(|r| {
            Ok(SealedSecret {
                name: r.try_get("name")?,
                nonce: r.try_get("nonce")?,
                ciphertext: r.try_get("ciphertext")?,
                binding: r.try_get("binding")?,
                writer_role: r.try_get("writer_role")?,
                created_at_ms: r.try_get("created_at")?,
                updated_at_ms: r.try_get("updated_at")?,
            })
        })
        .transpose()
    }

    async fn list_secrets(
        &self,
        scope: &TenantScope,
        page: &PageRequest,
    ) -> Result<Page<SecretMeta>> {
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        let rows = sqlx::query(
            "SELECT name, binding, writer_role, created_at, updated_at FROM secrets \
             WHERE tenant_id = $1 AND name > $2 ORDER BY name LIMIT $3",
        )
        .bind(scope.tenant_str())
        .bind(page.cursor.as_deref().unwrap_or(""))
        .bind(limit_plus_one(page))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let metas = rows
            .iter()
            .map(|r| {
                Ok(SecretMeta {
                    name: r.try_get("name")?,
                    binding: r.try_get("binding")?,
                    writer_role: r.try_get("writer_role")?,
                    created_at_ms: r.try_get("created_at")?,
                    updated_at_ms: r.try_get("updated_at")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(metas, page.limit, |m| m.name.clone()))
    }

    async fn delete_secret(
        &self,
        scope: &TenantScope,
        name: &str,
        audit: &NewEntry,
    ) -> Result<bool> {
        let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
        let done = sqlx::query("DELETE FROM secrets WHERE tenant_id = $1 AND name = $2")
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

    async fn set_secret_binding(
        &self,
        scope: &TenantScope,
        name: &str,
        binding: Option<&str>,
        audit: &NewEntry,
    ) -> Result<bool> {
        let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
        let done =
            sqlx::query("UPDATE secrets SET binding = $1 WHERE tenant_id = $2 AND name = $3")
                .bind(binding)
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
