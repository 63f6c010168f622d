//! Tenant secrets: write-only values, sealed by the vault; only names are ever listed.

use crate::Platform;
use crate::error::Error;
use berth_audit::NewEntry;
use berth_core::{ResourceName, TenantScope};
use berth_store::{Page, PageRequest, SecretMeta};
use berth_vault::MAX_SECRET_BYTES;
use serde_json::json;

pub fn parse_name(raw: &str) -> Result<ResourceName, Error> {
    ResourceName::parse("secret name", raw)
        .map_err(|e| Error::invalid("invalid_name", "name", e.to_string()))
}

/// A binding as written, checked and normalised.
fn parse_binding(binding: Option<&[String]>) -> Result<Option<Vec<String>>, Error> {
    binding
        .map(berth_core::binding::parse_binding)
        .transpose()
        .map_err(|e| Error::invalid("invalid_binding", "binding", e))
}

pub async fn put(
    state: &Platform,
    scope: &TenantScope,
    name: &str,
    value: &str,
    binding: Option<&[String]>,
) -> Result<(), Error> {
    let name = parse_name(name)?;
    let binding = parse_binding(binding)?;
    if value.len() > MAX_SECRET_BYTES {
        return Err(Error::too_large(format!(
            "a secret value may hold at most {MAX_SECRET_BYTES} bytes"
        )));
    }
    if value.is_empty() {
        return Err(Error::invalid(
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
        json!({"bytes": value.len(), "binding": binding, "writer_role": scope.principal().role().as_str()}),
    );
    state
        .vault
        .put(scope, &name, value, binding.as_deref(), &audit)
        .await?;
    // Connections sending the old value close; the log writer forgets it.
    state.mcp.forget_secret(scope.tenant(), name.as_str());
    Ok(())
}

/// Changes only where a secret may be injected (the route lets admins alone do this;
/// anyone else changes a binding only by writing the value again).
pub async fn set_binding(
    state: &Platform,
    scope: &TenantScope,
    name: &str,
    binding: Option<&[String]>,
) -> Result<(), Error> {
    let not_found = || Error::not_found("secret_not_found", format!("no secret named '{name}'"));
    let name = parse_name(name).map_err(|_| not_found())?;
    let binding = parse_binding(binding)?;
    let audit = NewEntry::new(
        scope.actor(),
        "secret.bind",
        name.as_str(),
        json!({"binding": binding}),
    );
    let stored = binding.map(|b| serde_json::Value::from(b).to_string());
    if !state
        .store
        .set_secret_binding(scope, name.as_str(), stored.as_deref(), &audit)
        .await?
    {
        return Err(not_found());
    }
    // A binding that no longer names a server must not leave its connection open.
    state.mcp.forget_secret(scope.tenant(), name.as_str());
    Ok(())
}

pub async fn list(
    state: &Platform,
    scope: &TenantScope,
    page: &PageRequest,
) -> Result<Page<SecretMeta>, Error> {
    Ok(state.store.list_secrets(scope, page).await?)
}

pub async fn delete(state: &Platform, scope: &TenantScope, name: &str) -> Result<(), Error> {
    let not_found = || Error::not_found("secret_not_found", format!("no secret named '{name}'"));
    let name = parse_name(name).map_err(|_| not_found())?;
    let audit = NewEntry::new(scope.actor(), "secret.delete", name.as_str(), json!({}));
    if !state
        .store
        .delete_secret(scope, name.as_str(), &audit)
        .await?
    {
        return Err(not_found());
    }
    state.mcp.forget_secret(scope.tenant(), name.as_str());
    Ok(())
}
