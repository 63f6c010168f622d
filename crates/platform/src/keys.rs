//! Tenant API keys: minted with 256 random bits, stored as a hash, shown once.

use crate::Platform;
use crate::auth::{KEY_PREFIX, token_hash};
use crate::error::Error;
use berth_audit::NewEntry;
use berth_core::clock::{now_ms, parse_rfc3339};
use berth_core::id::random_secret;
use berth_core::{AgentName, Id, IdKind, ResourceName, Role, TenantScope};
use berth_store::{ApiKey, NewApiKey, Page, PageRequest};
use serde_json::json;

/// What a caller asks for.
pub struct KeyRequest<'a> {
    pub name: &'a str,
    pub role: &'a str,
    pub agent: Option<&'a str>,
    pub expires_at: Option<&'a str>,
}

/// Creates a key in `scope`'s tenant; returns it with the secret token (shown once).
/// A caller cannot mint a key more powerful than its own credential.
pub async fn create(
    state: &Platform,
    scope: &TenantScope,
    req: KeyRequest<'_>,
) -> Result<(ApiKey, String), Error> {
    ResourceName::parse("key name", req.name)
        .map_err(|e| Error::invalid("invalid_name", "name", e.to_string()))?;
    let role: Role = req
        .role
        .parse()
        .map_err(|e: String| Error::invalid("invalid_role", "role", e))?;
    let held = scope.principal().role();
    if !held.allows(role) {
        return Err(Error::forbidden(
            "insufficient_role",
            format!("a '{held}' cannot create a '{role}' key"),
        ));
    }
    let agent = req
        .agent
        .map(|a| {
            AgentName::parse(a).map_err(|e| Error::invalid("invalid_agent", "agent", e.to_string()))
        })
        .transpose()?;
    let expires_at_ms = match req.expires_at {
        None => None,
        Some(raw) => {
            let ms = parse_rfc3339(raw).ok_or_else(|| {
                Error::invalid(
                    "invalid_expires_at",
                    "expires_at",
                    "expires_at must be an RFC 3339 time, e.g. 2026-12-31T00:00:00Z",
                )
            })?;
            if ms <= now_ms() {
                return Err(Error::invalid(
                    "invalid_expires_at",
                    "expires_at",
                    "expires_at must be in the future",
                ));
            }
            Some(ms)
        }
    };
    let token = format!("{KEY_PREFIX}{}", random_secret(32));
    let key = NewApiKey {
        id: Id::new(IdKind::Key).into_string(),
        name: req.name.to_owned(),
        role,
        agent: agent.map(|a| a.as_str().to_owned()),
        prefix: token.chars().take(KEY_PREFIX.len() + 6).collect(),
        hash: token_hash(&token),
        expires_at_ms,
        created_at_ms: now_ms(),
    };
    let audit = NewEntry::new(
        scope.actor(),
        "key.create",
        key.id.as_str(),
        json!({"name": key.name, "role": role, "agent": key.agent, "expires_at_ms": expires_at_ms}),
    );
    let stored = state.store.create_key(scope, &key, &audit).await?;
    Ok((stored, token))
}

pub async fn list(
    state: &Platform,
    scope: &TenantScope,
    page: &PageRequest,
) -> Result<Page<ApiKey>, Error> {
    Ok(state.store.list_keys(scope, page).await?)
}

/// Revokes a key; this node refuses it from the next request on.
pub async fn revoke(state: &Platform, scope: &TenantScope, key_id: &str) -> Result<ApiKey, Error> {
    let not_found = || Error::not_found("key_not_found", format!("no key with id '{key_id}'"));
    if Id::parse(IdKind::Key, key_id).is_none() {
        return Err(not_found());
    }
    let audit = NewEntry::new(scope.actor(), "key.revoke", key_id, json!({}));
    let key = state
        .store
        .revoke_key(scope, key_id, &audit)
        .await
        .map_err(|e| match e {
            berth_store::StoreError::NotFound => not_found(),
            other => other.into(),
        })?;
    state.auth.evict_key(key_id);
    Ok(key)
}
