//! The operator's tenant registry: create, list, update (suspend, re-plan) and delete.

use crate::Platform;
use crate::error::Error;
use berth_audit::NewEntry;
use berth_core::clock::now_ms;
use berth_core::{ResourceName, TenantId, TenantScope};
use berth_store::{Page, PageRequest, Tenant, TenantPatch};
use serde_json::json;

fn check_plan(state: &Platform, plan: &str) -> Result<(), Error> {
    if state.settings.plans.contains_key(plan) {
        return Ok(());
    }
    let known: Vec<&str> = state.settings.plans.keys().map(String::as_str).collect();
    Err(Error::invalid(
        "unknown_plan",
        "plan",
        format!(
            "no plan named '{plan}'; this server has: {}",
            known.join(", ")
        ),
    ))
}

fn check_name(name: &str) -> Result<(), Error> {
    ResourceName::parse("tenant name", name)
        .map(|_| ())
        .map_err(|e| Error::invalid("invalid_name", "name", e.to_string()))
}

/// Parses a tenant id from a path; a malformed id is simply a tenant that does not exist.
pub fn parse_id(raw: &str) -> Result<TenantId, Error> {
    TenantId::parse(raw).ok_or_else(|| not_found(raw))
}

fn not_found(raw: &str) -> Error {
    Error::not_found("tenant_not_found", format!("no tenant with id '{raw}'"))
}

pub async fn create(state: &Platform, name: &str, plan: Option<&str>) -> Result<Tenant, Error> {
    check_name(name)?;
    let plan = plan.unwrap_or(&state.settings.default_plan);
    check_plan(state, plan)?;
    let tenant = Tenant {
        id: TenantId::new(),
        name: name.to_owned(),
        plan: plan.to_owned(),
        suspended: false,
        created_at_ms: now_ms(),
    };
    let audit = NewEntry::new(
        "operator",
        "tenant.create",
        tenant.id.as_str(),
        json!({"name": name, "plan": plan}),
    );
    state
        .store
        .create_tenant(&tenant, &audit)
        .await
        .map_err(|e| match e {
            berth_store::StoreError::Conflict(_) => Error::conflict(
                "tenant_exists",
                format!("a tenant named '{name}' already exists"),
            ),
            other => other.into(),
        })?;
    Ok(tenant)
}

pub async fn list(state: &Platform, page: &PageRequest) -> Result<Page<Tenant>, Error> {
    Ok(state.store.list_tenants(page).await?)
}

pub async fn get(state: &Platform, id: &TenantId) -> Result<Tenant, Error> {
    state
        .store
        .get_tenant(id)
        .await?
        .ok_or_else(|| not_found(id.as_str()))
}

pub async fn update(state: &Platform, id: &TenantId, patch: TenantPatch) -> Result<Tenant, Error> {
    if let Some(name) = &patch.name {
        check_name(name)?;
    }
    if let Some(plan) = &patch.plan {
        check_plan(state, plan)?;
    }
    let scope = TenantScope::for_operator(id.clone());
    let audit = NewEntry::new(
        "operator",
        "tenant.update",
        id.as_str(),
        json!({"name": patch.name, "plan": patch.plan, "suspended": patch.suspended}),
    );
    let updated = state
        .store
        .update_tenant(&scope, &patch, &audit)
        .await
        .map_err(|e| match e {
            berth_store::StoreError::NotFound => not_found(id.as_str()),
            berth_store::StoreError::Conflict(_) => {
                Error::conflict("tenant_exists", "a tenant with this name already exists")
            }
            other => other.into(),
        })?;
    state.auth.evict_tenant(id);
    Ok(updated)
}

/// Deletes the tenant and all of its data; its keys stop working on the next request.
pub async fn delete(state: &Platform, id: &TenantId) -> Result<(), Error> {
    let scope = TenantScope::for_operator(id.clone());
    state
        .store
        .delete_tenant(&scope)
        .await
        .map_err(|e| match e {
            berth_store::StoreError::NotFound => not_found(id.as_str()),
            other => other.into(),
        })?;
    state.auth.evict_tenant(id);
    state.vault.forget_tenant(id);
    state.mcp.forget_tenant(id);
    tracing::info!(tenant = %id, "tenant deleted");
    Ok(())
}
