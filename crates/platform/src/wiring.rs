//! [`Platform`]: the one value that wires the store, vault, gateway, meter, run engine,
//! tools, sandbox and component engine together; every service function takes it.
//! [`Platform::build`] wires it from a [`Wiring`], which the binary fills from its config.

use crate::auth::Authenticator;
use crate::budgets::StoreLedger;
use crate::caches::{AgentToolsCache, Artifacts, PolicyCache};
use crate::jwt::{JwtSettings, JwtVerifier};
use crate::runner::{RunSettings, Runner};
use crate::tools::ToolGate;
use berth_core::Plan;
use berth_egress::EgressGuard;
use berth_gateway::{BodyLimits, PlatformProvider};
use berth_meter::{PriceTable, RateLimiter, UsageRecorder};
use berth_runtime::{MockTools, ToolHost, ToolSet};
use berth_sandbox::{SandboxSettings, SandboxTools};
use berth_store::{AuditWriter, Store};
use berth_tools::{LogMask, McpRegistry, RegistryConfig};
use berth_vault::{MasterKey, Vault};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
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

/// What the binary decides from its configuration, in the platform's terms: everything
/// [`Platform::build`] needs to wire a node. Reading `berth.toml`, the environment and the
/// master key's file stays in the binary; which parts exist and how they are connected
/// (and which background tasks that starts) is decided here.
pub struct Wiring {
    pub store: Arc<dyn Store>,
    pub master_key: MasterKey,
    pub operator_token: String,
    pub jwt: Option<JwtSettings>,
    pub settings: Settings,
    pub runs: RunSettings,
    /// Private destinations tenants' URLs may reach (`[egress] allow_private`).
    pub allow_private: Vec<ipnet::IpNet>,
    pub prices: PriceTable,
    /// The platform's own providers (a key from the config each); `mock` is built in.
    pub providers: Vec<PlatformProvider>,
    pub body_limits: BodyLimits,
    /// Rate limits: in memory on one node, in Redis when several share them.
    pub limiter: Arc<dyn RateLimiter>,
    /// Where usage events, audit entries and budget settlements are journaled before they
    /// are stored (`None`: no journal, a crash loses what was queued).
    pub journal_dir: Option<PathBuf>,
    /// The code sandbox's settings, `None` when it is disabled.
    pub sandbox: Option<SandboxSettings>,
    /// wasmtime's on-disk code cache, so a restart does not recompile components.
    pub component_cache_dir: PathBuf,
    pub mcp: RegistryConfig,
    /// Told every MCP credential, so the log writer masks it.
    pub log_mask: Option<Arc<dyn LogMask>>,
}

/// Why a node could not be wired.
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error("cannot prepare data directory {path}: {source}")]
    Journal {
        path: String,
        source: std::io::Error,
    },
    #[error("the WebAssembly engine: {0}")]
    Engine(String),
}

impl Platform {
    /// Wires a node: starts the background writers (usage events, audit entries, each
    /// journaled when asked), builds the gateway with its budget ledger, the tool hosts
    /// behind one gate (the built-in `mock`, the code sandbox when enabled, the tenants' MCP
    /// servers), the component engine and the run machinery. The run
    /// workers, heartbeat, sweeper and health checks start later, with [`Platform::start`].
    pub async fn build(w: Wiring) -> Result<Platform, WiringError> {
        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let store = w.store;
        let journal_err = |dir: &PathBuf| {
            let path = dir.display().to_string();
            move |source| WiringError::Journal { path, source }
        };
        let usage_store: Arc<dyn berth_store::UsageStore> = store.clone();
        let usage = match &w.journal_dir {
            Some(dir) => UsageRecorder::start_journaled(usage_store, &tasks, shutdown.clone(), dir)
                .await
                .map_err(journal_err(dir))?,
            None => UsageRecorder::start(usage_store, &tasks, shutdown.clone()),
        };
        let audit_store: Arc<dyn berth_store::AuditStore> = store.clone();
        let audit = match &w.journal_dir {
            Some(dir) => AuditWriter::start_journaled(audit_store, &tasks, shutdown.clone(), dir)
                .await
                .map_err(journal_err(dir))?,
            None => AuditWriter::start(audit_store, &tasks, shutdown.clone()),
        };
        let egress = EgressGuard::new(w.allow_private);
        let vault = Arc::new(Vault::new(w.master_key, store.clone()));
        let prices = Arc::new(w.prices);
        let mut platform_providers: Vec<String> =
            w.providers.iter().map(|p| p.name.clone()).collect();
        platform_providers.push("mock".to_owned());
        let provider_store: Arc<dyn berth_store::ProviderStore> = store.clone();
        let ledger = StoreLedger::new(
            store.clone(),
            vault.clone(),
            egress.client(Duration::from_secs(10)),
            tasks.clone(),
            usage.clone(),
        );
        let ledger: Arc<dyn berth_gateway::BudgetLedger> = Arc::new(ledger);
        // Settlements are journaled with usage: a call answered is a call charged, crash
        // or not.
        let settler = match &w.journal_dir {
            Some(dir) => {
                berth_gateway::Settler::start_journaled(ledger, &tasks, shutdown.clone(), dir)
                    .map_err(journal_err(dir))?
            }
            None => berth_gateway::Settler::new(ledger, &tasks, shutdown.clone()),
        };
        let gateway = berth_gateway::Gateway::new(
            w.providers,
            prices.clone(),
            usage.clone(),
            vault.clone(),
            provider_store,
            &egress,
        )
        .with_budgets(settler)
        .with_body_limits(w.body_limits)
        .with_tasks(tasks.clone());
        // Built-in tool servers: `mock` always, the code sandbox unless disabled.
        let mut tool_hosts: Vec<Arc<dyn ToolHost>> = vec![Arc::new(MockTools)];
        if let Some(settings) = w.sandbox {
            let audit: Arc<dyn berth_store::AuditStore> = store.clone();
            tool_hosts.push(Arc::new(SandboxTools::new(settings, audit, usage.clone())));
        }
        let components = berth_component::Engine::new(berth_component::Settings {
            cache_dir: Some(w.component_cache_dir),
            ..berth_component::Settings::default()
        })
        .map_err(|e| WiringError::Engine(e.message))?;
        // Every tool host sits behind one gate (per-tool rate limits, the audit of each
        // call); the built-in servers' names are reserved, so no MCP server can take them.
        let policies: Arc<PolicyCache> = Arc::default();
        let mcp = McpRegistry::new(
            store.clone(),
            vault.clone(),
            egress.clone(),
            w.mcp,
            w.log_mask,
        );
        tool_hosts.push(mcp.clone());
        let tools = ToolGate::new(
            ToolSet::new(tool_hosts),
            store.clone(),
            audit.clone(),
            policies.clone(),
            w.limiter.clone(),
        );
        Ok(Platform {
            mcp,
            components: Arc::new(components),
            artifacts: Arc::default(),
            gateway: Arc::new(gateway),
            limiter: w.limiter,
            runner: Arc::new(Runner::new(w.runs, Arc::new(tools))),
            usage,
            audit,
            policies,
            agent_tools: Arc::default(),
            egress,
            prices,
            platform_providers: Arc::new(platform_providers),
            shutdown,
            vault,
            auth: Arc::new(Authenticator::new(
                &w.operator_token,
                store.clone(),
                w.jwt.map(JwtVerifier::new),
            )),
            store,
            settings: Arc::new(w.settings),
            tasks,
        })
    }
}
