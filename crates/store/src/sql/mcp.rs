//! The tenant's MCP servers: the registry of the tool layer, with each server's last check.

use super::{DbRow, Store, audit::append_in_tx};
use crate::backend::{Backend, TxKind};
use crate::{McpServerCheck, McpServerRecord, McpServerStore, Result};
use async_trait::async_trait;
use berth_audit::NewEntry;
use berth_core::TenantScope;
use sqlx::Row as _;

/// A row of [`MCP_SERVER_COLS`].
fn mcp_server_from_row(r: &DbRow) -> Result<McpServerRecord> {
    Ok(McpServerRecord {
        name: r.try_get("name")?,
        url: r.try_get("url")?,
        headers: r.try_get("headers")?,
        tools: r.try_get("tools")?,
        status: r.try_get("status")?,
        protocol_version: r.try_get("protocol_version")?,
        last_error: r.try_get("last_error")?,
        checked_at_ms: r.try_get("checked_at")?,
        registered_role: r.try_get("registered_role")?,
        created_at_ms: r.try_get("created_at")?,
        updated_at_ms: r.try_get("updated_at")?,
    })
}

/// A server's columns, in the order `put_mcp_server` binds them after the tenant.
const MCP_SERVER_COLS: &str = "name, url, headers, tools, status, protocol_version, \
                               last_error, checked_at, created_at, updated_at, registered_role";

#[async_trait]
impl McpServerStore for Store {
    async fn put_mcp_server(
        &self,
        scope: &TenantScope,
        m: &McpServerRecord,
        audit: &NewEntry,
    ) -> Result<()> {
        let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
        sqlx::query(&format!(
            "INSERT INTO mcp_servers (tenant_id, {MCP_SERVER_COLS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET url = excluded.url, \
             headers = excluded.headers, registered_role = excluded.registered_role, \
             tools = excluded.tools, status = excluded.status, \
             protocol_version = excluded.protocol_version, last_error = excluded.last_error, \
             checked_at = excluded.checked_at, updated_at = excluded.updated_at"
        ))
        .bind(scope.tenant_str())
        .bind(&m.name)
        .bind(&m.url)
        .bind(&m.headers)
        .bind(&m.tools)
        .bind(&m.status)
        .bind(m.protocol_version.as_deref())
        .bind(m.last_error.as_deref())
        .bind(m.checked_at_ms)
        .bind(m.created_at_ms)
        .bind(m.updated_at_ms)
        .bind(m.registered_role.as_deref())
        .execute(&mut *tx)
        .await?;
        append_in_tx(&mut tx, scope.tenant_str(), audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_mcp_server(
        &self,
        scope: &TenantScope,
        name: &str,
    ) -> Result<Option<McpServerRecord>> {
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        let row = sqlx::query(&format!(
            "SELECT {MCP_SERVER_COLS} FROM mcp_servers WHERE tenant_id = $1 AND name = $2"
        ))
        .bind(scope.tenant_str())
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(mcp_server_from_row).transpose()
    }

    async fn list_mcp_servers(&self, scope: &TenantScope) -> Result<Vec<McpServerRecord>> {
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        let rows = sqlx::query(&format!(
            "SELECT {MCP_SERVER_COLS} FROM mcp_servers WHERE tenant_id = $1 ORDER BY name"
        ))
        .bind(scope.tenant_str())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(mcp_server_from_row).collect()
    }

    async fn record_mcp_check(
        &self,
        scope: &TenantScope,
        name: &str,
        c: &McpServerCheck,
    ) -> Result<bool> {
        let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
        let done = sqlx::query(
            "UPDATE mcp_servers SET status = $1, tools = COALESCE($2, tools), \
             protocol_version = COALESCE($3, protocol_version), last_error = $4, checked_at = $5 \
             WHERE tenant_id = $6 AND name = $7",
        )
        .bind(&c.status)
        .bind(c.tools.as_deref())
        .bind(c.protocol_version.as_deref())
        .bind(c.last_error.as_deref())
        .bind(c.checked_at_ms)
        .bind(scope.tenant_str())
        .bind(name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_mcp_server(
        &self,
        scope: &TenantScope,
        name: &str,
        audit: &NewEntry,
    ) -> Result<bool> {
        let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
        let done = sqlx::query("DELETE FROM mcp_servers WHERE tenant_id = $1 AND name = $2")
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
