//! Tenants' own LLM providers (bring your own key): the key stays in the vault and is
//! named here only by its secret name; base URLs must pass the egress guard.

use crate::Platform;
use crate::error::Error;
use berth_audit::NewEntry;
use berth_core::clock::now_ms;
use berth_core::{ResourceName, TenantScope};
use berth_store::TenantProvider;
use serde_json::json;

pub const TENANT_PROVIDER_KINDS: &[&str] = &["openai", "anthropic", "openai-compatible"];

pub struct ProviderRequest {
    pub kind: String,
    pub base_url: Option<String>,
    pub api_key_secret: String,
}

pub async fn put(
    state: &Platform,
    scope: &TenantScope,
    name: &str,
    req: ProviderRequest,
) -> Result<TenantProvider, Error> {
    let name = ResourceName::parse("provider name", name)
        .map_err(|e| Error::invalid("invalid_name", "name", e.to_string()))?;
    if state.platform_providers.iter().any(|p| p == name.as_str()) {
        return Err(Error::conflict(
            "provider_name_reserved",
            format!("'{name}' is a platform provider; choose another name for your own"),
        ));
    }
    if !TENANT_PROVIDER_KINDS.contains(&req.kind.as_str()) {
        return Err(Error::invalid(
            "invalid_kind",
            "kind",
            format!("kind must be one of {}", TENANT_PROVIDER_KINDS.join(", ")),
        ));
    }
    if req.kind == "openai-compatible" && req.base_url.is_none() {
        return Err(Error::invalid(
            "base_url_required",
            "base_url",
            "an openai-compatible provider needs base_url",
        ));
    }
    if let Some(url) = &req.base_url {
        state
            .egress
            .check_url_resolved(url)
            .await
            .map_err(|e| Error::invalid("egress_refused", "base_url", e.to_string()))?;
    }
    ResourceName::parse("secret name", &req.api_key_secret)
        .map_err(|e| Error::invalid("invalid_secret_name", "api_key_secret", e.to_string()))?;
    if state
        .store
        .get_secret(scope, &req.api_key_secret)
        .await?
        .is_none()
    {
        return Err(Error::invalid(
            "secret_not_found",
            "api_key_secret",
            format!(
                "no secret named '{}'; set it first with PUT /v1/secrets/{}",
                req.api_key_secret, req.api_key_secret
            ),
        ));
    }
    let now = now_ms();
    let created = state
        .store
        .get_provider(scope, name.as_str())
        .await?
        .map_or(now, |p| p.created_at_ms);
    let provider = TenantProvider {
        name: name.as_str().to_owned(),
        kind: req.kind,
        base_url: req.base_url,
        api_key_secret: req.api_key_secret,
        created_at_ms: created,
        updated_at_ms: now,
    };
    let audit = NewEntry::new(
        scope.actor(),
        "provider.put",
        name.as_str(),
        json!({"kind": provider.kind, "base_url": provider.base_url, "api_key_secret": provider.api_key_secret}),
    );
    state.store.put_provider(scope, &provider, &audit).await?;
    Ok(provider)
}

pub async fn get(
    state: &Platform,
    scope: &TenantScope,
    name: &str,
) -> Result<TenantProvider, Error> {
    state.store.get_provider(scope, name).await?.ok_or_else(|| {
        Error::not_found("provider_not_found", format!("no provider named '{name}'"))
    })
}

pub async fn list(state: &Platform, scope: &TenantScope) -> Result<Vec<TenantProvider>, Error> {
    Ok(state.store.list_providers(scope).await?)
}

pub async fn delete(state: &Platform, scope: &TenantScope, name: &str) -> Result<(), Error> {
    let audit = NewEntry::new(scope.actor(), "provider.delete", name, json!({}));
    if !state.store.delete_provider(scope, name, &audit).await? {
        return Err(Error::not_found(
            "provider_not_found",
            format!("no provider named '{name}'"),
        ));
    }
    Ok(())
}
