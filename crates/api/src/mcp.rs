//! The tenant's MCP endpoint: rmcp's Streamable HTTP server (stateless, JSON answers, both
//! the `initialize` lifecycle of 2025-11-25 and the `server/discover` one of 2026-07-28) in
//! front of `berth_platform::tools`, so an external MCP client's calls take the same policy,
//! approval, data-loss and audit path as a run's.

use crate::auth::TenantAuth;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use berth_platform::TenantCaller;
use berth_platform::tools::{self, McpCallOutcome};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

/// Who is calling, put into the request by the route after authentication.
#[derive(Clone)]
struct Caller {
    state: AppState,
    caller: TenantCaller,
}

/// One per request (the transport is stateless); everything it knows comes from the
/// request's `Caller`.
struct Endpoint;

fn caller(context: &RequestContext<RoleServer>) -> Result<(AppState, TenantAuth), ErrorData> {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|p| p.extensions.get::<Caller>())
        .map(|c| (c.state.clone(), TenantAuth(c.caller.clone())))
        .ok_or_else(|| ErrorData::internal_error("the request carries no caller", None))
}

fn api_error(e: berth_platform::Error) -> ErrorData {
    ErrorData::invalid_request(format!("{}: {}", e.code, e.message), None)
}

impl ServerHandler for Endpoint {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("berth", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "The tools of this tenant, named server__tool. Calls follow the tenant's \
                 policy; a call that needs a human approval fails with its approval id.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let (state, auth) = caller(&context)?;
        let usable = tools::usable(&state, &auth, true)
            .await
            .map_err(api_error)?;
        let listed = usable
            .into_iter()
            .filter_map(|t| {
                let serde_json::Value::Object(schema) = t.input_schema else {
                    return None;
                };
                let mut tool =
                    Tool::new_with_raw(t.name, t.description.map(Into::into), Arc::new(schema));
                tool.annotations = t.annotations.and_then(|a| serde_json::from_value(a).ok());
                Some(tool)
            })
            .collect();
        Ok(ListToolsResult::with_all_items(listed))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let (state, auth) = caller(&context)?;
        let outcome = tools::mcp_call(&state, &auth, &request.name, request.arguments)
            .await
            .map_err(api_error)?;
        Ok(match outcome {
            McpCallOutcome::Result(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
            McpCallOutcome::ToolError(text) => {
                CallToolResult::error(vec![ContentBlock::text(text)])
            }
        }
        .into())
    }
}

type EndpointService = StreamableHttpService<Endpoint, NeverSessionManager>;

fn service() -> &'static EndpointService {
    static SERVICE: OnceLock<EndpointService> = OnceLock::new();
    SERVICE.get_or_init(|| {
        // Callers authenticate with a tenant key, which a browser page cannot send by
        // itself, so the loopback-only Host check rmcp applies by default is not needed.
        let config = StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .with_sse_keep_alive(None)
            .disable_allowed_hosts();
        StreamableHttpService::new(
            || Ok(Endpoint),
            Arc::new(NeverSessionManager::default()),
            config,
        )
    })
}

/// Serves one authenticated request.
pub async fn serve(state: AppState, auth: TenantAuth, mut request: Request) -> Response {
    request.extensions_mut().insert(Caller {
        state,
        caller: auth.0,
    });
    match service().clone().oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    }
}
