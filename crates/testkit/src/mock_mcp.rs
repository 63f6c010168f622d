//! A mock MCP server (an upstream, for tests and benchmarks) built on rmcp's Streamable
//! HTTP server: `modern` speaks 2026-07-28 (stateless, `server/discover`), `legacy` only
//! the `initialize` lifecycle of 2025-11-25 with sessions (and pushes
//! `tools/list_changed`). It records the headers it receives, so tests can prove which
//! credentials reached it. Also: servers that hang, or answer garbage.

use axum::Router;
use axum::http::HeaderMap;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, DiscoverRequestMethod,
    DiscoverResult, Implementation, ListToolsResult, PaginatedRequestParams, ProtocolVersion,
    ServerCapabilities, ServerConfig, SubscriptionFilter, Tool, ToolAnnotations,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler};
use serde_json::{Value, json};
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revision {
    /// 2026-07-28: `server/discover`, no sessions.
    Modern,
    /// 2025-11-25 and older: `initialize`, sessions, server-pushed notifications.
    Legacy,
}

#[derive(Default)]
struct Shared {
    headers: Mutex<Vec<HeaderMap>>,
    calls: AtomicU64,
    /// Notifications sent by `slow` with `chatter`.
    notifications: AtomicU64,
    extra_tools: Mutex<Vec<String>>,
    peers: Mutex<Vec<Peer<RoleServer>>>,
    /// Wakes the 2026-07-28 `subscriptions/listen` streams when a tool is added.
    tools_changed: tokio::sync::Notify,
}

#[derive(Clone)]
struct Handler {
    revision: Revision,
    shared: Arc<Shared>,
}

fn object(v: Value) -> Arc<serde_json::Map<String, Value>> {
    match v {
        Value::Object(m) => Arc::new(m),
        _ => Arc::new(serde_json::Map::new()),
    }
}

fn tools(extra: &[String]) -> Vec<Tool> {
    let any = json!({"type": "object", "additionalProperties": true});
    let mut destroy = Tool::new(
        "destroy",
        "Deletes everything (annotated as destructive).",
        object(any.clone()),
    );
    let mut hints = ToolAnnotations::default();
    hints.destructive_hint = Some(true);
    destroy.annotations = Some(hints);
    let mut all = vec![
        Tool::new(
            "echo",
            "Answers with its arguments as JSON.",
            object(any.clone()),
        ),
        Tool::new(
            "add",
            "Adds two integers.",
            object(
                json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                          "required": ["a", "b"]}),
            ),
        ),
        Tool::new(
            "whoami",
            "Answers with the Authorization header it received.",
            object(any.clone()),
        ),
        Tool::new(
            "slow",
            "Sleeps `ms` milliseconds, then answers; with `chatter`, sends log notifications \
             of 1 KiB as fast as it can meanwhile (an upstream whose stream never ends).",
            object(any.clone()),
        ),
        Tool::new(
            "huge",
            "Answers with `bytes` bytes of text.",
            object(any.clone()),
        ),
        Tool::new(
            "fail",
            "Always answers with a tool error.",
            object(any.clone()),
        ),
        destroy,
        // Left out by Berth: its schema is not an object schema.
        Tool::new(
            "broken",
            "Has an unusable schema.",
            object(json!({"type": "string"})),
        ),
    ];
    for name in extra {
        all.push(Tool::new(name.clone(), "Added later.", object(any.clone())));
    }
    all
}

fn text(t: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(t.into())])
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("mock-mcp", "1.0.0"))
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        match self.revision {
            Revision::Modern => Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS),
            Revision::Legacy => {
                Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
            }
        }
    }

    async fn discover(
        &self,
        context: RequestContext<RoleServer>,
    ) -> Result<DiscoverResult, ErrorData> {
        match self.revision {
            // A server of an older revision does not know the method at all.
            Revision::Legacy => Err(ErrorData::method_not_found::<DiscoverRequestMethod>()),
            Revision::Modern => {
                self.record(&context);
                Ok(DiscoverResult::from_server_info(
                    self.supported_protocol_versions().into_owned(),
                    self.get_info(),
                ))
            }
        }
    }

    /// 2026-07-28 clients learn of changes through `subscriptions/listen`; only tool-list
    /// changes are offered.
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let mut accepted = SubscriptionFilter::default();
        accepted.tools_list_changed = requested.tools_list_changed;
        (self.revision == Revision::Modern).then_some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        loop {
            tokio::select! {
                _ = context.cancelled() => return Ok(()),
                _ = self.shared.tools_changed.notified() => {
                    if context.sink().notify_tool_list_changed().await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        if let Ok(mut peers) = self.shared.peers.lock() {
            peers.push(context.peer.clone());
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.record(&context);
        let extra = self
            .shared
            .extra_tools
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default();
        Ok(ListToolsResult::with_all_items(tools(&extra)))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let headers = self.record(&context);
        self.shared.calls.fetch_add(1, Ordering::Relaxed);
        let args = Value::Object(request.arguments.clone().unwrap_or_default());
        let num = |k: &str| args.get(k).and_then(Value::as_u64).unwrap_or(0);
        let result = match request.name.as_ref() {
            "echo" => text(args.to_string()),
            "add" => text((num("a") + num("b")).to_string()),
            "whoami" => text(
                headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("anonymous")
                    .to_owned(),
            ),
            "slow" if args.get("chatter").and_then(Value::as_bool) == Some(true) => {
                let until = tokio::time::Instant::now() + Duration::from_millis(num("ms"));
                let line = json!("y".repeat(1024));
                while tokio::time::Instant::now() < until {
                    // Any notification will do: a log message is the plainest (deprecated
                    // by the spec, still sent by servers in the wild).
                    #[allow(deprecated)]
                    let sent = context
                        .peer
                        .notify_logging_message(rmcp::model::LoggingMessageNotificationParam::new(
                            rmcp::model::LoggingLevel::Info,
                            line.clone(),
                        ))
                        .await;
                    self.shared.notifications.fetch_add(1, Ordering::Relaxed);
                    if sent.is_err() {
                        break;
                    }
                }
                text("done")
            }
            "slow" => {
                tokio::time::sleep(Duration::from_millis(num("ms"))).await;
                text("done")
            }
            "huge" => text("x".repeat(usize::try_from(num("bytes")).unwrap_or(0))),
            "fail" => CallToolResult::error(vec![ContentBlock::text("the mock tool failed")]),
            "destroy" => text("destroyed"),
            other
                if self
                    .shared
                    .extra_tools
                    .lock()
                    .is_ok_and(|e| e.iter().any(|n| n == other)) =>
            {
                text(format!("{other} called"))
            }
            other => return Err(ErrorData::invalid_params(format!("no tool {other}"), None)),
        };
        Ok(result.into())
    }
}

impl Handler {
    fn record(&self, context: &RequestContext<RoleServer>) -> HeaderMap {
        let headers = context
            .extensions
            .get::<axum::http::request::Parts>()
            .map(|p| p.headers.clone())
            .unwrap_or_default();
        if let Ok(mut seen) = self.shared.headers.lock() {
            seen.push(headers.clone());
        }
        headers
    }
}

pub struct MockMcp {
    /// The endpoint, `http://127.0.0.1:PORT/mcp`.
    pub url: String,
    shared: Arc<Shared>,
    _server: tokio::task::JoinHandle<()>,
}

/// The router of a mock MCP server (for the benchmark binary, which serves it itself).
pub fn router(revision: Revision) -> Router {
    router_with(revision, Arc::default())
}

fn router_with(revision: Revision, shared: Arc<Shared>) -> Router {
    let handler = Handler { revision, shared };
    let config = StreamableHttpServerConfig::default()
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .disable_allowed_hosts();
    match revision {
        Revision::Modern => {
            let service = StreamableHttpService::new(
                move || Ok(handler.clone()),
                Arc::new(NeverSessionManager::default()),
                config.with_legacy_session_mode(false),
            );
            Router::new().route_service("/mcp", service)
        }
        Revision::Legacy => {
            let service = StreamableHttpService::new(
                move || Ok(handler.clone()),
                Arc::new(LocalSessionManager::default()),
                config
                    .with_legacy_session_mode(true)
                    .with_json_response(false),
            );
            Router::new().route_service("/mcp", service)
        }
    }
}

impl MockMcp {
    pub async fn start(revision: Revision) -> MockMcp {
        let shared: Arc<Shared> = Arc::default();
        let app = router_with(revision, shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind mock MCP server: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("mock MCP address: {e}"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockMcp {
            url: format!("http://{addr}/mcp"),
            shared,
            _server: server,
        }
    }

    /// Every request's headers, in order.
    pub fn headers(&self) -> Vec<HeaderMap> {
        self.shared
            .headers
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default()
    }

    /// Tool calls received.
    pub fn calls(&self) -> u64 {
        self.shared.calls.load(Ordering::Relaxed)
    }

    /// Notifications sent by the `slow` tool's `chatter`.
    pub fn notifications(&self) -> u64 {
        self.shared.notifications.load(Ordering::Relaxed)
    }

    /// Adds a tool and tells every connected client its list changed: legacy sessions by
    /// a pushed notification, 2026-07-28 clients on their `subscriptions/listen` stream.
    pub async fn add_tool(&self, name: &str) {
        if let Ok(mut e) = self.shared.extra_tools.lock() {
            e.push(name.to_owned());
        }
        self.shared.tools_changed.notify_waiters();
        let peers = self
            .shared
            .peers
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default();
        for p in peers {
            let _ = p.notify_tool_list_changed().await;
        }
    }
}

impl Drop for MockMcp {
    fn drop(&mut self) {
        self._server.abort();
    }
}

/// A server that accepts connections and never answers.
pub async fn hanging() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (format!("http://{addr}/mcp"), task)
}

/// A server that answers every request with 200 and a body that is not JSON-RPC.
pub async fn garbage() -> (String, tokio::task::JoinHandle<()>) {
    let app = Router::new().route(
        "/mcp",
        axum::routing::any(|| async {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                "{\"this is\": not json at all",
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/mcp"), task)
}

/// An MCP client (rmcp, Streamable HTTP) for `url` with a bearer token: `legacy` uses the
/// `initialize` handshake of 2025-11-25, otherwise `server/discover` of 2026-07-28.
pub async fn client(
    url: &str,
    token: &str,
    legacy: bool,
) -> Result<
    rmcp::service::RunningService<rmcp::RoleClient, rmcp::model::ClientConfig>,
    rmcp::service::ClientInitializeError,
> {
    use rmcp::service::{ClientLifecycleMode, ClientServiceExt};
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let mut config =
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token.to_owned());
    config.allow_stateless = true;
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    let lifecycle = if legacy {
        ClientLifecycleMode::Initialize
    } else {
        ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        }
    };
    rmcp::model::ClientConfig::default()
        .with_protocol_version(ProtocolVersion::V_2025_11_25)
        .serve_with_lifecycle(transport, lifecycle)
        .await
}
