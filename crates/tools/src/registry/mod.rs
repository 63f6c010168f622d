//! Each tenant's MCP servers: registration (egress check, credentials from the vault,
//! discovery), the tool catalogue the agent loop and `/mcp` see (names `server__tool`),
//! the pooled connections calls go through, and the background health checks.

use crate::upstream::{ListChanged, Upstream, UpstreamError, UpstreamLimits};
use async_trait::async_trait;
use berth_audit::NewEntry;
use berth_core::Role;
use berth_core::binding::{Destination, DestinationKind};
use berth_core::cache::TtlCache;
use berth_core::clock::now_ms;
use berth_core::{TenantId, TenantScope};
use berth_egress::{EgressError, EgressGuard};
use berth_llm::ToolDef;
use berth_runtime::tools::{ToolCallCtx, ToolError, ToolHost};
use berth_store::{McpServerCheck, McpServerRecord, PageRequest, Store, StoreError};
use berth_vault::{SecretValue, Vault, VaultError};
use reqwest::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod catalog;
use catalog::{catalogue, entries_of, skipped_note, tools_json};
pub use catalog::{split_name, valid_server_name};

/// Tool hosts built into every Berth; a tenant's server may not take their names.
const RESERVED_SERVERS: &[&str] = berth_runtime::tools::BUILTIN_TOOL_SERVERS;
/// Request headers a tenant may not set: the transport's own, and hop-by-hop ones.
const FORBIDDEN_HEADERS: &[&str] = &[
    "accept",
    "connection",
    "content-length",
    "content-type",
    "host",
    "last-event-id",
    "transfer-encoding",
    "upgrade",
];
/// How long a node trusts its copy of a tenant's catalogue before reading the store again
/// (another node may have registered or removed a server meanwhile).
const CATALOG_TTL: Duration = Duration::from_secs(2);

/// A request header whose value comes from a vault secret: `prefix` + the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRef {
    pub secret: String,
    #[serde(default)]
    pub prefix: String,
}

/// One tool as the tenant sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolEntry {
    /// `server__tool`.
    pub name: String,
    pub server: String,
    /// The tool's name on its server.
    pub tool: String,
    pub description: Option<String>,
    pub input_schema: Value,
    /// The server's hints (`destructiveHint` and the like): shown, never used for policy.
    pub annotations: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub limits: UpstreamLimits,
    pub health_interval: Duration,
    pub max_tools_per_server: usize,
    /// Largest tool result handed to the model, in bytes.
    pub max_result_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(&'static str, String),
    #[error("the URL is not allowed: {0}")]
    Egress(#[from] EgressError),
    #[error("the secret '{0}' does not exist")]
    MissingSecret(String),
    #[error("the MCP server '{0}' is not registered")]
    NotFound(String),
    #[error("the MCP server '{server}' could not be reached: {reason}")]
    Unreachable { server: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// A server of the catalogue, with its tools.
#[derive(Debug, Clone)]
struct ServerEntry {
    record: McpServerRecord,
    headers: BTreeMap<String, HeaderRef>,
    tools: Vec<ToolEntry>,
}

struct Catalog {
    servers: Vec<ServerEntry>,
}

/// A pooled connection, with the credential values it sends (scrubbed from anything the
/// server answers, so a server that echoes them cannot leak them to the model).
struct Conn {
    upstream: Upstream,
    updated_at_ms: i64,
    secrets: Vec<String>,
    /// The names of the secrets it sends: a deleted or rewritten secret closes it.
    secret_names: Vec<String>,
}

impl Conn {
    fn scrub(&self, text: &str) -> String {
        scrub(text, &self.secrets)
    }
}

fn unreachable(server: &str, e: &UpstreamError, secrets: &[String]) -> RegistryError {
    RegistryError::Unreachable {
        server: server.to_owned(),
        reason: scrub(&e.to_string(), secrets),
    }
}

fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), "[REDACTED]");
    }
    out
}

type ConnKey = (TenantId, String);

/// The log writer, told every credential value the registry sends so that it masks it
/// too (a server's error text, logged by the MCP client, may echo it), and told when a
/// secret or a tenant goes, so that it keeps nothing of them.
pub trait LogMask: Send + Sync {
    fn mask(&self, tenant: &TenantId, secret: &str, value: &str);
    /// Forgets the tenant's `secret`, or all of its secrets (`None`).
    fn forget(&self, tenant: &TenantId, secret: Option<&str>);
}

pub struct McpRegistry {
    log_mask: Option<Arc<dyn LogMask>>,
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
    egress: EgressGuard,
    http: reqwest::Client,
    config: RegistryConfig,
    catalogs: TtlCache<TenantId, Arc<Catalog>>,
    conns: Mutex<HashMap<ConnKey, Arc<Conn>>>,
    /// One connect at a time per server, so a burst of calls opens one connection.
    connecting: Mutex<HashMap<ConnKey, Arc<tokio::sync::Mutex<()>>>>,
    changed_tx: mpsc::Sender<ListChanged>,
    changed_rx: Mutex<Option<mpsc::Receiver<ListChanged>>>,
}

/// What registration found.
#[derive(Debug, Clone)]
pub struct Registered {
    pub record: McpServerRecord,
    pub tools: Vec<ToolEntry>,
}

/// Tool-list change notifications waiting to be handled, for all tenants together.
const LIST_CHANGED_QUEUE: usize = 1024;

impl McpRegistry {
    pub fn new(
        store: Arc<dyn Store>,
        vault: Arc<Vault>,
        egress: EgressGuard,
        config: RegistryConfig,
        log_mask: Option<Arc<dyn LogMask>>,
    ) -> Arc<McpRegistry> {
        // Bounded: a server that sends notifications without end fills it, and the
        // notifications beyond are dropped (see `upstream::notify`).
        let (changed_tx, changed_rx) = mpsc::channel(LIST_CHANGED_QUEUE);
        Arc::new(McpRegistry {
            log_mask,
            http: egress.client_without_timeout(),
            store,
            vault,
            egress,
            config,
            catalogs: TtlCache::new(CATALOG_TTL),
            conns: Mutex::new(HashMap::new()),
            connecting: Mutex::new(HashMap::new()),
            changed_tx,
            changed_rx: Mutex::new(Some(changed_rx)),
        })
    }

    /// Registers (or replaces) a server: checks its URL and headers, connects with the
    /// tenant's credentials and lists its tools. Nothing is stored if that fails.
    pub async fn register(
        &self,
        scope: &TenantScope,
        name: &str,
        url: &str,
        headers: BTreeMap<String, HeaderRef>,
        actor: &str,
    ) -> Result<Registered, RegistryError> {
        if !valid_server_name(name) {
            return Err(RegistryError::Invalid(
                "name",
                "name is 1 to 32 lowercase letters, digits or '-', starting with a letter or digit"
                    .into(),
            ));
        }
        if RESERVED_SERVERS.contains(&name) {
            return Err(RegistryError::Invalid(
                "name",
                format!("'{name}' is the name of a built-in tool server"),
            ));
        }
        self.egress.check_url(url)?;
        for (h, r) in &headers {
            let lower = h.to_ascii_lowercase();
            if HeaderName::from_bytes(h.as_bytes()).is_err()
                || FORBIDDEN_HEADERS.contains(&lower.as_str())
                || lower.starts_with("mcp-")
            {
                return Err(RegistryError::Invalid(
                    "headers",
                    format!("'{h}' cannot be set as a header of an MCP server"),
                ));
            }
            if r.secret.is_empty() {
                return Err(RegistryError::Invalid(
                    "headers",
                    format!("header '{h}' names no secret"),
                ));
            }
        }
        let key: ConnKey = (scope.tenant().clone(), name.to_owned());
        let now = now_ms();
        // The registrar's role is what the headers' secrets are checked against, now and
        // on every later connection (health checks included).
        let role = scope.principal().role();
        let conn = self.connect(scope, &key, url, &headers, role, now).await?;
        let listed = conn
            .upstream
            .list_tools()
            .await
            .map_err(|e| unreachable(name, &e, &conn.secrets))?;
        let (tools, skipped) = catalogue(name, &listed, self.config.max_tools_per_server);
        let protocol_version = conn.upstream.protocol_version.clone();
        let created_at_ms = self
            .store
            .get_mcp_server(scope, name)
            .await?
            .map_or(now, |r| r.created_at_ms);
        let record = McpServerRecord {
            name: name.to_owned(),
            url: url.to_owned(),
            headers: serde_json::to_string(&headers).unwrap_or_else(|_| "{}".into()),
            tools: tools_json(&listed, &tools),
            status: "healthy".into(),
            protocol_version: Some(protocol_version.clone()),
            last_error: skipped_note(&skipped),
            checked_at_ms: Some(now),
            registered_role: Some(role.as_str().to_owned()),
            created_at_ms,
            updated_at_ms: now,
        };
        let header_names: Vec<&String> = headers.keys().collect();
        let entry = NewEntry::new(
            actor,
            "mcp_server.register",
            name,
            serde_json::json!({"url": url, "headers": header_names, "tools": tools.len(),
                               "protocol_version": protocol_version}),
        );
        self.store.put_mcp_server(scope, &record, &entry).await?;
        self.remember(key, conn);
        self.forget_catalog(scope.tenant());
        Ok(Registered { record, tools })
    }

    /// Lists a server's tools again (and reconnects); records the check.
    pub async fn refresh(
        &self,
        scope: &TenantScope,
        name: &str,
    ) -> Result<Registered, RegistryError> {
        let record = self
            .store
            .get_mcp_server(scope, name)
            .await?
            .ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
        let key: ConnKey = (scope.tenant().clone(), name.to_owned());
        self.drop_conn(&key);
        let check = self.check(scope, &record).await;
        self.store.record_mcp_check(scope, name, &check).await?;
        self.forget_catalog(scope.tenant());
        let record = self
            .store
            .get_mcp_server(scope, name)
            .await?
            .ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
        if check.status != "healthy" {
            return Err(RegistryError::Unreachable {
                server: name.to_owned(),
                reason: check.last_error.unwrap_or_default(),
            });
        }
        let tools = entries_of(&record);
        Ok(Registered { record, tools })
    }

    pub async fn remove(
        &self,
        scope: &TenantScope,
        name: &str,
        actor: &str,
    ) -> Result<bool, RegistryError> {
        let entry = NewEntry::new(actor, "mcp_server.delete", name, serde_json::json!({}));
        let removed = self.store.delete_mcp_server(scope, name, &entry).await?;
        self.drop_conn(&(scope.tenant().clone(), name.to_owned()));
        self.forget_catalog(scope.tenant());
        Ok(removed)
    }

    pub async fn servers(
        &self,
        scope: &TenantScope,
    ) -> Result<Vec<McpServerRecord>, RegistryError> {
        Ok(self.store.list_mcp_servers(scope).await?)
    }

    /// Every tool of the tenant's servers.
    pub async fn tools(&self, scope: &TenantScope) -> Result<Vec<ToolEntry>, RegistryError> {
        let catalog = self.catalog(scope).await?;
        Ok(catalog
            .servers
            .iter()
            .flat_map(|s| s.tools.iter().cloned())
            .collect())
    }

    /// Forgets everything held for a deleted tenant.
    pub fn forget_tenant(&self, tenant: &TenantId) {
        self.forget_catalog(tenant);
        if let Ok(mut conns) = self.conns.lock() {
            conns.retain(|(t, _), _| t != tenant);
        }
        if let Some(mask) = &self.log_mask {
            mask.forget(tenant, None);
        }
    }

    /// Forgets a secret of the tenant that was deleted or written again: the connections
    /// that send it close (the next call opens one with the new value, or fails), and the
    /// log writer drops what it kept of it.
    pub fn forget_secret(&self, tenant: &TenantId, secret: &str) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.retain(|(t, _), c| t != tenant || !c.secret_names.iter().any(|n| n == secret));
        }
        if let Some(mask) = &self.log_mask {
            mask.forget(tenant, Some(secret));
        }
    }

    async fn catalog(&self, scope: &TenantScope) -> Result<Arc<Catalog>, RegistryError> {
        self.catalogs
            .get_or_load(scope.tenant(), || async {
                let servers = self
                    .store
                    .list_mcp_servers(scope)
                    .await?
                    .into_iter()
                    .map(|record| ServerEntry {
                        headers: serde_json::from_str(&record.headers).unwrap_or_default(),
                        tools: entries_of(&record),
                        record,
                    })
                    .collect();
                Ok(Arc::new(Catalog { servers }))
            })
            .await
    }

    fn forget_catalog(&self, tenant: &TenantId) {
        self.catalogs.evict(tenant);
    }

    /// The header values for a connection to server `dest`, and the values to scrub from
    /// answers. Each secret is opened only if its binding names the server.
    async fn header_values(
        &self,
        scope: &TenantScope,
        headers: &BTreeMap<String, HeaderRef>,
        dest: &Destination,
    ) -> Result<(HashMap<HeaderName, HeaderValue>, Vec<String>), RegistryError> {
        let mut values = HashMap::new();
        let mut secrets = Vec::new();
        for (h, r) in headers {
            let secret: SecretValue = self
                .vault
                .reveal_for(scope, &r.secret, dest)
                .await?
                .ok_or_else(|| RegistryError::MissingSecret(r.secret.clone()))?;
            let name = HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                RegistryError::Invalid("headers", format!("'{h}' is not a header name"))
            })?;
            let mut value = HeaderValue::from_str(&format!("{}{}", r.prefix, secret.expose()))
                .map_err(|_| {
                    RegistryError::Invalid(
                        "headers",
                        format!("secret '{}' cannot be sent in a header", r.secret),
                    )
                })?;
            value.set_sensitive(true);
            values.insert(name, value);
            if let Some(mask) = &self.log_mask {
                mask.mask(scope.tenant(), &r.secret, secret.expose());
            }
            secrets.push(secret.expose().to_owned());
        }
        Ok((values, secrets))
    }

    /// Opens a connection with the tenant's credentials (not yet pooled).
    async fn connect(
        &self,
        scope: &TenantScope,
        key: &ConnKey,
        url: &str,
        headers: &BTreeMap<String, HeaderRef>,
        registered_by: Role,
        updated_at_ms: i64,
    ) -> Result<Conn, RegistryError> {
        let dest = Destination {
            kind: DestinationKind::Mcp,
            name: key.1.clone(),
            host: reqwest::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
                .unwrap_or_default(),
            written_by: registered_by,
        };
        let (values, secrets) = self.header_values(scope, headers, &dest).await?;
        let who = ListChanged {
            tenant: key.0.clone(),
            server: key.1.clone(),
        };
        let upstream = Upstream::connect(
            self.http.clone(),
            url,
            values,
            &self.config.limits,
            who,
            self.changed_tx.clone(),
        )
        .await
        .map_err(|e| unreachable(&key.1, &e, &secrets))?;
        Ok(Conn {
            upstream,
            updated_at_ms,
            secrets,
            secret_names: headers.values().map(|r| r.secret.clone()).collect(),
        })
    }

    fn remember(&self, key: ConnKey, conn: Conn) -> Arc<Conn> {
        let conn = Arc::new(conn);
        if let Ok(mut conns) = self.conns.lock() {
            conns.insert(key, conn.clone());
        }
        conn
    }

    fn drop_conn(&self, key: &ConnKey) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.remove(key);
        }
    }

    fn cached_conn(&self, key: &ConnKey, updated_at_ms: i64) -> Option<Arc<Conn>> {
        let conns = self.conns.lock().ok()?;
        conns
            .get(key)
            .filter(|c| c.updated_at_ms == updated_at_ms && !c.upstream.is_closed())
            .cloned()
    }

    /// The pooled connection to a server, opened if there is none (or it closed, or the
    /// server was registered again since).
    async fn conn(
        &self,
        scope: &TenantScope,
        server: &ServerEntry,
    ) -> Result<Arc<Conn>, RegistryError> {
        let key: ConnKey = (scope.tenant().clone(), server.record.name.clone());
        let updated = server.record.updated_at_ms;
        if let Some(c) = self.cached_conn(&key, updated) {
            return Ok(c);
        }
        let gate = self
            .connecting
            .lock()
            .map(|mut m| m.entry(key.clone()).or_default().clone())
            .unwrap_or_default();
        let _one = gate.lock().await;
        if let Some(c) = self.cached_conn(&key, updated) {
            return Ok(c);
        }
        // A server registered before roles were kept counts as a developer's (fail closed).
        let registered_by = server
            .record
            .registered_role
            .as_deref()
            .and_then(|r| r.parse::<Role>().ok())
            .unwrap_or(Role::Developer);
        let conn = self
            .connect(
                scope,
                &key,
                &server.record.url,
                &server.headers,
                registered_by,
                updated,
            )
            .await?;
        Ok(self.remember(key, conn))
    }

    /// Calls `server__tool` with JSON-object arguments for the tenant.
    pub async fn call(
        &self,
        scope: &TenantScope,
        name: &str,
        arguments: &str,
    ) -> Result<String, ToolError> {
        let Some((server_name, tool)) = split_name(name) else {
            return Err(ToolError::NotFound(name.to_owned()));
        };
        let catalog = self
            .catalog(scope)
            .await
            .map_err(|e| ToolError::Failed(format!("the tool registry is unavailable: {e}")))?;
        let Some(server) = catalog
            .servers
            .iter()
            .find(|s| s.record.name == server_name)
        else {
            return Err(ToolError::NotFound(name.to_owned()));
        };
        if !server.tools.iter().any(|t| t.tool == tool) {
            return Err(ToolError::NotFound(name.to_owned()));
        }
        let args = match serde_json::from_str::<Value>(if arguments.trim().is_empty() {
            "{}"
        } else {
            arguments
        }) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                return Err(ToolError::Failed(
                    "the arguments must be a JSON object".into(),
                ));
            }
            Err(e) => {
                return Err(ToolError::Failed(format!(
                    "the arguments are not JSON: {e}"
                )));
            }
        };
        let conn = self
            .conn(scope, server)
            .await
            .map_err(|e| ToolError::Failed(e.to_string()))?;
        let answer = conn.upstream.call(tool, args).await;
        let text = match answer {
            Ok(Ok(text)) => text,
            Ok(Err(text)) => return Err(ToolError::Failed(conn.scrub(&text))),
            Err(e) => {
                if matches!(e, UpstreamError::Closed) {
                    self.drop_conn(&(scope.tenant().clone(), server_name.to_owned()));
                }
                return Err(ToolError::Failed(format!(
                    "the MCP server '{server_name}' failed: {}",
                    conn.scrub(&e.to_string())
                )));
            }
        };
        if text.len() > self.config.max_result_bytes {
            return Err(ToolError::Failed(format!(
                "the result of '{name}' is {} bytes, more than the limit of {} bytes",
                text.len(),
                self.config.max_result_bytes
            )));
        }
        Ok(conn.scrub(&text))
    }

    /// Connects to a server and lists its tools: what a health check or refresh records.
    async fn check(&self, scope: &TenantScope, record: &McpServerRecord) -> McpServerCheck {
        let entry = ServerEntry {
            headers: serde_json::from_str(&record.headers).unwrap_or_default(),
            tools: Vec::new(),
            record: record.clone(),
        };
        let checked_at_ms = now_ms();
        let failed = |reason: String| McpServerCheck {
            status: "unreachable".into(),
            tools: None,
            protocol_version: None,
            last_error: Some(reason),
            checked_at_ms,
        };
        let conn = match self.conn(scope, &entry).await {
            Ok(c) => c,
            Err(e) => return failed(e.to_string()),
        };
        match conn.upstream.list_tools().await {
            Ok(listed) => {
                let (tools, skipped) =
                    catalogue(&record.name, &listed, self.config.max_tools_per_server);
                McpServerCheck {
                    status: "healthy".into(),
                    tools: Some(tools_json(&listed, &tools)),
                    protocol_version: Some(conn.upstream.protocol_version.clone()),
                    last_error: skipped_note(&skipped),
                    checked_at_ms,
                }
            }
            Err(e) => {
                self.drop_conn(&(scope.tenant().clone(), record.name.clone()));
                failed(conn.scrub(&e.to_string()))
            }
        }
    }

    /// Checks every server of every tenant each `health_interval`, and lists a server's
    /// tools again as soon as it says they changed. Runs until `stop`.
    pub async fn run_health_checks(self: Arc<Self>, stop: CancellationToken) {
        let mut changed = match self.changed_rx.lock().ok().and_then(|mut r| r.take()) {
            Some(rx) => rx,
            None => return,
        };
        let mut tick = tokio::time::interval(self.config.health_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = self.clone().check_all().await {
                        tracing::warn!(error = %e, "MCP health checks failed");
                    }
                }
                Some(c) = changed.recv() => {
                    let scope = TenantScope::for_system(c.tenant.clone());
                    if let Ok(Some(record)) = self.store.get_mcp_server(&scope, &c.server).await {
                        let check = self.check(&scope, &record).await;
                        let _ = self.store.record_mcp_check(&scope, &c.server, &check).await;
                        self.forget_catalog(&c.tenant);
                        tracing::info!(tenant = %c.tenant, server = %c.server, "MCP tool list changed; listed again");
                    }
                }
            }
        }
    }

    /// Checks every server, `CONCURRENT_CHECKS` at a time (an unreachable server costs up
    /// to `connect_timeout`, which must not hold up everyone else's checks).
    async fn check_all(self: Arc<Self>) -> Result<(), RegistryError> {
        const CONCURRENT_CHECKS: usize = 16;
        let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_CHECKS));
        let mut checks = tokio::task::JoinSet::new();
        let mut cursor = None;
        loop {
            let page = self
                .store
                .list_tenants(&PageRequest {
                    limit: PageRequest::MAX_LIMIT,
                    cursor: cursor.clone(),
                })
                .await?;
            for tenant in &page.items {
                let scope = TenantScope::for_system(tenant.id.clone());
                // One tenant's store error skips that tenant's checks, not everyone's.
                let records = match self.store.list_mcp_servers(&scope).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(tenant = %tenant.id, error = %e, "could not list a tenant's MCP servers for health checks");
                        continue;
                    }
                };
                for record in records {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        break;
                    };
                    let this = self.clone();
                    let scope = scope.clone();
                    checks.spawn(async move {
                        let _slot = slot;
                        let check = this.check(&scope, &record).await;
                        if check.status != record.status {
                            tracing::info!(tenant = %scope.tenant(), server = %record.name, status = %check.status, "MCP server status changed");
                        }
                        if let Err(e) = this.store.record_mcp_check(&scope, &record.name, &check).await {
                            tracing::warn!(error = %e, server = %record.name, "could not record an MCP health check");
                        }
                        this.forget_catalog(scope.tenant());
                    });
                }
            }
            cursor = page.next_cursor;
            if cursor.is_none() {
                while checks.join_next().await.is_some() {}
                return Ok(());
            }
        }
    }
}

/// The registry as a tool host of the agent loop.
#[async_trait]
impl ToolHost for McpRegistry {
    async fn list(&self, scope: &TenantScope) -> Vec<ToolDef> {
        match self.tools(scope).await {
            Ok(tools) => tools
                .into_iter()
                .map(|t| ToolDef {
                    name: t.name,
                    description: t.description,
                    parameters: t.input_schema,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "MCP tools unavailable");
                Vec::new()
            }
        }
    }

    async fn call(
        &self,
        ctx: &ToolCallCtx<'_>,
        name: &str,
        arguments: &str,
    ) -> Result<String, ToolError> {
        McpRegistry::call(self, ctx.scope, name, arguments).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_server_name("crm"));
        assert!(valid_server_name("my-crm2"));
        assert!(!valid_server_name("My"));
        assert!(!valid_server_name("a__b"));
        assert!(!valid_server_name("-x"));
        assert!(!valid_server_name(""));
        assert_eq!(split_name("crm__lookup"), Some(("crm", "lookup")));
        assert_eq!(split_name("crm__send__now"), Some(("crm", "send__now")));
        assert_eq!(split_name("crm"), None);
        assert_eq!(split_name("__x"), None);
    }

    #[test]
    fn scrubs_every_secret() {
        let s = vec!["tok-123".to_owned(), String::new()];
        assert_eq!(
            scrub("Bearer tok-123 and tok-123", &s),
            "Bearer [REDACTED] and [REDACTED]"
        );
    }

    #[test]
    fn unusable_tools_are_left_out() {
        let tools: Vec<rmcp::model::Tool> = serde_json::from_value(serde_json::json!([
            {"name": "ok", "inputSchema": {"type": "object"}, "annotations": {"destructiveHint": true}},
            {"name": "bad name!", "inputSchema": {"type": "object"}},
            {"name": "notobject", "inputSchema": {"type": "string"}},
        ]))
        .unwrap();
        let (kept, skipped) = catalogue("crm", &tools, 10);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].name, "crm__ok");
        assert_eq!(
            kept[0].annotations.as_ref().unwrap()["destructiveHint"],
            true
        );
        assert_eq!(
            skipped,
            vec!["bad name!".to_owned(), "notobject".to_owned()]
        );
    }
}
