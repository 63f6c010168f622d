//! Agents: deploy immutable versions (from a bundle or a JSON manifest), list them, move
//! traffic, roll back. Traffic changes are single store transactions, so the next request
//! sees them whole.

use crate::Platform;
use crate::bundle;
use crate::error::Error;
use berth_audit::NewEntry;
use berth_core::{AgentName, Manifest, TenantScope};
use berth_store::{AgentSummary, AgentVersion, NewVersion, Pin, SplitEntry, StoreError, Traffic};
use serde_json::json;
use sha2::{Digest, Sha256};

pub fn parse_name(raw: &str) -> Result<AgentName, Error> {
    AgentName::parse(raw).map_err(|e| Error::invalid("invalid_name", "name", e.to_string()))
}

fn not_found(name: &str) -> Error {
    Error::not_found("agent_not_found", format!("no agent named '{name}'"))
}

/// The payload of a deploy.
pub enum Source {
    Bundle(bytes::Bytes),
    Manifest(serde_json::Value),
}

pub struct Deployed {
    pub version: AgentVersion,
    pub created: bool,
    pub promoted: bool,
}

pub async fn deploy(
    state: &Platform,
    scope: &TenantScope,
    name: &AgentName,
    source: Source,
    promote: bool,
) -> Result<Deployed, Error> {
    let (manifest, digest, bundle_bytes) = match source {
        Source::Bundle(gz) => {
            let b = bundle::unpack_off_the_workers(name.as_str(), gz.clone()).await?;
            // A component must compile now: a broken one is refused at deploy, not at run.
            crate::components::compile_from_bundle(state, &b.manifest, &b.files).await?;
            (b.manifest, b.digest, Some(gz))
        }
        Source::Manifest(value) => {
            let manifest: Manifest = serde_json::from_value(value).map_err(|e| {
                Error::invalid(
                    "invalid_manifest",
                    "manifest",
                    format!("the manifest is not valid: {e}"),
                )
            })?;
            manifest.validate().map_err(|(section, key, message)| {
                let field = section.map_or_else(|| key.to_owned(), |s| format!("{s}.{key}"));
                Error::invalid("invalid_manifest", &field, format!("{field}: {message}"))
            })?;
            bundle::check_name(name.as_str(), &manifest)?;
            if manifest.component.is_some() {
                return Err(Error::invalid(
                    "invalid_manifest",
                    "component",
                    "a component agent needs its files: deploy a tar.gz bundle",
                ));
            }
            let canonical = serde_json::to_vec(&manifest).map_err(|e| Error::internal(&e))?;
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(&canonical)));
            (manifest, digest, None)
        }
    };
    let manifest_json = serde_json::to_string(&manifest).map_err(|e| Error::internal(&e))?;
    let actor = scope.actor();
    let audit = NewEntry::new(
        actor.clone(),
        "agent.deploy",
        name.as_str(),
        json!({"digest": digest, "promote": promote}),
    );
    let new = NewVersion {
        agent: name.as_str(),
        description: &manifest.description,
        digest: &digest,
        manifest: &manifest_json,
        bundle: bundle_bytes.as_deref(),
        created_by: &actor,
        promote,
    };
    let (version, created) = state.store.create_version(scope, &new, &audit).await?;
    state.agent_tools.evict(scope, name.as_str());
    Ok(Deployed {
        version,
        created,
        promoted: created && promote,
    })
}

pub async fn list(state: &Platform, scope: &TenantScope) -> Result<Vec<AgentSummary>, Error> {
    Ok(state.store.list_agents(scope).await?)
}

pub async fn get(state: &Platform, scope: &TenantScope, name: &str) -> Result<AgentSummary, Error> {
    state
        .store
        .get_agent(scope, name)
        .await?
        .ok_or_else(|| not_found(name))
}

pub async fn delete(state: &Platform, scope: &TenantScope, name: &str) -> Result<(), Error> {
    let audit = NewEntry::new(scope.actor(), "agent.delete", name, json!({}));
    let deleted = state.store.delete_agent(scope, name, &audit).await?;
    state.agent_tools.evict(scope, name);
    if !deleted {
        return Err(not_found(name));
    }
    Ok(())
}

pub async fn versions(
    state: &Platform,
    scope: &TenantScope,
    name: &str,
) -> Result<Vec<AgentVersion>, Error> {
    get(state, scope, name).await?;
    Ok(state.store.list_versions(scope, name).await?)
}

pub async fn version(
    state: &Platform,
    scope: &TenantScope,
    name: &str,
    v: &str,
) -> Result<AgentVersion, Error> {
    let missing = || {
        Error::not_found(
            "version_not_found",
            format!("agent '{name}' has no version {v}"),
        )
    };
    let n: i64 = v.parse().map_err(|_| missing())?;
    state
        .store
        .get_version(scope, name, n)
        .await?
        .ok_or_else(missing)
}

/// Checks a split (integer weights summing to 100, each version once) and pins.
pub fn check_traffic(split: &[SplitEntry], pins: &[Pin]) -> Result<(), Error> {
    if split.is_empty() {
        return Err(Error::invalid(
            "invalid_traffic",
            "split",
            "the split needs at least one version",
        ));
    }
    let total: u32 = split.iter().map(|s| s.weight).sum();
    if total != 100 {
        return Err(Error::invalid(
            "invalid_traffic",
            "split",
            format!("weights must sum to 100, not {total}"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for s in split {
        if !seen.insert(s.version) {
            return Err(Error::invalid(
                "invalid_traffic",
                "split",
                format!("version {} appears twice", s.version),
            ));
        }
        if s.weight == 0 {
            return Err(Error::invalid(
                "invalid_traffic",
                "split",
                format!("version {} has weight 0; leave it out", s.version),
            ));
        }
    }
    for p in pins {
        if berth_core::Id::parse(berth_core::IdKind::Key, &p.key).is_none() {
            return Err(Error::invalid(
                "invalid_traffic",
                "pins",
                format!("{:?} is not a key id", p.key),
            ));
        }
    }
    Ok(())
}

pub async fn set_traffic(
    state: &Platform,
    scope: &TenantScope,
    name: &str,
    split: &[SplitEntry],
    pins: &[Pin],
) -> Result<Traffic, Error> {
    check_traffic(split, pins)?;
    get(state, scope, name).await?;
    let audit = NewEntry::new(
        scope.actor(),
        "agent.traffic",
        name,
        json!({"split": split, "pins": pins}),
    );
    let changed = state
        .store
        .set_traffic(scope, name, split, pins, &audit)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => Error::invalid(
                "unknown_version",
                "split",
                "the traffic names a version this agent does not have",
            ),
            other => other.into(),
        });
    state.agent_tools.evict(scope, name);
    changed
}

/// Sends all traffic to `to`, or by default to the version that held it all before.
pub async fn rollback(
    state: &Platform,
    scope: &TenantScope,
    name: &str,
    to: Option<i64>,
) -> Result<Traffic, Error> {
    let agent = get(state, scope, name).await?;
    let target = match to.or(agent.traffic.previous_full) {
        Some(v) => v,
        None => {
            return Err(Error::conflict(
                "nothing_to_roll_back",
                format!("agent '{name}' has no earlier version that held all traffic; pass \"to\""),
            ));
        }
    };
    let audit = NewEntry::new(scope.actor(), "agent.rollback", name, json!({"to": target}));
    let split = [SplitEntry {
        version: target,
        weight: 100,
    }];
    let changed = state
        .store
        .set_traffic(scope, name, &split, &agent.traffic.pins, &audit)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => Error::invalid(
                "unknown_version",
                "to",
                format!("agent '{name}' has no version {target}"),
            ),
            other => other.into(),
        });
    state.agent_tools.evict(scope, name);
    changed
}
