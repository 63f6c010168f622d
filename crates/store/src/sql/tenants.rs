//! Tenants (the operator's registry) and their API keys, including the key-hash lookup
//! that authentication turns into a `TenantScope`.

use super::{DbRow, Store, audit::append_in_tx};
use crate::backend::{Backend, TxKind, limit_plus_one};
use crate::{
    ApiKey, KeyGrant, KeyStore, NewApiKey, Page, PageRequest, Result, StoreError, Tenant,
    TenantPatch, TenantRegistry,
};
use async_trait::async_trait;
use berth_audit::NewEntry;
use berth_core::clock::now_ms;
use berth_core::{Role, TenantId, TenantScope};
use sqlx::Row as _;

/// A row of [`TENANT_COLS`]; an id that does not parse is corruption, not a missing
/// tenant.
fn tenant_from_row(row: &DbRow) -> Result<Tenant> {
    let id: String = row.try_get("id")?;
    Ok(Tenant {
        id: TenantId::parse(&id).ok_or_else(|| StoreError::Corrupt(format!("tenant id {id:?}")))?,
        name: row.try_get("name")?,
        plan: row.try_get("plan")?,
        suspended: row.try_get("suspended")?,
        created_at_ms: row.try_get("created_at")?,
    })
}

/// A row of [`KEY_COLS`]; an unknown role is corruption, never a silent downgrade.
fn key_from_row(row: &DbRow) -> Result<ApiKey> {
    let role: String = row.try_get("role")?;
    Ok(ApiKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: role.parse::<Role>().map_err(StoreError::Corrupt)?,
        agent: row.try_get("agent")?,
        prefix: row.try_get("prefix")?,
        expires_at_ms: row.try_get("expires_at")?,
        revoked_at_ms: row.try_get("revoked_at")?,
        created_at_ms: row.try_get("created_at")?,
    })
}

/// A tenant's columns, in `Tenant`'s order.
const TENANT_COLS: &str = "id, name, plan, suspended, created_at";
/// A key's columns; the hash is not among them (it lives in `key_index` only).
const KEY_COLS: &str = "id, name, role, agent, prefix, expires_at, revoked_at, created_at";

#[async_trait]
impl TenantRegistry for Store {
    async fn create_tenant(&self, tenant: &Tenant, audit: &NewEntry) -> Result<()> {
        let mut tx = self
            .begin(TxKind::OperatorOn(tenant.id.as_str()), true)
            .await?;
        sqlx::query(
            "INSERT INTO tenants (id, name, plan, suspended, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant.id.as_str())
        .bind(&tenant.name)
        .bind(&tenant.plan)
        .bind(tenant.suspended)
        .bind(tenant.created_at_ms)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::from_write(e, "a tenant with this name exists"))?;
        append_in_tx(&mut tx, tenant.id.as_str(), audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_tenants(&self, page: &PageRequest) -> Result<Page<Tenant>> {
        let mut tx = self.begin(TxKind::Operator, false).await?;
        let rows = sqlx::query(&format!(
            "SELECT {TENANT_COLS} FROM tenants WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(page.cursor.as_deref().unwrap_or(""))
        .bind(limit_plus_one(page))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let tenants = rows
            .iter()
            .map(tenant_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(tenants, page.limit, |t| t.id.to_string()))
    }

    async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>> {
        let mut tx = self.begin(TxKind::OperatorOn(id.as_str()), false).await?;
        let row = sqlx::query(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    async fn find_tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
        let mut tx = self.begin(TxKind::Operator, false).await?;
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLS} FROM tenants WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    async fn update_tenant(
        &self,
        scope: &TenantScope,
        patch: &TenantPatch,
        audit: &NewEntry,
    ) -> Result<Tenant> {
        let mut tx = self
            .begin(TxKind::OperatorOn(scope.tenant_str()), true)
            .await?;
        let row = sqlx::query(&format!(
            "UPDATE tenants SET name = COALESCE($1, name), plan = COALESCE($2, plan), \
             suspended = COALESCE($3, suspended) WHERE id = $4 RETURNING {TENANT_COLS}"
        ))
        .bind(patch.name.as_deref())
        .bind(patch.plan.as_deref())
        .bind(patch.suspended)
        .bind(scope.tenant_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| StoreError::from_write(e, "a tenant with this name exists"))?
        .ok_or(StoreError::NotFound)?;
        let tenant = tenant_from_row(&row)?;
        append_in_tx(&mut tx, scope.tenant_str(), audit).await?;
        tx.commit().await?;
        Ok(tenant)
    }

    async fn delete_tenant(&self, scope: &TenantScope) -> Result<()> {
        let mut tx = self
            .begin(TxKind::OperatorOn(scope.tenant_str()), true)
            .await?;
        // Children first, explicitly, so nothing depends on cascade behaviour.
        for table in [
            "agent_kv",
            "usage_rollups",
            "budget_holds",
            "budget_counters",
            "approvals",
            "run_steps",
            "runs",
            "thread_messages",
            "threads",
            "agent_traffic",
            "agent_versions",
            "agents",
            "usage_events",
            "providers",
            "mcp_servers",
            "policies",
            "key_index",
            "audit_log",
            "secrets",
            "tenant_data_keys",
            "api_keys",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
                .bind(scope.tenant_str())
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query("DELETE FROM tenants WHERE id = $1")
            .bind(scope.tenant_str())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl KeyStore for Store {
    async fn create_key(
        &self,
        scope: &TenantScope,
        key: &NewApiKey,
        audit: &NewEntry,
    ) -> Result<ApiKey> {
        let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
        let row = sqlx::query(&format!(
            "INSERT INTO api_keys (id, tenant_id, name, role, agent, prefix, expires_at, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {KEY_COLS}"
        ))
        .bind(&key.id)
        .bind(scope.tenant_str())
        .bind(&key.name)
        .bind(key.role.as_str())
        .bind(key.agent.as_deref())
        .bind(&key.prefix)
        .bind(key.expires_at_ms)
        .bind(key.created_at_ms)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| StoreError::from_write(e, "key id collision"))?;
        sqlx::query("INSERT INTO key_index (hash, tenant_id, key_id) VALUES ($1, $2, $3)")
            .bind(&key.hash)
            .bind(scope.tenant_str())
            .bind(&key.id)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::from_write(e, "key hash collision"))?;
        append_in_tx(&mut tx, scope.tenant_str(), audit).await?;
        tx.commit().await?;
        key_from_row(&row)
    }

    async fn list_keys(&self, scope: &TenantScope, page: &PageRequest) -> Result<Page<ApiKey>> {
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(scope.tenant_str())
        .bind(page.cursor.as_deref().unwrap_or(""))
        .bind(limit_plus_one(page))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let keys = rows.iter().map(key_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(keys, page.limit, |k| k.id.clone()))
    }

    async fn revoke_key(
        &self,
        scope: &TenantScope,
        key_id: &str,
        audit: &NewEntry,
    ) -> Result<ApiKey> {
        let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
        let row = sqlx::query(&format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) \
             WHERE tenant_id = $2 AND id = $3 RETURNING {KEY_COLS}"
        ))
        .bind(now_ms())
        .bind(scope.tenant_str())
        .bind(key_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        sqlx::query("DELETE FROM key_index WHERE tenant_id = $1 AND key_id = $2")
            .bind(scope.tenant_str())
            .bind(key_id)
            .execute(&mut *tx)
            .await?;
        append_in_tx(&mut tx, scope.tenant_str(), audit).await?;
        tx.commit().await?;
        key_from_row(&row)
    }

    async fn lookup_key_hash(&self, hash: &str) -> Result<Option<KeyGrant>> {
        let mut tx = self.begin(TxKind::Auth, false).await?;
        let Some(index) = sqlx::query("SELECT tenant_id, key_id FROM key_index WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let tenant_id: String = index.try_get("tenant_id")?;
        let key_id: String = index.try_get("key_id")?;
        // From here on the transaction is scoped to the tenant the hash names.
        Store::scope_tx(&mut tx, &tenant_id).await?;
        let tenant_row = sqlx::query(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1"))
            .bind(&tenant_id)
            .fetch_optional(&mut *tx)
            .await?;
        let key_row = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(&tenant_id)
        .bind(&key_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        match (tenant_row, key_row) {
            (Some(t), Some(k)) => Ok(Some(KeyGrant {
                tenant: tenant_from_row(&t)?,
                key: key_from_row(&k)?,
            })),
            _ => Ok(None),
        }
    }
}
