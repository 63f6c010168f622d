//! Wire shapes of the API (what clients send and receive), with their OpenAPI schemas.

use berth_core::clock::rfc3339;
use berth_store::{ApiKey, SecretMeta, Tenant};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A page of a list: `{"data": [...], "next_cursor": ...}`.
#[derive(Serialize, ToSchema)]
pub struct ListBody<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TenantDto {
    pub id: String,
    pub name: String,
    pub plan: String,
    pub suspended: bool,
    pub created_at: String,
}

impl From<&Tenant> for TenantDto {
    fn from(t: &Tenant) -> Self {
        TenantDto {
            id: t.id.to_string(),
            name: t.name.clone(),
            plan: t.plan.clone(),
            suspended: t.suspended,
            created_at: rfc3339(t.created_at_ms),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub name: String,
    pub plan: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTenant {
    pub name: Option<String>,
    pub plan: Option<String>,
    pub suspended: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    /// `admin`, `developer`, `invoker` or `viewer`.
    pub role: String,
    /// Restricts the key to invoking this one agent.
    pub agent: Option<String>,
    /// RFC 3339 time after which the key stops working.
    pub expires_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyDto {
    pub id: String,
    pub name: String,
    pub role: String,
    pub agent: Option<String>,
    /// The first characters of the key, to tell keys apart.
    pub prefix: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl From<&ApiKey> for KeyDto {
    fn from(k: &ApiKey) -> Self {
        KeyDto {
            id: k.id.clone(),
            name: k.name.clone(),
            role: k.role.to_string(),
            agent: k.agent.clone(),
            prefix: k.prefix.clone(),
            created_at: rfc3339(k.created_at_ms),
            expires_at: k.expires_at_ms.map(rfc3339),
            revoked_at: k.revoked_at_ms.map(rfc3339),
        }
    }
}

/// A newly created key: the only answer that ever contains the secret `key`.
#[derive(Serialize, ToSchema)]
pub struct CreatedKeyDto {
    #[serde(flatten)]
    pub meta: KeyDto,
    pub key: String,
}

#[derive(Serialize, ToSchema)]
pub struct MeTenant {
    pub id: String,
    pub name: String,
    pub plan: String,
}

#[derive(Serialize, ToSchema)]
pub struct MeKey {
    /// The key id; null for a JWT caller.
    pub id: Option<String>,
    pub name: String,
    pub role: String,
    pub agent: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MeDto {
    pub tenant: MeTenant,
    pub key: MeKey,
}

/// `value` writes the secret (and its `binding`: omitted or `null` is unbound); without
/// `value`, an admin changes only the `binding` of an existing secret.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSecret {
    pub value: Option<String>,
    /// Where the value may be injected: `provider:<name>`, `mcp:<name>`, or hosts
    /// (`api.example.com`, `*.example.com`). A name entry, and a secret with no binding,
    /// only reach destinations last written by a key of at least the writer's role.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    pub binding: Option<Option<Vec<String>>>,
}

/// `Some(x)` for a field that is present, `null` included (`Some(None)`).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[derive(Serialize, ToSchema)]
pub struct SecretDto {
    pub name: String,
    /// Where the value may be injected; `null`: unbound.
    pub binding: Option<Vec<String>>,
    /// The role of whoever wrote the value (`null` for values written before it was kept,
    /// which count as an admin's).
    pub written_by_role: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&SecretMeta> for SecretDto {
    fn from(m: &SecretMeta) -> Self {
        SecretDto {
            name: m.name.clone(),
            binding: m
                .binding
                .as_deref()
                .map(|b| serde_json::from_str(b).unwrap_or_default()),
            written_by_role: m.writer_role.clone(),
            created_at: rfc3339(m.created_at_ms),
            updated_at: rfc3339(m.updated_at_ms),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AuditEntryDto {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
    pub hash: String,
}

impl From<&berth_audit::Entry> for AuditEntryDto {
    fn from(e: &berth_audit::Entry) -> Self {
        AuditEntryDto {
            seq: e.seq,
            at: rfc3339(e.at_ms),
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            details: e.details.clone(),
            hash: e.hash.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AuditVerifyDto {
    pub ok: bool,
    pub entries: u64,
    pub head: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct HealthDto {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<&'static str>,
}

#[derive(Serialize, ToSchema)]
pub struct PolicyDto {
    /// Incremented by every write; send it back as `If-Match` to avoid lost updates.
    pub revision: i64,
    pub updated_at: Option<String>,
    /// The policy document (see API.md "Policy").
    #[schema(value_type = Object)]
    pub policy: serde_json::Value,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutProvider {
    /// `openai`, `anthropic` or `openai-compatible`.
    pub kind: String,
    pub base_url: Option<String>,
    /// Name of the tenant secret that holds the provider's API key.
    pub api_key_secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct ProviderDto {
    pub name: String,
    pub kind: String,
    pub base_url: Option<String>,
    pub api_key_secret: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&berth_store::TenantProvider> for ProviderDto {
    fn from(p: &berth_store::TenantProvider) -> Self {
        ProviderDto {
            name: p.name.clone(),
            kind: p.kind.clone(),
            base_url: p.base_url.clone(),
            api_key_secret: p.api_key_secret.clone(),
            created_at: rfc3339(p.created_at_ms),
            updated_at: rfc3339(p.updated_at_ms),
        }
    }
}

#[derive(Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// RFC 3339 time or `YYYY-MM-DD` (inclusive).
    pub from: Option<String>,
    /// RFC 3339 time or `YYYY-MM-DD` (exclusive).
    pub to: Option<String>,
    /// Comma-separated: `agent`, `model`, `provider`, `key`, `day`.
    pub group_by: Option<String>,
}

/// One usage row: the grouped dimensions plus the sums.
#[derive(Serialize, ToSchema)]
pub struct UsageRowDto {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub dims: serde_json::Map<String, serde_json::Value>,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub llm_calls: i64,
    pub tool_calls: i64,
    pub runs: i64,
    pub compute_ms: i64,
    pub cost_usd: f64,
}

impl From<&berth_store::UsageRow> for UsageRowDto {
    fn from(r: &berth_store::UsageRow) -> Self {
        let dims = r
            .dims
            .iter()
            .map(|(d, v)| {
                let value = match (d, v) {
                    // Days are stored as day numbers; show them as dates.
                    (berth_store::UsageDim::Day, Some(day)) => day
                        .parse::<i64>()
                        .map(|n| {
                            serde_json::Value::String(rfc3339(n * 86_400_000)[..10].to_owned())
                        })
                        .unwrap_or(serde_json::Value::Null),
                    (_, Some(v)) => serde_json::Value::String(v.clone()),
                    (_, None) => serde_json::Value::Null,
                };
                (d.name().to_owned(), value)
            })
            .collect();
        UsageRowDto {
            dims,
            requests: r.requests,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            llm_calls: r.llm_calls,
            tool_calls: r.tool_calls,
            runs: r.runs,
            compute_ms: r.compute_ms,
            cost_usd: berth_core::NanoUsd(r.cost_nano).as_usd(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeployedDto {
    pub agent: String,
    pub version: i64,
    pub digest: String,
    pub promoted: bool,
    pub created_at: String,
}

#[derive(Serialize, Deserialize, ToSchema, Clone)]
pub struct SplitDto {
    pub version: i64,
    pub weight: u32,
}

#[derive(Serialize, Deserialize, ToSchema, Clone)]
pub struct PinDto {
    pub key: String,
    pub version: i64,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficDto {
    pub split: Vec<SplitDto>,
    #[serde(default)]
    pub pins: Vec<PinDto>,
}

impl From<&berth_store::Traffic> for TrafficDto {
    fn from(t: &berth_store::Traffic) -> Self {
        TrafficDto {
            split: t
                .split
                .iter()
                .map(|s| SplitDto {
                    version: s.version,
                    weight: s.weight,
                })
                .collect(),
            pins: t
                .pins
                .iter()
                .map(|p| PinDto {
                    key: p.key.clone(),
                    version: p.version,
                })
                .collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AgentDto {
    pub name: String,
    pub description: String,
    pub latest_version: i64,
    pub traffic: Vec<SplitDto>,
    pub pins: Vec<PinDto>,
    pub created_at: String,
}

impl From<&berth_store::AgentSummary> for AgentDto {
    fn from(a: &berth_store::AgentSummary) -> Self {
        let t = TrafficDto::from(&a.traffic);
        AgentDto {
            name: a.name.clone(),
            description: a.description.clone(),
            latest_version: a.latest_version,
            traffic: t.split,
            pins: t.pins,
            created_at: rfc3339(a.created_at_ms),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct VersionDto {
    pub version: i64,
    pub digest: String,
    pub created_at: String,
    pub created_by: String,
    /// Present on `GET /v1/agents/{name}/versions/{v}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub manifest: Option<serde_json::Value>,
}

impl VersionDto {
    pub fn from_version(v: &berth_store::AgentVersion, with_manifest: bool) -> Self {
        VersionDto {
            version: v.version,
            digest: v.digest.clone(),
            created_at: rfc3339(v.created_at_ms),
            created_by: v.created_by.clone(),
            manifest: with_manifest
                .then(|| serde_json::from_str(&v.manifest).unwrap_or(serde_json::Value::Null)),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackDto {
    pub to: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// A string, or `[{"role": "user", "content": "..."}]`.
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
    /// `"new"`, or the id of a thread of this agent.
    pub thread: Option<String>,
    /// Run this version (role developer).
    pub version: Option<i64>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default, rename = "async")]
    pub asynchronous: bool,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct RunDto {
    pub id: String,
    pub agent: String,
    pub version: i64,
    pub thread: Option<String>,
    pub status: String,
    pub output: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub error: Option<serde_json::Value>,
    #[schema(value_type = Object)]
    pub usage: serde_json::Value,
    pub created_at: String,
    pub finished_at: Option<String>,
}

impl From<&berth_store::RunRecord> for RunDto {
    fn from(r: &berth_store::RunRecord) -> Self {
        // The same view the run's live events carry, so the two cannot drift apart.
        let v = berth_platform::view::RunView::from(r);
        RunDto {
            id: v.id,
            agent: v.agent,
            version: v.version,
            thread: v.thread,
            status: v.status,
            output: v.output,
            error: v.error,
            usage: v.usage,
            created_at: v.created_at,
            finished_at: v.finished_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct StepDto {
    pub seq: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub at: String,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub data: serde_json::Map<String, serde_json::Value>,
}

impl From<&berth_store::RunStep> for StepDto {
    fn from(s: &berth_store::RunStep) -> Self {
        StepDto {
            seq: s.seq,
            kind: s.kind.clone(),
            at: rfc3339(s.at_ms),
            data: serde_json::from_str(&s.data).unwrap_or_default(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ThreadDto {
    pub id: String,
    pub agent: String,
    pub version: i64,
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<serde_json::Value>,
    pub created_at: String,
}

impl From<&berth_store::ThreadRecord> for ThreadDto {
    fn from(t: &berth_store::ThreadRecord) -> Self {
        ThreadDto {
            id: t.id.clone(),
            agent: t.agent.clone(),
            version: t.version,
            messages: t
                .messages
                .iter()
                .filter_map(|m| thread_message(m))
                .collect(),
            created_at: rfc3339(t.created_at_ms),
        }
    }
}

/// A stored thread message as the API shows it: `role` and `content` (the text), plus the
/// `tool_calls` of an assistant turn and the `tool_results` of a tool turn.
fn thread_message(stored: &str) -> Option<serde_json::Value> {
    use serde_json::{Value, json};
    let v: Value = serde_json::from_str(stored).ok()?;
    let mut out = json!({"role": v["role"], "content": v["content"]});
    let parts = v["parts"].as_array().cloned().unwrap_or_default();
    let calls: Vec<Value> = parts
        .iter()
        .filter_map(|p| p.get("tool_call").cloned())
        .collect();
    if !calls.is_empty() {
        out["tool_calls"] = Value::Array(calls);
    }
    let results: Vec<Value> = parts
        .iter()
        .filter_map(|p| p.get("tool_result").cloned())
        .collect();
    if !results.is_empty() {
        out["tool_results"] = Value::Array(results);
    }
    Some(out)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunListParams {
    pub agent: Option<String>,
    pub status: Option<String>,
    pub thread: Option<String>,
    /// RFC 3339.
    pub since: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ApprovalDto {
    pub id: String,
    /// The paused run; `null` for a call made through `/mcp` (its caller repeats the call
    /// once it is approved).
    pub run: Option<String>,
    pub agent: String,
    pub tool: String,
    #[schema(value_type = Object)]
    pub arguments: serde_json::Value,
    /// `pending`, `approved`, `denied`, `expired`, `cancelled`, or `used` (an approved `/mcp`
    /// call that was made).
    pub status: String,
    pub reason: Option<String>,
    pub decided_by: Option<String>,
    pub created_at: String,
    pub expires_at: String,
    pub decided_at: Option<String>,
}

impl From<&berth_store::ApprovalRecord> for ApprovalDto {
    fn from(a: &berth_store::ApprovalRecord) -> Self {
        ApprovalDto {
            id: a.id.clone(),
            run: a.run_id.clone(),
            agent: a.agent.clone(),
            tool: a.tool.clone(),
            arguments: serde_json::from_str(&a.arguments)
                .unwrap_or_else(|_| serde_json::Value::String(a.arguments.clone())),
            status: a.status.clone(),
            reason: a.reason.clone(),
            decided_by: a.decided_by.clone(),
            created_at: rfc3339(a.created_at_ms),
            expires_at: rfc3339(a.expires_at_ms),
            decided_at: a.decided_at_ms.map(rfc3339),
        }
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ApprovalListParams {
    /// `pending`, `approved`, `denied`, `expired` or `cancelled`.
    pub status: Option<String>,
    pub agent: Option<String>,
    pub run: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideApproval {
    /// `approve` or `deny`.
    pub decision: String,
    pub reason: Option<String>,
}

/// A request header filled from a vault secret: the value sent is `prefix` + the secret.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderRefDto {
    pub secret: String,
    #[serde(default)]
    pub prefix: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterMcpServer {
    /// Lowercase letters, digits and `-`; tools are named `NAME__tool`.
    pub name: String,
    /// The server's Streamable HTTP endpoint; it must pass the egress guard.
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderRefDto>,
}

#[derive(Serialize, ToSchema)]
pub struct ToolDto {
    /// `server__tool`.
    pub name: String,
    pub server: String,
    pub description: Option<String>,
    #[schema(value_type = Object)]
    pub input_schema: serde_json::Value,
    /// The server's hints (`destructiveHint`, `readOnlyHint`, …), shown as given; Berth
    /// never uses them for policy.
    #[schema(value_type = Option<Object>)]
    pub annotations: Option<serde_json::Value>,
}

impl From<&berth_tools::ToolEntry> for ToolDto {
    fn from(t: &berth_tools::ToolEntry) -> Self {
        ToolDto {
            name: t.name.clone(),
            server: t.server.clone(),
            description: t.description.clone(),
            input_schema: t.input_schema.clone(),
            annotations: t.annotations.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct McpServerDto {
    pub name: String,
    pub url: String,
    /// Header names and the secrets they are filled from (never the values).
    pub headers: BTreeMap<String, HeaderRefDto>,
    /// `healthy` or `unreachable` (as of `checked_at`).
    pub status: String,
    pub tool_count: usize,
    pub checked_at: Option<String>,
    /// The MCP revision the server speaks (`2025-11-25`, `2026-07-28`, …).
    pub protocol_version: Option<String>,
    /// Why the last check failed, or which tools were left out.
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The server's tools (on register and refresh).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ToolDto>>,
}

impl McpServerDto {
    pub fn new(r: &berth_store::McpServerRecord, tools: Option<&[berth_tools::ToolEntry]>) -> Self {
        let headers: BTreeMap<String, berth_tools::HeaderRef> =
            serde_json::from_str(&r.headers).unwrap_or_default();
        let tool_count = serde_json::from_str::<Vec<serde_json::Value>>(&r.tools)
            .map(|t| t.len())
            .unwrap_or(0);
        McpServerDto {
            name: r.name.clone(),
            url: r.url.clone(),
            headers: headers
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        HeaderRefDto {
                            secret: v.secret,
                            prefix: v.prefix,
                        },
                    )
                })
                .collect(),
            status: r.status.clone(),
            tool_count,
            checked_at: r.checked_at_ms.map(rfc3339),
            protocol_version: r.protocol_version.clone(),
            last_error: r.last_error.clone(),
            created_at: rfc3339(r.created_at_ms),
            updated_at: rfc3339(r.updated_at_ms),
            tools: tools.map(|t| t.iter().map(ToolDto::from).collect()),
        }
    }
}
