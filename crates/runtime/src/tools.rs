//! The one tool interface of the agent loop: every source of tools (MCP servers, the code
//! sandbox, the built-in `mock` server) is a `ToolHost`; which tools an agent may call and
//! which calls wait for a human are decided here, once, for all of them.

use async_trait::async_trait;
use berth_core::pattern::glob_match;
use berth_core::{Manifest, Policy, TenantScope};
use berth_llm::ToolDef;
use serde_json::{Value, json};
use std::sync::Arc;

/// Who is calling a tool, for the host's credentials, metering and audit.
#[derive(Debug, Clone, Copy)]
pub struct ToolCallCtx<'a> {
    pub scope: &'a TenantScope,
    pub agent: &'a str,
    pub run_id: &'a str,
    pub key_id: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ToolError {
    /// No host has this tool (hosts answer this so that the next one is asked).
    #[error("no tool named '{0}'")]
    NotFound(String),
    /// The tool ran and failed; the message goes to the model as the tool's result.
    #[error("{0}")]
    Failed(String),
}

#[async_trait]
pub trait ToolHost: Send + Sync {
    /// Every tool this host offers the tenant, names namespaced `server__tool`.
    async fn list(&self, scope: &TenantScope) -> Vec<ToolDef>;
    /// Calls one tool with its arguments (JSON text); the answer is the result text.
    async fn call(
        &self,
        ctx: &ToolCallCtx<'_>,
        name: &str,
        arguments: &str,
    ) -> Result<String, ToolError>;
}

/// Several hosts seen as one: tools are listed from all, a call goes to the first host that
/// has the tool.
#[derive(Clone, Default)]
pub struct ToolSet {
    hosts: Vec<Arc<dyn ToolHost>>,
}

impl ToolSet {
    pub fn new(hosts: Vec<Arc<dyn ToolHost>>) -> Self {
        ToolSet { hosts }
    }
}

#[async_trait]
impl ToolHost for ToolSet {
    async fn list(&self, scope: &TenantScope) -> Vec<ToolDef> {
        let mut all = Vec::new();
        for h in &self.hosts {
            all.extend(h.list(scope).await);
        }
        all
    }

    async fn call(
        &self,
        ctx: &ToolCallCtx<'_>,
        name: &str,
        arguments: &str,
    ) -> Result<String, ToolError> {
        for h in &self.hosts {
            match h.call(ctx, name, arguments).await {
                Err(ToolError::NotFound(_)) => continue,
                other => return other,
            }
        }
        Err(ToolError::NotFound(name.to_owned()))
    }
}

/// Deny by default: a tool is callable only if the agent's manifest names it in `tools.use`
/// and the tenant policy's `tools.allow` (for this agent, or `*`) allows it. A policy with no
/// `tools.allow` at all leaves the choice to the manifest.
pub fn tool_allowed(manifest: &Manifest, policy: &Policy, tool: &str) -> bool {
    manifest.tools.use_.iter().any(|p| glob_match(p, tool))
        && policy_allows(policy, &manifest.name, tool)
}

/// The policy half of [`tool_allowed`]: `tools.allow` for `agent` or `*` names the tool (a
/// policy without `tools.allow` allows every tool). Calls through `/mcp`, which have no
/// manifest, are decided by this alone.
pub fn policy_allows(policy: &Policy, agent: &str, tool: &str) -> bool {
    let allow = &policy.tools.allow;
    if allow.is_empty() {
        return true;
    }
    [agent, "*"]
        .iter()
        .filter_map(|a| allow.get(*a))
        .flatten()
        .any(|p| glob_match(p, tool))
}

/// The tool servers built into Berth (no tenant may register one of these names).
pub const BUILTIN_TOOL_SERVERS: &[&str] = &["mock", "sandbox"];

/// Whether an external MCP client (no manifest) may use `tool`: as [`policy_allows`], and
/// a built-in tool (`sandbox__exec`, `mock__*`) only when the policy names it: a pattern
/// naming its server (`sandbox__exec`, `sandbox__*`), not a wildcard such as `*` that
/// merely happens to match. Agents name built-ins in their manifest's `tools.use`;
/// without this, every invoker key could run code in the node's sandboxes.
pub fn mcp_caller_allowed(policy: &Policy, agent: &str, tool: &str) -> bool {
    let builtin = tool
        .split_once("__")
        .is_some_and(|(server, _)| BUILTIN_TOOL_SERVERS.contains(&server));
    if !builtin {
        return policy_allows(policy, agent, tool);
    }
    let server = tool.split_once("__").map_or("", |(s, _)| s);
    let prefix = format!("{server}__");
    [agent, "*"]
        .iter()
        .filter_map(|a| policy.tools.allow.get(*a))
        .flatten()
        .any(|p| p.starts_with(&prefix) && glob_match(p, tool))
}

/// Calls matching the manifest's or the policy's `tools.approval` wait for a human.
pub fn needs_approval(manifest: &Manifest, policy: &Policy, tool: &str) -> bool {
    manifest
        .tools
        .approval
        .iter()
        .chain(&policy.tools.approval)
        .any(|p| glob_match(p, tool))
}

/// The built-in `mock` tool server, present on every Berth like the `mock` model provider,
/// so that tool calls, approvals and their traces work offline (demo, tests, benchmarks).
/// `mock__echo` answers with its arguments; `mock__fail` always fails.
pub struct MockTools;

#[async_trait]
impl ToolHost for MockTools {
    async fn list(&self, _scope: &TenantScope) -> Vec<ToolDef> {
        let schema = json!({"type": "object", "additionalProperties": true});
        vec![
            ToolDef {
                name: "mock__echo".to_owned(),
                description: Some("Answers with the arguments it was given.".to_owned()),
                parameters: schema.clone(),
            },
            ToolDef {
                name: "mock__fail".to_owned(),
                description: Some("Always fails (for testing error paths).".to_owned()),
                parameters: schema,
            },
        ]
    }

    async fn call(
        &self,
        _ctx: &ToolCallCtx<'_>,
        name: &str,
        arguments: &str,
    ) -> Result<String, ToolError> {
        match name {
            "mock__echo" => {
                let args: Value = serde_json::from_str(arguments)
                    .map_err(|e| ToolError::Failed(format!("arguments are not JSON: {e}")))?;
                Ok(json!({"echo": args}).to_string())
            }
            "mock__fail" => Err(ToolError::Failed("mock__fail always fails".to_owned())),
            other => Err(ToolError::NotFound(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(uses: &[&str], approval: &[&str]) -> Manifest {
        let toml = format!(
            "name = \"bot\"\n[model]\nname = \"mock/echo\"\n[tools]\nuse = {uses:?}\napproval = {approval:?}\n"
        );
        Manifest::parse("agent.toml", &toml).unwrap()
    }

    #[test]
    fn deny_by_default_and_both_allow_lists() {
        let m = manifest(&["crm__*"], &[]);
        let open = Policy::default();
        assert!(tool_allowed(&m, &open, "crm__lookup"));
        assert!(!tool_allowed(&m, &open, "mail__send"), "not in tools.use");
        let mut p = Policy::default();
        p.tools.allow.insert("other".into(), vec!["*".into()]);
        assert!(
            !tool_allowed(&m, &p, "crm__lookup"),
            "policy allows another agent only"
        );
        p.tools.allow.insert("*".into(), vec!["crm__lookup".into()]);
        assert!(tool_allowed(&m, &p, "crm__lookup"));
        assert!(!tool_allowed(&m, &p, "crm__delete"));
    }

    #[test]
    fn approval_from_manifest_or_policy() {
        let m = manifest(&["*"], &["crm__refund"]);
        let mut p = Policy::default();
        assert!(needs_approval(&m, &p, "crm__refund"));
        assert!(!needs_approval(&m, &p, "mail__send_email"));
        p.tools.approval.push("*__send_email".into());
        assert!(needs_approval(&m, &p, "mail__send_email"));
    }
}
