//! The tenant policy: validated on write, cached for the hot path, revisioned.

use crate::Platform;
use crate::error::Error;
use berth_audit::NewEntry;
use berth_core::{Policy, TenantScope};
use berth_store::StoredPolicy;
use serde_json::json;
use std::sync::Arc;

/// The tenant's policy (the empty policy when it has none).
pub async fn effective(state: &Platform, scope: &TenantScope) -> Result<Arc<Policy>, Error> {
    state.policies.load(state.store.as_ref(), scope).await
}

pub async fn get(state: &Platform, scope: &TenantScope) -> Result<Option<StoredPolicy>, Error> {
    Ok(state.store.get_policy(scope).await?)
}

/// Validates and stores `document`; `expected` is the `If-Match` revision, if sent.
pub async fn put(
    state: &Platform,
    scope: &TenantScope,
    document: serde_json::Value,
    expected: Option<i64>,
) -> Result<StoredPolicy, Error> {
    let policy = Policy::from_json(document).map_err(|e| {
        Error::invalid(
            "invalid_policy",
            &e.field,
            format!("the policy is not valid: {e}"),
        )
    })?;
    policy
        .validate(|re| berth_runtime::dlp::compile_custom(re).map(|_| ()))
        .map_err(|e| Error::invalid("invalid_policy", &e.field, e.to_string()))?;
    for (i, hook) in policy.webhooks.iter().enumerate() {
        state.egress.check_url(&hook.url).map_err(|e| {
            Error::invalid(
                "egress_refused",
                &format!("webhooks[{i}].url"),
                e.to_string(),
            )
        })?;
    }
    let text = serde_json::to_string(&policy).map_err(|e| Error::internal(&e))?;
    let audit = NewEntry::new(
        scope.actor(),
        "policy.update",
        "policy",
        json!({"expected_revision": expected}),
    );
    let stored = state
        .store
        .put_policy(scope, &text, expected, &audit)
        .await
        .map_err(|e| match e {
            berth_store::StoreError::Conflict(m) => Error::conflict("revision_mismatch", m),
            other => other.into(),
        })?;
    state.policies.evict(scope.tenant());
    Ok(stored)
}
