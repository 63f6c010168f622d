//! [`Platform`]: the one value that wires the store, vault, gateway, meter, run engine,
//! tools, sandbox and component engine together; every service function takes it.

use crate::auth::Authenticator;
use crate::caches::{AgentToolsCache, Artifacts, PolicyCache};
use crate::runner::Runner;
use berth_core::Plan;
use berth_egress::EgressGuard;
use berth_meter::{PriceTable, UsageRecorder};
use berth_store::Store;
use berth_vault::Vault;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The platform's own settings (the plans); built by the binary from `berth.toml`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub plans: BTreeMap<String, Plan>,
    /// The plan a tenant gets when created without one.
    pub default_plan: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            plans: berth_core::plan::default_plans(),
            default_plan: "free".to_owned(),
        }
    }
}

/// Everything the platform's operations need, as a cheap `Clone` of `Arc`s. Built once by
/// the binary; its background tasks start with [`Platform::start`] and end with
/// [`Platform::stop`].
#[derive(Clone)]
pub struct Platform {
    pub store: Arc<dyn Store>,
    pub vault: Arc<Vault>,
    pub auth: Arc<Authenticator>,
    pub settings: Arc<Settings>,
    /// Background work (batched writers, health checks, run workers) drained on stop.
    pub tasks: TaskTracker,
    pub policies: Arc<PolicyCache>,
    /// What keys restricted to one agent may call: its versions' `tools.use`.
    pub agent_tools: Arc<AgentToolsCache>,
    pub egress: EgressGuard,
    pub usage: UsageRecorder,
    /// Write-behind of the audit entries of tool calls; audit reads flush it first.
    pub audit: berth_store::AuditWriter,
    pub prices: Arc<PriceTable>,
    /// Names of the platform's providers (from config, plus `mock`), reserved for them.
    pub platform_providers: Arc<Vec<String>>,
    /// Cancelled when the node stops; background tasks drain and end.
    pub shutdown: CancellationToken,
    pub gateway: Arc<berth_gateway::Gateway>,
    /// Rate limits: in memory on one node, in Redis when several share them.
    pub limiter: Arc<dyn berth_meter::RateLimiter>,
    /// Run execution: the queue and workers, live runs, tools.
    pub runner: Arc<Runner>,
    /// The WebAssembly engine of component agents, and their compiled code.
    pub components: Arc<berth_component::Engine>,
    pub artifacts: Arc<Artifacts>,
    /// Each tenant's MCP servers, their tools and the connections to them.
    pub mcp: Arc<berth_tools::McpRegistry>,
}
