//! Authentication: the operator token, tenant API keys and JWTs, verified into a
//! [`Credential`]; a tenant caller's [`TenantScope`] and the role checks on it.
//!
//! This knows credentials, not requests: the HTTP crate reads the token from a header and
//! asks [`Authenticator::authenticate`]. It holds its own store handle rather than the
//! [`crate::Platform`] that holds it, so the two do not depend on each other.
//!
//! Key lookups are cached so the hot path makes no database round trip; revoking a key,
//! or suspending or deleting a tenant, evicts the affected entries at once on this node
//! (other nodes see it within [`Authenticator::TTL`]).

use crate::error::Error;
use crate::jwt::{JwtClaims, JwtVerifier};
use berth_core::cache::TtlCache;
use berth_core::clock::now_ms;
use berth_core::scope::Authenticated;
use berth_core::{Principal, Role, TenantId, TenantScope};
use berth_store::{ApiKey, Store, Tenant};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Prefix of tenant API keys.
pub const KEY_PREFIX: &str = "bk_";

/// Hex SHA-256 of a token: what is stored and what the cache is keyed by. Tokens carry
/// 256 random bits, so a fast hash is the right tool (no password stretching needed).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[derive(Clone)]
struct CachedGrant {
    tenant: Tenant,
    key: ApiKey,
}

pub struct Authenticator {
    operator_hash: [u8; 32],
    store: Arc<dyn Store>,
    keys: TtlCache<String, CachedGrant>,
    /// Hashes recently found to match no key, so a flood of bad tokens stays in memory.
    misses: RwLock<HashMap<String, Instant>>,
    tenants: TtlCache<TenantId, Tenant>,
    jwt: Option<JwtVerifier>,
}

/// A verified caller.
pub enum Credential {
    Operator,
    Tenant(Box<TenantCaller>),
}

/// A caller acting inside one tenant.
#[derive(Clone)]
pub struct TenantCaller {
    pub scope: TenantScope,
    pub tenant: Tenant,
    /// The key used, when the credential was an API key.
    pub key: Option<ApiKey>,
}

const MAX_MISSES: usize = 10_000;

impl Authenticator {
    /// How long a cached grant is trusted before it is re-read from the store.
    pub const TTL: Duration = Duration::from_secs(30);
    const MISS_TTL: Duration = Duration::from_secs(5);

    pub fn new(operator_token: &str, store: Arc<dyn Store>, jwt: Option<JwtVerifier>) -> Self {
        Authenticator {
            operator_hash: Sha256::digest(operator_token.as_bytes()).into(),
            store,
            keys: TtlCache::new(Self::TTL),
            misses: RwLock::new(HashMap::new()),
            tenants: TtlCache::new(Self::TTL),
            jwt,
        }
    }

    pub async fn authenticate(&self, token: &str) -> Result<Credential, Error> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if constant_time_eq(&digest, &self.operator_hash) {
            return Ok(Credential::Operator);
        }
        if token.starts_with(KEY_PREFIX) {
            return self.authenticate_key(&hex::encode(digest)).await;
        }
        if token.matches('.').count() == 2
            && let Some(jwt) = &self.jwt
        {
            let claims = jwt.verify(token).await?;
            return self.authenticate_jwt(claims).await;
        }
        Err(Error::unauthenticated(
            "invalid_credentials",
            "the credential is not valid",
        ))
    }

    async fn authenticate_key(&self, hash: &str) -> Result<Credential, Error> {
        let grant = match self.keys.get(hash) {
            Some(g) => g,
            None => {
                let recent_miss = self
                    .misses
                    .read()
                    .ok()
                    .and_then(|m| m.get(hash).copied())
                    .is_some_and(|t| t.elapsed() < Self::MISS_TTL);
                if recent_miss {
                    return Err(invalid_key());
                }
                let ticket = self.keys.ticket();
                match self.store.lookup_key_hash(hash).await? {
                    Some(g) => {
                        let g = CachedGrant {
                            tenant: g.tenant,
                            key: g.key,
                        };
                        self.keys.put(ticket, hash.to_owned(), g.clone());
                        g
                    }
                    None => {
                        if let Ok(mut m) = self.misses.write() {
                            if m.len() >= MAX_MISSES {
                                m.retain(|_, t| t.elapsed() < Self::MISS_TTL);
                                if m.len() >= MAX_MISSES {
                                    m.clear();
                                }
                            }
                            m.insert(hash.to_owned(), Instant::now());
                        }
                        return Err(invalid_key());
                    }
                }
            }
        };
        if grant.key.revoked_at_ms.is_some() {
            return Err(invalid_key());
        }
        if grant.key.expires_at_ms.is_some_and(|exp| exp <= now_ms()) {
            return Err(Error::unauthenticated(
                "key_expired",
                "this API key has expired",
            ));
        }
        check_not_suspended(&grant.tenant)?;
        let principal = Principal::Key {
            id: grant.key.id.clone(),
            role: grant.key.role,
            agent: grant.key.agent.clone(),
        };
        Ok(Credential::Tenant(Box::new(TenantCaller {
            scope: TenantScope::authenticated(Authenticated {
                tenant: grant.tenant.id.clone(),
                principal,
            }),
            tenant: grant.tenant,
            key: Some(grant.key),
        })))
    }

    async fn authenticate_jwt(&self, claims: JwtClaims) -> Result<Credential, Error> {
        let tenant = self.tenant(&claims.tenant).await?.ok_or_else(|| {
            Error::unauthenticated("invalid_credentials", "the token names no existing tenant")
        })?;
        check_not_suspended(&tenant)?;
        let principal = Principal::Jwt {
            subject: claims.subject,
            role: claims.role,
        };
        Ok(Credential::Tenant(Box::new(TenantCaller {
            scope: TenantScope::authenticated(Authenticated {
                tenant: tenant.id.clone(),
                principal,
            }),
            tenant,
            key: None,
        })))
    }

    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, Error> {
        if let Some(t) = self.tenants.get(id) {
            return Ok(Some(t));
        }
        let ticket = self.tenants.ticket();
        let found = self.store.get_tenant(id).await?;
        if let Some(t) = &found {
            self.tenants.put(ticket, id.clone(), t.clone());
        }
        Ok(found)
    }

    /// Forgets a revoked key at once.
    pub fn evict_key(&self, key_id: &str) {
        self.keys.evict_where(|_, g| g.key.id == key_id);
    }

    /// Forgets everything cached about a tenant (suspended, renamed, re-planned, deleted).
    pub fn evict_tenant(&self, tenant: &TenantId) {
        self.keys.evict_where(|_, g| &g.tenant.id == tenant);
        self.tenants.evict(tenant);
    }
}

fn invalid_key() -> Error {
    Error::unauthenticated("invalid_api_key", "the API key is not valid")
}

fn check_not_suspended(tenant: &Tenant) -> Result<(), Error> {
    if tenant.suspended {
        return Err(Error::forbidden(
            "tenant_suspended",
            "this tenant is suspended",
        ));
    }
    Ok(())
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl TenantCaller {
    /// Requires `role` for an endpoint that is not about one agent. A key restricted to
    /// one agent may not use such endpoints at all.
    pub fn require(&self, role: Role) -> Result<&TenantScope, Error> {
        if let Some(agent) = self.scope.principal().agent_restriction() {
            return Err(Error::forbidden(
                "agent_restricted_key",
                format!("this key is restricted to agent '{agent}'"),
            ));
        }
        self.require_role(role)
    }

    /// Requires `role` for an endpoint about agent `agent`: a key restricted to another
    /// agent is refused, and a restricted key only invokes its agent (API.md), so anything
    /// above the invoker's rights (deploys, traffic, rollback, deletes) is refused whatever
    /// role the key was given.
    pub fn require_for_agent(&self, role: Role, agent: &str) -> Result<&TenantScope, Error> {
        if let Some(only) = self.scope.principal().agent_restriction() {
            if only != agent {
                return Err(Error::forbidden(
                    "agent_restricted_key",
                    format!("this key is restricted to agent '{only}'"),
                ));
            }
            if !Role::Invoker.allows(role) {
                return Err(Error::forbidden(
                    "agent_restricted_key",
                    format!("this key may only invoke agent '{only}'"),
                ));
            }
        }
        self.require_role(role)
    }

    /// Whether this credential sees what belongs to `agent` (a key restricted to one agent
    /// sees only that agent's runs, threads and approvals; others are answered as missing).
    pub fn sees_agent(&self, agent: &str) -> bool {
        self.scope
            .principal()
            .agent_restriction()
            .is_none_or(|only| only == agent)
    }

    /// The agent a list is filtered to for this credential: the one asked for, narrowed to
    /// the key's own agent; `None` when a restricted key asks for another agent's list
    /// (which is then empty).
    pub fn agent_filter(&self, asked: Option<String>) -> Option<Option<String>> {
        match self.scope.principal().agent_restriction() {
            None => Some(asked),
            Some(only) if asked.as_deref().is_none_or(|a| a == only) => Some(Some(only.to_owned())),
            Some(_) => None,
        }
    }

    /// Requires `role`, allowing agent-restricted keys (for endpoints open to every key,
    /// and later for endpoints about the key's own agent).
    pub fn require_role(&self, role: Role) -> Result<&TenantScope, Error> {
        let held = self.scope.principal().role();
        if !held.allows(role) {
            return Err(Error::forbidden(
                "insufficient_role",
                format!("this needs role '{role}' or higher; the credential has '{held}'"),
            ));
        }
        Ok(&self.scope)
    }
}
