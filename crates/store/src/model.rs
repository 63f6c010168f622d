//! Records the store reads and writes.

use berth_core::{Role, TenantId};

#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub plan: String,
    pub suspended: bool,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantPatch {
    pub name: Option<String>,
    pub plan: Option<String>,
    pub suspended: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub agent: Option<String>,
    /// The first characters of the token, shown so a person can tell keys apart.
    pub prefix: String,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub agent: Option<String>,
    pub prefix: String,
    /// Hex SHA-256 of the token; the token itself is never stored.
    pub hash: String,
    pub expires_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

/// What a token hash resolves to: the key and its tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyGrant {
    pub tenant: Tenant,
    pub key: ApiKey,
}

/// A per-tenant data key, wrapped (encrypted) under the master key.
#[derive(Debug, Clone, PartialEq)]
pub struct WrappedKey {
    pub nonce: Vec<u8>,
    pub wrapped: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SealedSecret {
    pub name: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    /// Where the value may be injected (JSON array of destinations); `None`: unbound.
    pub binding: Option<String>,
    /// The role of whoever wrote the value (`None` for values written before roles were
    /// kept, which count as an admin's).
    pub writer_role: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SecretMeta {
    pub name: String,
    pub binding: Option<String>,
    pub writer_role: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// `?limit=&cursor=` of a list endpoint; the cursor is the last item's sort key.
#[derive(Debug, Clone, PartialEq)]
pub struct PageRequest {
    pub limit: i64,
    pub cursor: Option<String>,
}

impl PageRequest {
    pub const DEFAULT_LIMIT: i64 = 50;
    pub const MAX_LIMIT: i64 = 500;

    pub fn first(limit: i64) -> Self {
        PageRequest {
            limit,
            cursor: None,
        }
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest::first(Self::DEFAULT_LIMIT)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows: the extra row only says there is more.
    pub(crate) fn from_rows(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> Self {
        let limit = usize::try_from(limit).unwrap_or(0);
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(key)
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredPolicy {
    pub revision: i64,
    /// The policy as JSON text, as validated when it was put.
    pub document: String,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TenantProvider {
    pub name: String,
    /// `openai`, `anthropic` or `openai-compatible`.
    pub kind: String,
    pub base_url: Option<String>,
    /// Name of the tenant secret holding the API key (never the key itself).
    pub api_key_secret: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// One billable event. `id` is its idempotency key.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct UsageEvent {
    pub id: String,
    pub at_ms: i64,
    /// `llm`, `embedding`, later `tool`, `run`, `compute`.
    pub kind: String,
    pub key_id: Option<String>,
    pub agent: Option<String>,
    /// Comma-separated `Berth-Tags`.
    pub tags: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_input_tokens: i64,
    pub cost_nano: i64,
    pub latency_ms: i64,
    /// `ok`, `error`, `client_disconnected`, `upstream_broken`.
    pub status: String,
    pub streamed: bool,
    /// Token counts were estimated because the upstream reported none.
    pub estimated: bool,
    /// The run this call was made for, and the agent version that ran.
    pub run_id: Option<String>,
    pub agent_version: Option<i64>,
}

/// A dimension usage can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageDim {
    Agent,
    Model,
    Provider,
    Key,
    Day,
}

impl UsageDim {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "agent" => Some(UsageDim::Agent),
            "model" => Some(UsageDim::Model),
            "provider" => Some(UsageDim::Provider),
            "key" => Some(UsageDim::Key),
            "day" => Some(UsageDim::Day),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            UsageDim::Agent => "agent",
            UsageDim::Model => "model",
            UsageDim::Provider => "provider",
            UsageDim::Key => "key",
            UsageDim::Day => "day",
        }
    }

    /// The SQL expression of this dimension (a fixed whitelist, never user text).
    pub(crate) fn column(self) -> &'static str {
        match self {
            UsageDim::Agent => "agent",
            UsageDim::Model => "model",
            UsageDim::Provider => "provider",
            UsageDim::Key => "key_id",
            UsageDim::Day => "CAST(at / 86400000 AS TEXT)",
        }
    }

    /// The same dimension in the one-minute rollups, where an absent value is `''`.
    pub(crate) fn rollup_column(self) -> &'static str {
        match self {
            UsageDim::Agent => "NULLIF(agent, '')",
            UsageDim::Model => "NULLIF(model, '')",
            UsageDim::Provider => "NULLIF(provider, '')",
            UsageDim::Key => "NULLIF(key_id, '')",
            UsageDim::Day => "CAST(minute / 86400000 AS TEXT)",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageQuery {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub group_by: Vec<UsageDim>,
}

/// One group of usage. For `day`, the value is the day number since the epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageRow {
    pub dims: Vec<(UsageDim, Option<String>)>,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub llm_calls: i64,
    pub tool_calls: i64,
    pub runs: i64,
    pub compute_ms: i64,
    pub cost_nano: i64,
}

/// One weighted share of an agent's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SplitEntry {
    pub version: i64,
    pub weight: u32,
}

/// A key pinned to one version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pin {
    pub key: String,
    pub version: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traffic {
    pub split: Vec<SplitEntry>,
    pub pins: Vec<Pin>,
    /// The version that held 100% before the current traffic: the default rollback target.
    pub previous_full: Option<i64>,
}

impl Traffic {
    /// The version holding all traffic, if one does.
    pub fn full_version(&self) -> Option<i64> {
        match self.split.as_slice() {
            [only] if only.weight == 100 => Some(only.version),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentSummary {
    pub name: String,
    pub description: String,
    pub latest_version: i64,
    pub traffic: Traffic,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentVersion {
    pub agent: String,
    pub version: i64,
    pub digest: String,
    /// The manifest as JSON text.
    pub manifest: String,
    pub created_at_ms: i64,
    pub created_by: String,
}

/// What a deploy writes.
#[derive(Debug, Clone)]
pub struct NewVersion<'a> {
    pub agent: &'a str,
    pub description: &'a str,
    pub digest: &'a str,
    pub manifest: &'a str,
    pub bundle: Option<&'a [u8]>,
    pub created_by: &'a str,
    /// Send 100% of traffic to the new version in the same transaction.
    pub promote: bool,
}

/// A run as stored. `error` and `usage` are JSON documents.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: String,
    pub agent: String,
    pub version: i64,
    pub thread_id: Option<String>,
    pub key_id: Option<String>,
    pub status: String,
    pub output: Option<String>,
    pub error: Option<String>,
    pub usage: String,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// What a queued run was asked (JSON), so a worker (on any node, after any restart)
    /// can execute it.
    pub request: Option<String>,
    /// Where a run paused for approval stands (JSON), so it resumes from there.
    pub checkpoint: Option<String>,
    /// A running run whose lease has passed belongs to a process that died.
    pub lease_until_ms: Option<i64>,
    /// The audit actor that started it (`key:key_…`, `jwt:<subject>`); `None` for runs
    /// stored before it was recorded, which are owned by their `key_id`.
    pub started_by: Option<String>,
}

/// Whether `actor` (an audit actor, `key:key_…` or `jwt:<subject>`) started what a run or
/// approval records: by `started_by`, or for older rows by their key id.
pub fn started_by_actor(started_by: Option<&str>, key_id: Option<&str>, actor: &str) -> bool {
    match (started_by, key_id) {
        (Some(s), _) => s == actor,
        (None, Some(k)) => actor.strip_prefix("key:") == Some(k),
        (None, None) => false,
    }
}

impl RunRecord {
    /// Whether `actor` started this run.
    pub fn started_by_actor(&self, actor: &str) -> bool {
        started_by_actor(self.started_by.as_deref(), self.key_id.as_deref(), actor)
    }

    /// Finished for good: nothing will change it again.
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

/// A tool call that waits for (or was given) a human decision.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRecord {
    pub id: String,
    /// The paused run; `None` for a call made through the tenant's `/mcp` endpoint, which the
    /// caller repeats once it is approved.
    pub run_id: Option<String>,
    pub agent: String,
    pub tool: String,
    /// The model's id of the call this approval gates.
    pub call_id: String,
    /// The call's arguments (JSON text), shown to the reviewer.
    pub arguments: String,
    /// The key that started the run (an invoker may decide its own runs' approvals).
    pub key_id: Option<String>,
    /// `pending`, `approved`, `denied`, `expired` or `cancelled`; `used` for an approved
    /// `/mcp` call that has been made.
    pub status: String,
    pub reason: Option<String>,
    pub decided_by: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub decided_at_ms: Option<i64>,
    /// The audit actor that started the run or made the `/mcp` call (see `RunRecord`).
    pub started_by: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApprovalFilter {
    pub status: Option<String>,
    pub agent: Option<String>,
    pub run_id: Option<String>,
}

/// One recorded step of a run (`llm_call`, `tool_call`, `log`, `error`).
#[derive(Debug, Clone, PartialEq)]
pub struct RunStep {
    pub seq: i64,
    pub kind: String,
    pub at_ms: i64,
    /// JSON.
    pub data: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ThreadRecord {
    pub id: String,
    pub agent: String,
    pub version: i64,
    pub created_at_ms: i64,
    /// Each message as JSON, in order.
    pub messages: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    pub agent: Option<String>,
    pub status: Option<String>,
    pub thread: Option<String>,
    pub since_ms: Option<i64>,
    /// Only runs started by this key (invokers read their own runs).
    pub key_id: Option<String>,
}

/// A budget a reservation is checked against: its counter key and, for a hard budget, the
/// most it may reach (`None`: soft, counted but never refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetLimit {
    /// `"<scope>|<period>"`.
    pub budget: String,
    pub limit_nano: Option<i64>,
}

/// Where a budget counter stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetState {
    pub spent_nano: i64,
    pub reserved_nano: i64,
}

/// A settled budget: the spend before and after, for alerts at fractions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub budget: String,
    pub spent_before_nano: i64,
    pub spent_after_nano: i64,
}

/// A tenant's MCP server as registered, with what its last discovery and health check found.
#[derive(Debug, Clone, PartialEq)]
pub struct McpServerRecord {
    pub name: String,
    pub url: String,
    /// Request headers from vault secrets (JSON object `{"Header": {"secret", "prefix"}}`):
    /// secret names only, never values.
    pub headers: String,
    /// The tools last discovered (JSON array of MCP tool objects, names as the server gave them).
    pub tools: String,
    /// `healthy`, `unreachable` or `unknown` (registered, not yet checked).
    pub status: String,
    pub protocol_version: Option<String>,
    pub last_error: Option<String>,
    pub checked_at_ms: Option<i64>,
    /// The role of whoever last registered the server (`None` before roles were kept,
    /// which counts as a developer's): what its headers' secrets are checked against.
    pub registered_role: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What one discovery or health check of an MCP server found.
#[derive(Debug, Clone, PartialEq)]
pub struct McpServerCheck {
    pub status: String,
    /// New tools (JSON array) when the check listed them; `None` keeps the stored ones.
    pub tools: Option<String>,
    pub protocol_version: Option<String>,
    pub last_error: Option<String>,
    pub checked_at_ms: i64,
}
