//! The storage contract: one suite every backend must pass, plus PostgreSQL test databases.
//!
//! Compiled only with the `contract` feature, which tests enable; it panics on failure
//! like any test code. One module per capability, as in `sql/`; [`run_all`] runs them all.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agents;
mod approvals;
mod audit;
mod budgets;
mod kv;
mod mcp;
mod pg;
mod policy;
mod providers;
mod runs;
mod secrets;
mod tenants;
mod threads;
mod usage;

pub use agents::agents;
pub use approvals::{approvals, call_approvals};
pub use audit::{audit_chain, concurrent_audit_appends};
pub use budgets::{budgets, concurrent_reservations_never_overspend};
pub use kv::kv;
pub use mcp::mcp_servers;
pub use pg::{PgTestDb, pg_admin_url, pg_test_database};
pub use policy::policies;
pub use providers::providers;
pub use runs::run_queue;
pub use secrets::secrets;
pub use tenants::{delete_tenant_removes_everything, keys, tenants};
pub use threads::runs;
pub use usage::usage;

use crate::Store;
use crate::model::*;
use berth_audit::NewEntry;
use berth_core::clock::now_ms;
use berth_core::{Id, IdKind, Role, TenantId, TenantScope};
use serde_json::json;
use std::sync::Arc;

/// An audit entry for `action`; its content does not matter to the store.
fn audit(action: &str) -> NewEntry {
    NewEntry::new("operator", action, "test", json!({}))
}

pub async fn new_tenant(store: &dyn Store, name: &str) -> TenantScope {
    let tenant = Tenant {
        id: TenantId::new(),
        name: name.to_owned(),
        plan: "free".to_owned(),
        suspended: false,
        created_at_ms: now_ms(),
    };
    store
        .create_tenant(&tenant, &audit("tenant.create"))
        .await
        .unwrap();
    TenantScope::for_operator(tenant.id)
}

pub fn new_key(hash: &str, role: Role) -> NewApiKey {
    NewApiKey {
        id: Id::new(IdKind::Key).into_string(),
        name: "k".to_owned(),
        role,
        agent: None,
        prefix: "bk_1234".to_owned(),
        hash: hash.to_owned(),
        expires_at_ms: None,
        created_at_ms: now_ms(),
    }
}

/// A sealed secret whose bytes are all `byte`.
fn sealed(name: &str, byte: u8) -> SealedSecret {
    SealedSecret {
        name: name.to_owned(),
        nonce: vec![byte; 24],
        ciphertext: vec![byte; 40],
        binding: None,
        writer_role: Some("developer".to_owned()),
        created_at_ms: now_ms(),
        updated_at_ms: now_ms(),
    }
}

/// Runs every contract check against `store`.
pub async fn run_all(store: Arc<dyn Store>) {
    tenants(store.as_ref()).await;
    keys(store.as_ref()).await;
    secrets(store.as_ref()).await;
    audit_chain(store.as_ref()).await;
    concurrent_audit_appends(store.clone()).await;
    delete_tenant_removes_everything(store.as_ref()).await;
    policies(store.as_ref()).await;
    providers(store.as_ref()).await;
    usage(store.as_ref()).await;
    agents(store.as_ref()).await;
    runs(store.as_ref()).await;
    run_queue(store.as_ref()).await;
    approvals(store.as_ref()).await;
    budgets(store.as_ref()).await;
    kv(store.as_ref()).await;
    mcp_servers(store.as_ref()).await;
    call_approvals(store.as_ref()).await;
    concurrent_reservations_never_overspend(store.clone()).await;
}
