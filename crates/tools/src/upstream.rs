//! One live connection to a tenant's MCP server over Streamable HTTP (rmcp): the lifecycle
//! of either revision (`server/discover` for 2026-07-28, falling back to `initialize` for
//! 2025-11-25), tool listing, tool calls with a deadline and a size cap, and the
//! `tools/list_changed` notifications it forwards to the registry.

use berth_core::TenantId;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, ContentBlock, Implementation,
    ProtocolVersion, SubscriptionFilter, Tool,
};
use rmcp::service::{
    ClientInitializeError, ClientLifecycleMode, ClientServiceExt, NotificationContext,
    RunningService,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;

/// A server's tool list changed: the registry lists its tools again.
#[derive(Debug, Clone, PartialEq)]
pub struct ListChanged {
    pub tenant: TenantId,
    pub server: String,
}

/// Limits applied to every upstream.
#[derive(Debug, Clone)]
pub struct UpstreamLimits {
    pub connect_timeout: Duration,
    pub call_timeout: Duration,
    /// Largest JSON answer accepted from a server, in bytes.
    pub max_response_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the server failed the request: {0}")]
    Protocol(String),
    #[error("the answer is larger than the limit of {0} bytes")]
    TooLarge(usize),
    /// The connection is gone; the next use opens a new one.
    #[error("the connection to the server closed")]
    Closed,
}

/// Passes on that a server's tool list changed. The queue is bounded: when it is full (a
/// server sending notifications without end), this one is dropped and counted; the
/// periodic health check lists every server again anyway.
fn notify(changed: &mpsc::Sender<ListChanged>, who: &ListChanged) {
    if changed.try_send(who.clone()).is_err() {
        metrics::counter!("berth_mcp_list_changed_dropped_total").increment(1);
    }
}

/// Receives the server's notifications on a legacy (session) connection.
struct Watcher {
    changed: mpsc::Sender<ListChanged>,
    who: ListChanged,
}

impl ClientHandler for Watcher {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        notify(&self.changed, &self.who);
    }

    fn get_info(&self) -> ClientConfig {
        // The revision of the `initialize` handshake (the newest one that has it).
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("berth", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }
}

pub struct Upstream {
    service: RunningService<RoleClient, Watcher>,
    pub protocol_version: String,
    pub offers_list_changed: bool,
    limits: UpstreamLimits,
    /// The subscription that carries `tools/list_changed` on a 2026-07-28 connection.
    listener: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(l) = self.listener.take() {
            l.abort();
        }
        self.service.cancellation_token().cancel();
    }
}

impl Upstream {
    /// Connects with the newest revision first and falls back to the `initialize`
    /// handshake of 2025-11-25 for servers that do not know `server/discover`. `http` is
    /// the egress-guarded client: every connection it opens resolves names to permitted
    /// addresses only. `headers` carry the tenant's credentials and reach only this server.
    pub async fn connect(
        http: reqwest::Client,
        url: &str,
        headers: HashMap<reqwest::header::HeaderName, reqwest::header::HeaderValue>,
        limits: &UpstreamLimits,
        who: ListChanged,
        changed: mpsc::Sender<ListChanged>,
    ) -> Result<Upstream, UpstreamError> {
        let mut config =
            StreamableHttpClientTransportConfig::with_uri(url.to_owned()).custom_headers(headers);
        config.max_json_response_size = limits.max_response_bytes;
        config.max_sse_event_size = limits.max_response_bytes;
        // A stateless 2025-11-25 server answers `initialize` without a session id.
        config.allow_stateless = true;
        let watcher = || Watcher {
            changed: changed.clone(),
            who: who.clone(),
        };
        let auto = ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            legacy_version: Some(ProtocolVersion::V_2025_11_25),
        };
        let deadline = tokio::time::Instant::now() + limits.connect_timeout;
        let attempt = |lifecycle: ClientLifecycleMode| {
            let transport =
                StreamableHttpClientTransport::with_client(http.clone(), config.clone());
            tokio::time::timeout_at(
                deadline,
                watcher().serve_with_lifecycle(transport, lifecycle),
            )
        };
        let timed_out = |_| UpstreamError::Timeout(limits.connect_timeout);
        let service = match attempt(auto).await.map_err(timed_out)? {
            Ok(s) => s,
            // A server that knows `server/discover` but none of its revisions negotiates
            // the older way, with the `initialize` handshake.
            Err(ClientInitializeError::NoCompatibleProtocolVersion { .. }) => {
                attempt(ClientLifecycleMode::Initialize)
                    .await
                    .map_err(timed_out)?
                    .map_err(|e| UpstreamError::Connect(e.to_string()))?
            }
            Err(e) => return Err(UpstreamError::Connect(e.to_string())),
        };
        let info = service.peer_info();
        let protocol_version = info
            .as_ref()
            .map(|i| i.protocol_version.to_string())
            .unwrap_or_default();
        let offers_list_changed = info
            .as_ref()
            .and_then(|i| i.capabilities.tools.as_ref())
            .and_then(|t| t.list_changed)
            .unwrap_or(false);
        let modern = info
            .as_ref()
            .is_some_and(|i| !i.protocol_version.has_initialize());
        let listener = (modern && offers_list_changed).then(|| {
            let peer = service.peer().clone();
            tokio::spawn(async move {
                let mut filter = SubscriptionFilter::default();
                filter.tools_list_changed = Some(true);
                let Ok(mut sub) = peer.listen(filter).await else {
                    return;
                };
                while let Ok(Some(_)) = sub.next().await {
                    if changed.is_closed() {
                        return;
                    }
                    notify(&changed, &who);
                }
            })
        });
        Ok(Upstream {
            service,
            protocol_version,
            offers_list_changed,
            limits: limits.clone(),
            listener,
        })
    }

    pub fn is_closed(&self) -> bool {
        self.service.is_transport_closed()
    }

    /// Every tool of the server (all pages).
    pub async fn list_tools(&self) -> Result<Vec<Tool>, UpstreamError> {
        let timeout = self.limits.call_timeout;
        tokio::time::timeout(timeout, self.service.peer().list_all_tools())
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))?
            .map_err(service_error)
    }

    /// Calls one tool. `Ok(Err(text))` is a result the server marked as an error.
    pub async fn call(
        &self,
        tool: &str,
        arguments: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Result<String, String>, UpstreamError> {
        let timeout = self.limits.call_timeout;
        let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        let result = tokio::time::timeout(timeout, self.service.peer().call_tool(params))
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))?
            .map_err(|e| match service_error(e) {
                UpstreamError::Protocol(m) if m.contains("exceeded the maximum size") => {
                    UpstreamError::TooLarge(self.limits.max_response_bytes)
                }
                other => other,
            })?;
        let text = result_text(&result.content, result.structured_content.as_ref());
        Ok(if result.is_error == Some(true) {
            Err(text)
        } else {
            Ok(text)
        })
    }
}

fn service_error(e: rmcp::ServiceError) -> UpstreamError {
    match e {
        rmcp::ServiceError::TransportClosed => UpstreamError::Closed,
        rmcp::ServiceError::Timeout { timeout } => UpstreamError::Timeout(timeout),
        rmcp::ServiceError::McpError(data) => UpstreamError::Protocol(data.message.into_owned()),
        other => UpstreamError::Protocol(other.to_string()),
    }
}

/// The text a model gets from a tool result: its text blocks in order; other blocks
/// (images, audio, resources) as their JSON; the structured content when there is no text.
fn result_text(content: &[ContentBlock], structured: Option<&serde_json::Value>) -> String {
    let mut parts = Vec::new();
    for block in content {
        match block.as_text() {
            Some(t) => parts.push(t.text.clone()),
            None => parts.push(serde_json::to_string(block).unwrap_or_default()),
        }
    }
    if parts.is_empty()
        && let Some(s) = structured
    {
        parts.push(s.to_string());
    }
    parts.join("\n")
}
