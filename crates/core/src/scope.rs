//! `TenantScope`: the capability every tenant-data operation requires.
//!
//! A scope can only be minted by authentication (`TenantScope::authenticated`, called by
//! the api crate after a key or JWT is verified), by the operator acting on one tenant
//! (`TenantScope::for_operator`), or by the platform's own background work for one tenant
//! (`TenantScope::for_system`: the run worker and its sweeps). The constructors are named
//! so that a grep shows every place a scope is created.

use crate::id::{Id, IdKind};
use crate::role::Role;
use std::fmt;

/// A tenant id (`ten_…`), validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Id);

impl TenantId {
    pub fn new() -> Self {
        TenantId(Id::new(IdKind::Tenant))
    }
    pub fn parse(raw: &str) -> Option<Self> {
        Id::parse(IdKind::Tenant, raw).map(TenantId)
    }
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl Default for TenantId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is acting inside a scope; recorded as the actor of audit entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A tenant API key.
    Key {
        id: String,
        role: Role,
        agent: Option<String>,
    },
    /// A JWT subject from the configured issuer.
    Jwt { subject: String, role: Role },
    /// The platform operator acting on this tenant.
    Operator,
    /// The platform's own background work for this tenant: the run worker executing a run
    /// the tenant started, the sweeper expiring approvals and dead runs.
    System,
}

impl Principal {
    /// Audit actor string: `key:key_…`, `jwt:subject`, `operator`.
    pub fn actor(&self) -> String {
        match self {
            Principal::Key { id, .. } => format!("key:{id}"),
            Principal::Jwt { subject, .. } => format!("jwt:{subject}"),
            Principal::Operator => "operator".to_owned(),
            Principal::System => "system".to_owned(),
        }
    }

    /// The role this principal holds; the operator acts with every tenant power.
    pub fn role(&self) -> Role {
        match self {
            Principal::Key { role, .. } | Principal::Jwt { role, .. } => *role,
            Principal::Operator => Role::Admin,
            // It only carries on what a tenant principal started.
            Principal::System => Role::Invoker,
        }
    }

    /// The one agent this principal is restricted to, if any.
    pub fn agent_restriction(&self) -> Option<&str> {
        match self {
            Principal::Key { agent, .. } => agent.as_deref(),
            _ => None,
        }
    }
}

/// Proof that a request was authenticated for a tenant. Only the auth layer builds it.
pub struct Authenticated {
    pub tenant: TenantId,
    pub principal: Principal,
}

/// The capability to read and write one tenant's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantScope {
    tenant: TenantId,
    principal: Principal,
}

impl TenantScope {
    /// Minted by the auth layer once a credential has been verified.
    pub fn authenticated(proof: Authenticated) -> Self {
        TenantScope {
            tenant: proof.tenant,
            principal: proof.principal,
        }
    }

    /// The operator's explicit act on one tenant (create keys, delete its data).
    pub fn for_operator(tenant: TenantId) -> Self {
        TenantScope {
            tenant,
            principal: Principal::Operator,
        }
    }

    /// The platform acting on its own for one tenant (background run execution and
    /// sweeps), never on behalf of a request.
    pub fn for_system(tenant: TenantId) -> Self {
        TenantScope {
            tenant,
            principal: Principal::System,
        }
    }

    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    pub fn tenant_str(&self) -> &str {
        self.tenant.as_str()
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn actor(&self) -> String {
        self.principal.actor()
    }
}
