//! `AppState`: everything a handler needs, as a cheap `Clone` of `Arc`s.

use crate::auth::Authenticator;
use crate::service::policy::PolicyCache;
use berth_core::Plan;
use berth_egress::EgressGuard;
use berth_meter::{PriceTable, UsageRecorder};
use berth_store::Store;
use berth_vault::Vault;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_util::task::TaskTracker;

/// Settings the HTTP layer reads; built by the binary from `berth.toml`.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub plans: BTreeMap<String, Plan>,
    /// The plan a tenant gets when created without one.
    pub default_plan: String,
    /// Connection caps and the header deadline of the HTTP server.
    pub connections: crate::conn::ConnLimits,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            plans: berth_core::plan::default_plans(),
            default_plan: "free".to_owned(),
            connections: crate::conn::ConnLimits::default(),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub vault: Arc<Vault>,
    pub auth: Arc<Authenticator>,
    pub settings: Arc<ApiSettings>,
    /// Background work (batched writers, health checks) drained on shutdown.
    pub tasks: TaskTracker,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub policies: Arc<PolicyCache>,
    /// What keys restricted to one agent may call: its versions' `tools.use`.
    pub agent_tools: Arc<crate::service::tools::AgentToolsCache>,
    pub egress: EgressGuard,
    pub usage: UsageRecorder,
    /// Write-behind of the audit entries of tool calls; audit reads flush it first.
    pub audit: berth_store::AuditWriter,
    pub prices: Arc<PriceTable>,
    /// Names of the platform's providers (from config, plus `mock`), reserved for them.
    pub platform_providers: Arc<Vec<String>>,
    /// Cancelled when the server stops; background tasks drain and end.
    pub shutdown: tokio_util::sync::CancellationToken,
    pub gateway: Arc<berth_gateway::Gateway>,
    /// Rate limits: in memory on one node, in Redis when several share them.
    pub limiter: Arc<dyn berth_meter::RateLimiter>,
    /// Run execution: the queue and workers, live runs, tools.
    pub runner: Arc<crate::service::runner::Runner>,
    /// The WebAssembly engine of component agents, and their compiled code.
    pub components: Arc<berth_component::Engine>,
    pub artifacts: Arc<crate::service::components::Artifacts>,
    /// Each tenant's MCP servers, their tools and the connections to them.
    pub mcp: Arc<berth_tools::McpRegistry>,
}
