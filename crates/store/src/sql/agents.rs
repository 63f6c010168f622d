//! Agents, their immutable versions, and the traffic pointer (split, pins, and the
//! version that held all traffic before, which rollback returns to).

use super::{DbRow, Store, Tx, audit::append_in_tx};
use crate::backend::{Backend, TxKind, to_json};
use crate::{
    AgentStore, AgentSummary, AgentVersion, NewVersion, Pin, Result, SplitEntry, StoreError,
    Traffic,
};
use async_trait::async_trait;
use berth_audit::NewEntry;
use berth_core::TenantScope;
use berth_core::clock::now_ms;
use sqlx::Row as _;

/// The split and pins are stored as JSON text (one column each, read whole); text that
/// does not parse is corruption.
fn traffic_from_row(r: &DbRow) -> Result<Traffic> {
    let split: String = r.try_get("split")?;
    let pins: String = r.try_get("pins")?;
    Ok(Traffic {
        split: serde_json::from_str(&split)
            .map_err(|e| StoreError::Corrupt(format!("traffic split: {e}")))?,
        pins: serde_json::from_str(&pins)
            .map_err(|e| StoreError::Corrupt(format!("traffic pins: {e}")))?,
        previous_full: r.try_get("previous_full")?,
    })
}

/// A row of [`VERSION_COLS`]; the bundle is left out, it is read only to run a component.
fn version_from_row(r: &DbRow) -> Result<AgentVersion> {
    Ok(AgentVersion {
        agent: r.try_get("agent")?,
        version: r.try_get("version")?,
        digest: r.try_get("digest")?,
        manifest: r.try_get("manifest")?,
        created_at_ms: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
    })
}

/// A version's columns, without the bundle (large, and wanted only by `version_bundle`).
const VERSION_COLS: &str = "agent, version, digest, manifest, created_at, created_by";

/// Writes the traffic of `agent` inside `tx`, remembering which version held all of
/// it before (the default rollback target).
async fn write_traffic(
    tx: &mut Tx,
    tenant: &str,
    agent: &str,
    split: &[SplitEntry],
    pins: &[Pin],
) -> Result<Traffic> {
    let current = sqlx::query(
        "SELECT split, pins, previous_full FROM agent_traffic WHERE tenant_id = $1 AND agent = $2",
    )
    .bind(tenant)
    .bind(agent)
    .fetch_optional(&mut **tx)
    .await?
    .as_ref()
    .map(traffic_from_row)
    .transpose()?
    .unwrap_or_default();
    let new = Traffic {
        split: split.to_vec(),
        pins: pins.to_vec(),
        previous_full: None,
    };
    let previous_full = match current.full_version() {
        Some(v) if new.full_version() != Some(v) => Some(v),
        _ => current.previous_full,
    };
    sqlx::query(
        "INSERT INTO agent_traffic (tenant_id, agent, split, pins, previous_full, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, agent) DO UPDATE \
         SET split = excluded.split, pins = excluded.pins, \
         previous_full = excluded.previous_full, updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(agent)
    .bind(to_json(&new.split)?)
    .bind(to_json(&new.pins)?)
    .bind(previous_full)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(Traffic {
        previous_full,
        ..new
    })
}

/// Agents with their latest version and traffic, all of them or only `only`, in one
/// statement, so a listing is one read however many agents there are.
async fn summaries(tx: &mut Tx, tenant: &str, only: Option<&str>) -> Result<Vec<AgentSummary>> {
    let rows = sqlx::query(
        "SELECT a.name, a.description, a.created_at, (SELECT MAX(v.version) \
         FROM agent_versions v WHERE v.tenant_id = a.tenant_id \
         AND v.agent = a.name) AS latest, t.split, t.pins, t.previous_full FROM agents a \
         LEFT JOIN agent_traffic t ON t.tenant_id = a.tenant_id AND t.agent = a.name \
         WHERE a.tenant_id = $1 AND ($2 = '' OR a.name = $2) ORDER BY a.name",
    )
    .bind(tenant)
    .bind(only.unwrap_or(""))
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| {
            let has_traffic: Option<String> = r.try_get("split")?;
            Ok(AgentSummary {
                name: r.try_get("name")?,
                description: r.try_get("description")?,
                latest_version: r.try_get::<Option<i64>, _>("latest")?.unwrap_or(0),
                traffic: if has_traffic.is_some() {
                    traffic_from_row(r)?
                } else {
                    Traffic::default()
                },
                created_at_ms: r.try_get("created_at")?,
            })
        })
        .collect()
}

#[async_trait]
impl AgentStore for Store {
    async fn create_version(
        &self,
        scope: &TenantScope,
        v: &NewVersion<'_>,
        audit: &NewEntry,
    ) -> Result<(AgentVersion, bool)> {
        let tenant = scope.tenant_str();
        let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
        Store::lock_agent(&mut tx, tenant, v.agent).await?;
        let existing = sqlx::query(&format!(
            "SELECT {VERSION_COLS} FROM agent_versions WHERE tenant_id = $1 AND agent = $2 \
             AND digest = $3"
        ))
        .bind(tenant)
        .bind(v.agent)
        .bind(v.digest)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            tx.commit().await?;
            return Ok((version_from_row(&row)?, false));
        }
        let now = now_ms();
        sqlx::query(
            "INSERT INTO agents (tenant_id, name, description, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET description = excluded.description",
        )
        .bind(tenant)
        .bind(v.agent)
        .bind(v.description)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let latest: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(version) FROM agent_versions WHERE tenant_id = $1 AND agent = $2",
        )
        .bind(tenant)
        .bind(v.agent)
        .fetch_one(&mut *tx)
        .await?;
        let version = latest.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO agent_versions (tenant_id, agent, version, digest, manifest, bundle, \
             created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(tenant)
        .bind(v.agent)
        .bind(version)
        .bind(v.digest)
        .bind(v.manifest)
        .bind(v.bundle)
        .bind(now)
        .bind(v.created_by)
        .execute(&mut *tx)
        .await?;
        if v.promote {
            write_traffic(
                &mut tx,
                tenant,
                v.agent,
                &[SplitEntry {
                    version,
                    weight: 100,
                }],
                &[],
            )
            .await?;
        }
        append_in_tx(&mut tx, tenant, audit).await?;
        tx.commit().await?;
        Ok((
            AgentVersion {
                agent: v.agent.to_owned(),
                version,
                digest: v.digest.to_owned(),
                manifest: v.manifest.to_owned(),
                created_at_ms: now,
                created_by: v.created_by.to_owned(),
            },
            true,
        ))
    }

    async fn list_agents(&self, scope: &TenantScope) -> Result<Vec<AgentSummary>> {
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        let out = summaries(&mut tx, scope.tenant_str(), None).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn get_agent(&self, scope: &TenantScope, name: &str) -> Result<Option<AgentSummary>> {
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        let out = summaries(&mut tx, scope.tenant_str(), Some(name)).await?;
        tx.commit().await?;
        Ok(out.into_iter().next())
    }

    async fn delete_agent(
        &self,
        scope: &TenantScope,
        name: &str,
        audit: &NewEntry,
    ) -> Result<bool> {
        let tenant = scope.tenant_str();
        let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
        for table in ["agent_traffic", "agent_versions"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE tenant_id = $1 AND agent = $2"
            ))
            .bind(tenant)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        let done = sqlx::query("DELETE FROM agents WHERE tenant_id = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        append_in_tx(&mut tx, tenant, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn list_versions(&self, scope: &TenantScope, agent: &str) -> Result<Vec<AgentVersion>> {
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_COLS} FROM agent_versions WHERE tenant_id = $1 AND agent = $2 \
             ORDER BY version"
        ))
        .bind(scope.tenant_str())
        .bind(agent)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(version_from_row).collect()
    }

    async fn get_version(
        &self,
        scope: &TenantScope,
        agent: &str,
        version: i64,
    ) -> Result<Option<AgentVersion>> {
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        let row = sqlx::query(&format!(
            "SELECT {VERSION_COLS} FROM agent_versions WHERE tenant_id = $1 AND agent = $2 \
             AND version = $3"
        ))
        .bind(scope.tenant_str())
        .bind(agent)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(version_from_row).transpose()
    }

    async fn set_traffic(
        &self,
        scope: &TenantScope,
        agent: &str,
        split: &[SplitEntry],
        pins: &[Pin],
        audit: &NewEntry,
    ) -> Result<Traffic> {
        let tenant = scope.tenant_str();
        let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
        Store::lock_agent(&mut tx, tenant, agent).await?;
        let mut named: Vec<i64> = split
            .iter()
            .map(|s| s.version)
            .chain(pins.iter().map(|p| p.version))
            .collect();
        named.sort_unstable();
        named.dedup();
        for v in named {
            let found: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM agent_versions WHERE tenant_id = $1 AND agent = $2 \
                 AND version = $3",
            )
            .bind(tenant)
            .bind(agent)
            .bind(v)
            .fetch_optional(&mut *tx)
            .await?;
            if found.is_none() {
                return Err(StoreError::NotFound);
            }
        }
        let traffic = write_traffic(&mut tx, tenant, agent, split, pins).await?;
        append_in_tx(&mut tx, tenant, audit).await?;
        tx.commit().await?;
        Ok(traffic)
    }
}
