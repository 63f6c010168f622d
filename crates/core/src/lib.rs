//! Core vocabulary of Berth: ids, tenant scopes, roles, names and money; pure types, no IO.

pub mod binding;
pub mod cache;
pub mod clock;
pub mod id;
pub mod manifest;
pub mod money;
pub mod name;
pub mod pattern;
pub mod plan;
pub mod policy;
pub mod role;
pub mod scope;

pub use id::{Id, IdKind};
pub use manifest::{Manifest, ManifestError};
pub use money::NanoUsd;
pub use name::{AgentName, NameError, ResourceName};
pub use plan::Plan;
pub use policy::Policy;
pub use role::Role;
pub use scope::{Principal, TenantId, TenantScope};
