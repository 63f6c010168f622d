//! Tools as a tenant sees them: the gate every tool call passes (per-tool rate limits and
//! the audit record), the MCP server registry, the tenant's tool list, and calls made by
//! external MCP clients through `/mcp` (policy, approval, data-loss rules, then the gate).

use crate::Platform;
use crate::auth::TenantCaller;
use crate::caches::PolicyCache;
use crate::error::Error;
use async_trait::async_trait;
use berth_audit::NewEntry;
use berth_core::clock::now_ms;
use berth_core::pattern::glob_match;
use berth_core::{Id, IdKind};
use berth_core::{Policy, Role, TenantScope};
use berth_llm::ToolDef;
use berth_meter::RateLimiter;
use berth_runtime::dlp::Verdict;
use berth_runtime::tools::{ToolCallCtx, ToolError, ToolHost, ToolSet, policy_allows};
use berth_store::started_by_actor;
use berth_store::{ApprovalRecord, AuditWriter, McpServerRecord, Store};
use berth_tools::{HeaderRef, Registered, RegistryError, ToolEntry};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every tool call, from a run, a component or `/mcp`, passes here: the tenant's per-tool
/// rate limits first, then the call, then one audit entry (tenant, agent, run, tool,
/// argument digest, outcome, latency) in the tenant's hash chain. The entry is written
/// behind the call (group commit): a call does not wait for the store's writer.
pub struct ToolGate {
    inner: ToolSet,
    store: Arc<dyn Store>,
    audit: AuditWriter,
    policies: Arc<PolicyCache>,
    limiter: Arc<dyn RateLimiter>,
}

impl ToolGate {
    pub fn new(
        inner: ToolSet,
        store: Arc<dyn Store>,
        audit: AuditWriter,
        policies: Arc<PolicyCache>,
        limiter: Arc<dyn RateLimiter>,
    ) -> ToolGate {
        ToolGate {
            inner,
            store,
            audit,
            policies,
            limiter,
        }
    }

    /// `Err` with the model-facing message when a `tools.rate_limits` rule refuses the
    /// call. Each tool matching a rule has its own bucket of `per_minute` calls per tenant.
    async fn rate_limit(
        &self,
        scope: &TenantScope,
        policy: &Policy,
        tool: &str,
    ) -> Result<(), String> {
        let Some(rule) = policy
            .tools
            .rate_limits
            .iter()
            .find(|r| glob_match(&r.tool, tool))
        else {
            return Ok(());
        };
        let key = format!("tool:{}:{tool}", scope.tenant());
        let d = self
            .limiter
            .check(&key, u64::from(rule.per_minute), Duration::from_secs(60), 1)
            .await;
        if d.allowed {
            Ok(())
        } else {
            Err(format!(
                "rate limited: '{tool}' may be called {} times per minute; retry in {:.1}s",
                rule.per_minute,
                d.retry_after.as_secs_f64()
            ))
        }
    }
}

pub fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[async_trait]
impl ToolHost for ToolGate {
    async fn list(&self, scope: &TenantScope) -> Vec<ToolDef> {
        self.inner.list(scope).await
    }

    async fn call(
        &self,
        ctx: &ToolCallCtx<'_>,
        name: &str,
        arguments: &str,
    ) -> Result<String, ToolError> {
        let started = Instant::now();
        let policy = match self.policies.load(self.store.as_ref(), ctx.scope).await {
            Ok(p) => p,
            Err(_) => return Err(ToolError::Failed("the tenant policy is unavailable".into())),
        };
        let result = match self.rate_limit(ctx.scope, &policy, name).await {
            Err(message) => Err((ToolError::Failed(message), "rate_limited")),
            Ok(()) => match self.inner.call(ctx, name, arguments).await {
                Ok(text) => Ok(text),
                Err(e @ ToolError::NotFound(_)) => Err((e, "not_found")),
                Err(e @ ToolError::Failed(_)) => Err((e, "error")),
            },
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err((_, o)) => o,
        };
        let actor = ctx
            .key_id
            .map_or_else(|| format!("agent:{}", ctx.agent), |k| format!("key:{k}"));
        let entry = NewEntry::new(
            actor,
            "tool.call",
            name,
            json!({"agent": ctx.agent, "run": (!ctx.run_id.is_empty()).then_some(ctx.run_id),
                   "args_sha256": digest(arguments), "outcome": outcome,
                   "latency_us": u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)}),
        );
        self.audit.append(ctx.scope, entry).await;
        result.map_err(|(e, _)| e)
    }
}

/// A registration as the API receives it.
pub struct NewServer {
    pub name: String,
    pub url: String,
    pub headers: BTreeMap<String, HeaderRef>,
}

pub async fn register(
    state: &Platform,
    auth: &TenantCaller,
    new: NewServer,
) -> Result<Registered, Error> {
    let scope = auth.require(Role::Developer)?;
    let actor = scope.principal().actor();
    Ok(state
        .mcp
        .register(scope, &new.name, &new.url, new.headers, &actor)
        .await?)
}

pub async fn servers(state: &Platform, auth: &TenantCaller) -> Result<Vec<McpServerRecord>, Error> {
    let scope = auth.require(Role::Viewer)?;
    Ok(state.mcp.servers(scope).await?)
}

pub async fn refresh(
    state: &Platform,
    auth: &TenantCaller,
    name: &str,
) -> Result<Registered, Error> {
    let scope = auth.require(Role::Developer)?;
    Ok(state.mcp.refresh(scope, name).await?)
}

pub async fn remove(state: &Platform, auth: &TenantCaller, name: &str) -> Result<(), Error> {
    let scope = auth.require(Role::Developer)?;
    let actor = scope.principal().actor();
    if state.mcp.remove(scope, name, &actor).await? {
        Ok(())
    } else {
        Err(RegistryError::NotFound(name.to_owned()).into())
    }
}

/// The agent a call through `/mcp` acts as for policy: the key's agent, or `*`.
fn mcp_agent(auth: &TenantCaller) -> String {
    auth.scope
        .principal()
        .agent_restriction()
        .unwrap_or("*")
        .to_owned()
}

/// Which tools a caller of `/mcp` (and `GET /v1/tools`) may use: the policy's `tools.allow`
/// for its agent or `*`; a key restricted to one agent also only what that agent's
/// manifest names in `tools.use` (in any version that has traffic), as in its runs.
struct CallerTools {
    policy: Arc<Policy>,
    agent: String,
    uses: Option<Arc<Vec<String>>>,
    /// Through `/mcp`: built-in tools only where the policy names them.
    via_mcp: bool,
}

impl CallerTools {
    async fn of(
        state: &Platform,
        auth: &TenantCaller,
        via_mcp: bool,
    ) -> Result<CallerTools, Error> {
        let scope = &auth.scope;
        let policy = crate::policy::effective(state, scope).await?;
        let agent = mcp_agent(auth);
        let uses = match scope.principal().agent_restriction() {
            None => None,
            Some(name) => Some(
                state
                    .agent_tools
                    .load(state.store.as_ref(), scope, name)
                    .await?,
            ),
        };
        Ok(CallerTools {
            policy,
            agent,
            uses,
            via_mcp,
        })
    }

    fn allows(&self, tool: &str) -> bool {
        let by_policy = if self.via_mcp {
            berth_runtime::tools::mcp_caller_allowed(&self.policy, &self.agent, tool)
        } else {
            policy_allows(&self.policy, &self.agent, tool)
        };
        by_policy
            && self
                .uses
                .as_ref()
                .is_none_or(|patterns| patterns.iter().any(|p| glob_match(p, tool)))
    }
}

/// Every tool the caller may use: the built-in servers' and the tenant's MCP servers', as
/// the policy's `tools.allow` allows for the caller's agent (or `*`).
/// The tools `auth` may use: through `/mcp` (`via_mcp`), or as `/v1/tools` lists them for
/// agents (which name built-in tools in their manifests).
pub async fn usable(
    state: &Platform,
    auth: &TenantCaller,
    via_mcp: bool,
) -> Result<Vec<ToolEntry>, Error> {
    let scope = auth.require_role(Role::Viewer)?;
    let allowed = CallerTools::of(state, auth, via_mcp).await?;
    let mcp = state.mcp.tools(scope).await?;
    let mut all: Vec<ToolEntry> = state
        .runner
        .tools
        .list(scope)
        .await
        .into_iter()
        .map(|t| match mcp.iter().find(|m| m.name == t.name) {
            Some(m) => m.clone(),
            None => ToolEntry {
                server: berth_tools::split_name(&t.name)
                    .map(|(s, _)| s.to_owned())
                    .unwrap_or_default(),
                tool: berth_tools::split_name(&t.name)
                    .map(|(_, n)| n.to_owned())
                    .unwrap_or_default(),
                name: t.name,
                description: t.description,
                input_schema: t.parameters,
                annotations: None,
            },
        })
        .filter(|t| allowed.allows(&t.name))
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// Admits one request to `/mcp` under the request limits gateway calls pass (per key,
/// per agent, per tenant), so that the endpoint is no way around them.
pub async fn admit_mcp_request(
    state: &Platform,
    auth: &TenantCaller,
) -> Result<crate::limits::Admitted, Error> {
    let scope = auth.require_role(Role::Invoker)?;
    let policy = crate::policy::effective(state, scope).await?;
    let agent = scope.principal().agent_restriction().map(str::to_owned);
    crate::limits::admit(
        state,
        auth,
        &policy,
        crate::limits::Ask {
            agent: agent.as_deref(),
            tokens: None,
        },
    )
    .await
}

/// What a call through `/mcp` gave.
pub enum McpCallOutcome {
    /// The tool's result text.
    Result(String),
    /// A tool error (or a refusal the caller can act on), shown as an MCP tool error.
    ToolError(String),
}

/// A call by an external MCP client: the same policy, approval and data-loss path as a
/// run's. A call that needs approval creates one and is refused with its id; once a
/// reviewer approves it, the same call (same tool, same arguments, same key) goes through
/// once.
pub async fn mcp_call(
    state: &Platform,
    auth: &TenantCaller,
    name: &str,
    arguments: Option<serde_json::Map<String, Value>>,
) -> Result<McpCallOutcome, Error> {
    let scope = auth.require_role(Role::Invoker)?;
    let allowed = CallerTools::of(state, auth, true).await?;
    let (policy, agent) = (allowed.policy.clone(), allowed.agent.clone());
    if !allowed.allows(name) {
        return Ok(McpCallOutcome::ToolError(format!(
            "tool '{name}' is not available to this key"
        )));
    }
    let mut args = Value::Object(arguments.unwrap_or_default()).to_string();
    let dlp = state.runner.dlp_for(scope, &policy);
    let mut hits = Vec::new();
    if let Some(d) = &dlp {
        match d.screen(&args, d.on_tool_args).await {
            Verdict::Clean(t) => args = t,
            Verdict::Redacted { text, detectors } => {
                hits.push(("tool_args", detectors, "redact"));
                args = text;
            }
            Verdict::Blocked { detectors } => {
                audit_dlp_via(
                    &state.audit,
                    scope,
                    "mcp",
                    name,
                    &[("tool_args", detectors, "block")],
                )
                .await;
                return Ok(McpCallOutcome::ToolError(format!(
                    "the call to '{name}' was blocked by the data-loss rules: its arguments hold protected data"
                )));
            }
        }
    }
    let key_id = auth.key.as_ref().map(|k| k.id.clone());
    if policy.tools.approval.iter().any(|p| glob_match(p, name)) {
        let used = state
            .store
            .use_call_approval(
                scope,
                key_id.as_deref(),
                &scope.principal().actor(),
                name,
                &args,
                now_ms(),
            )
            .await?;
        if used.is_none() {
            let id = match pending_approval(state, auth, &agent, name, &args).await? {
                Some(id) => id,
                None => approval_for_call(state, auth, &agent, name, &args).await?,
            };
            audit_dlp_via(&state.audit, scope, "mcp", name, &hits).await;
            return Ok(McpCallOutcome::ToolError(format!(
                "the call to '{name}' needs a human approval: approval_id {id}. \
                 Repeat the same call once it is approved (POST /v1/approvals/{id} with decision approve)."
            )));
        }
    }
    let ctx = ToolCallCtx {
        scope,
        agent: &agent,
        run_id: "",
        key_id: key_id.as_deref(),
    };
    let started = Instant::now();
    let called = state.runner.tools.call(&ctx, name, &args).await;
    // Metered like a run's tool call (kind `tool`, server as provider, tool as model).
    if !matches!(called, Err(ToolError::NotFound(_))) {
        let event = berth_store::UsageEvent {
            id: Id::new(IdKind::Event).into_string(),
            at_ms: now_ms(),
            kind: "tool".to_owned(),
            key_id: key_id.clone(),
            agent: (agent != "*").then(|| agent.clone()),
            provider: berth_tools::split_name(name).map(|(server, _)| server.to_owned()),
            model: Some(name.to_owned()),
            latency_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
            status: if called.is_ok() { "ok" } else { "error" }.to_owned(),
            ..berth_store::UsageEvent::default()
        };
        state.usage.record(scope, event).await;
    }
    let outcome = match called {
        Err(ToolError::NotFound(n)) => McpCallOutcome::ToolError(format!("no tool named '{n}'")),
        Err(ToolError::Failed(m)) => McpCallOutcome::ToolError(m),
        Ok(text) => match &dlp {
            None => McpCallOutcome::Result(text),
            Some(d) => match d.screen(&text, d.on_tool_results).await {
                Verdict::Clean(t) => McpCallOutcome::Result(t),
                Verdict::Redacted { text, detectors } => {
                    hits.push(("tool_results", detectors, "redact"));
                    McpCallOutcome::Result(text)
                }
                Verdict::Blocked { detectors } => {
                    hits.push(("tool_results", detectors, "block"));
                    McpCallOutcome::ToolError(format!(
                        "the result of '{name}' was withheld by the data-loss rules"
                    ))
                }
            },
        },
    };
    audit_dlp_via(&state.audit, scope, "mcp", name, &hits).await;
    Ok(outcome)
}

/// The pending approval of this very call (same key, tool and arguments), so a client that
/// retries before anyone decided is given the same id, not a new approval each time.
async fn pending_approval(
    state: &Platform,
    auth: &TenantCaller,
    agent: &str,
    tool: &str,
    args: &str,
) -> Result<Option<String>, Error> {
    let filter = berth_store::ApprovalFilter {
        status: Some("pending".into()),
        agent: Some(agent.to_owned()),
        run_id: None,
    };
    let page = berth_store::PageRequest {
        limit: berth_store::PageRequest::MAX_LIMIT,
        cursor: None,
    };
    let actor = auth.scope.principal().actor();
    let pending = state
        .store
        .list_approvals(&auth.scope, &filter, &page)
        .await?;
    Ok(pending
        .items
        .into_iter()
        .find(|a| {
            a.run_id.is_none()
                && a.tool == tool
                && a.arguments == args
                && started_by_actor(a.started_by.as_deref(), a.key_id.as_deref(), &actor)
                && a.expires_at_ms > now_ms()
        })
        .map(|a| a.id))
}

async fn approval_for_call(
    state: &Platform,
    auth: &TenantCaller,
    agent: &str,
    tool: &str,
    args: &str,
) -> Result<String, Error> {
    let scope = &auth.scope;
    let id = Id::new(IdKind::Approval).into_string();
    let now = now_ms();
    let timeout =
        i64::try_from(state.runner.settings.approval_timeout.as_millis()).unwrap_or(i64::MAX / 2);
    let approval = ApprovalRecord {
        id: id.clone(),
        run_id: None,
        agent: agent.to_owned(),
        tool: tool.to_owned(),
        call_id: format!("mcp_{}", Id::new(IdKind::Approval).into_string()),
        arguments: args.to_owned(),
        key_id: auth.key.as_ref().map(|k| k.id.clone()),
        status: "pending".into(),
        reason: None,
        decided_by: None,
        created_at_ms: now,
        expires_at_ms: now.saturating_add(timeout),
        decided_at_ms: None,
        started_by: Some(scope.principal().actor()),
    };
    let entry = NewEntry::new(
        scope.principal().actor(),
        "approval.request",
        &id,
        json!({"run": null, "via": "mcp", "agent": agent, "tool": tool, "args_sha256": digest(args)}),
    );
    state
        .store
        .create_call_approval(scope, &approval, &entry)
        .await?;
    Ok(id)
}

/// Audits data-loss hits outside runs (`via` is `mcp` or `gateway`), by detector name,
/// never with the data.
pub(crate) async fn audit_dlp_via(
    audit: &AuditWriter,
    scope: &TenantScope,
    via: &str,
    target: &str,
    hits: &[(&str, Vec<String>, &str)],
) {
    for (on, detectors, action) in hits {
        let entry = NewEntry::new(
            scope.principal().actor(),
            "dlp.hit",
            target,
            json!({"via": via, "on": on, "detectors": detectors, "action": action}),
        );
        audit.append(scope, entry).await;
    }
}
