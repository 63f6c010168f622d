//! The caches the [`crate::Platform`] holds: tenants' parsed policies, the tool patterns
//! of agents' live versions, and compiled component code. They read the store themselves
//! and know no service, so the services that use them and the value that holds them do
//! not depend on each other.

use crate::error::Error;
use berth_core::cache::TtlCache;
use berth_core::{Policy, TenantId, TenantScope};
use berth_store::Store;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Per-tenant parsed policies, so a gateway call does not read the store. A write on this
/// node evicts at once; other nodes re-read within `TTL`.
pub struct PolicyCache(TtlCache<TenantId, Arc<Policy>>);

impl Default for PolicyCache {
    fn default() -> Self {
        PolicyCache(TtlCache::new(Self::TTL))
    }
}

impl PolicyCache {
    const TTL: Duration = Duration::from_secs(10);

    pub fn evict(&self, tenant: &TenantId) {
        self.0.evict(tenant);
    }
}

impl PolicyCache {
    /// The tenant's policy from the cache, or read from the store and cached.
    pub async fn load(&self, store: &dyn Store, scope: &TenantScope) -> Result<Arc<Policy>, Error> {
        self.0
            .get_or_load(scope.tenant(), || async {
                let policy = match store.get_policy(scope).await? {
                    Some(stored) => serde_json::from_str::<Policy>(&stored.document)
                        .map_err(|e| Error::internal(&e))?,
                    None => Policy::default(),
                };
                Ok(Arc::new(policy))
            })
            .await
    }
}

/// The `tools.use` patterns of each agent's versions that have traffic, so that a call with
/// a key restricted to the agent does not read the agent and its versions from the store.
/// A deploy, traffic change, rollback or delete on this node evicts at once; other nodes
/// re-read within `TTL`, as for policies.
pub struct AgentToolsCache(TtlCache<(TenantId, String), Arc<Vec<String>>>);

impl Default for AgentToolsCache {
    fn default() -> Self {
        AgentToolsCache(TtlCache::new(Self::TTL))
    }
}

impl AgentToolsCache {
    const TTL: Duration = Duration::from_secs(10);

    pub(crate) async fn load(
        &self,
        store: &dyn Store,
        scope: &TenantScope,
        agent: &str,
    ) -> Result<Arc<Vec<String>>, Error> {
        let key = (scope.tenant().clone(), agent.to_owned());
        self.0
            .get_or_load(&key, || async {
                let mut patterns = Vec::new();
                if let Some(summary) = store.get_agent(scope, agent).await? {
                    for entry in summary.traffic.split.iter().filter(|e| e.weight > 0) {
                        if let Some(v) = store.get_version(scope, agent, entry.version).await?
                            && let Ok(m) = serde_json::from_str::<berth_core::Manifest>(&v.manifest)
                        {
                            patterns.extend(m.tools.use_);
                        }
                    }
                }
                Ok(Arc::new(patterns))
            })
            .await
    }

    /// Forgets the agent's patterns after a change to which of its versions have traffic.
    pub fn evict(&self, scope: &TenantScope, agent: &str) {
        self.0.evict(&(scope.tenant().clone(), agent.to_owned()));
    }
}

/// The compiled code of deployed versions, by version digest (versions are immutable, so
/// an entry never goes stale).
#[derive(Default)]
pub struct Artifacts {
    by_digest: Mutex<std::collections::HashMap<String, Arc<Vec<u8>>>>,
}

impl Artifacts {
    /// The compiled code of the version with this digest, when this process has it.
    pub fn get(&self, digest: &str) -> Option<Arc<Vec<u8>>> {
        self.by_digest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(digest)
            .cloned()
    }

    pub fn insert(&self, digest: String, artifact: Arc<Vec<u8>>) {
        self.by_digest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(digest, artifact);
    }
}
