//! Tenant secrets: write-only values, sealed by the vault; only names are ever listed.

use crate::error::ApiError;
use crate::state::AppState;
use berth_audit::NewEntry;
use berth_core::{ResourceName, TenantScope};
use berth_store::{Page, PageRequest, SecretMeta};
use berth_vault::MAX_SECRET_BYTES;
use serde_json::json;

pub fn parse_name(raw: &str) -> Result<ResourceName, ApiError> {
    ResourceName::parse("secret name", raw)
        .map_err(|e| ApiError::invalid("invalid_name", "name", e.to_string()))
}

pub async fn put(
    state: &AppState,
    scope: &TenantScope,
    name: &str,
    value: &str,
) -> Result<(), ApiError> {
    let name = parse_name(name)?;
    if value.len() > MAX_SECRET_BYTES {
        return Err(ApiError::too_large(format!(
            "a secret value may hold at most {MAX_SECRET_BYTES} bytes"
        )));
    }
    if value.is_empty() {
        return Err(ApiError::invalid(
            "empty_secret",
            "value",
            "a secret value must not be empty",
        ));
    }
    // The audit entry records that the value changed, never the value or a digest of it.
    let audit = NewEntry::new(
        scope.actor(),
        "secret.put",
        name.as_str(),
        json!({"bytes": value.len()}),
    );
    state.vault.put(scope, &name, value, &audit).await?;
    Ok(())
}

pub async fn list(
    state: &AppState,
    scope: &TenantScope,
    page: &PageRequest,
) -> Result<Page<SecretMeta>, ApiError> {
    Ok(state.store.list_secrets(scope, page).await?)
}

pub async fn delete(state: &AppState, scope: &TenantScope, name: &str) -> Result<(), ApiError> {
    let not_found = || ApiError::not_found("secret_not_found", format!("no secret named '{name}'"));
    let name = parse_name(name).map_err(|_| not_found())?;
    let audit = NewEntry::new(scope.actor(), "secret.delete", name.as_str(), json!({}));
    if !state
        .store
        .delete_secret(scope, name.as_str(), &audit)
        .await?
    {
        return Err(not_found());
    }
    Ok(())
}
