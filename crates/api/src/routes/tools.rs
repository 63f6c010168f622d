//! MCP servers, the tenant's tools, and the tenant's own MCP endpoint `/mcp`.

use crate::auth::TenantAuth;
use crate::dto::{ListBody, McpServerDto, RegisterMcpServer, ToolDto};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::mcp;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use berth_platform::tools;

/// Register (or replace) an MCP server: its URL passes the egress guard, its headers are
/// filled from the tenant's secrets, and its tools are discovered before it is stored.
#[utoipa::path(post, path = "/v1/mcp-servers", tag = "tools", request_body = RegisterMcpServer,
    responses((status = 201, body = McpServerDto), (status = 422), (status = 502)))]
pub async fn register(
    auth: TenantAuth,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<RegisterMcpServer>,
) -> Result<(StatusCode, Json<McpServerDto>), ApiError> {
    let new = tools::NewServer {
        name: body.name,
        url: body.url,
        headers: body
            .headers
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    berth_tools::HeaderRef {
                        secret: v.secret,
                        prefix: v.prefix,
                    },
                )
            })
            .collect(),
    };
    let done = tools::register(&state, &auth, new).await?;
    Ok((
        StatusCode::CREATED,
        Json(McpServerDto::new(&done.record, Some(&done.tools))),
    ))
}

/// The tenant's MCP servers with their health.
#[utoipa::path(get, path = "/v1/mcp-servers", tag = "tools", responses((status = 200, body = ListBody<McpServerDto>)))]
pub async fn list(
    auth: TenantAuth,
    State(state): State<AppState>,
) -> Result<Json<ListBody<McpServerDto>>, ApiError> {
    let all = tools::servers(&state, &auth).await?;
    Ok(Json(ListBody {
        data: all.iter().map(|r| McpServerDto::new(r, None)).collect(),
        next_cursor: None,
    }))
}

/// Remove an MCP server (its tools disappear at once).
#[utoipa::path(delete, path = "/v1/mcp-servers/{name}", tag = "tools", params(("name" = String, Path)),
    responses((status = 204), (status = 404)))]
pub async fn delete(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    tools::remove(&state, &auth, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Connect again and list the server's tools again.
#[utoipa::path(post, path = "/v1/mcp-servers/{name}/refresh", tag = "tools", params(("name" = String, Path)),
    responses((status = 200, body = McpServerDto), (status = 404), (status = 502)))]
pub async fn refresh(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<McpServerDto>, ApiError> {
    let done = tools::refresh(&state, &auth, &name).await?;
    Ok(Json(McpServerDto::new(&done.record, Some(&done.tools))))
}

/// Every tool the caller may use (built-in and the tenant's MCP servers', as the policy
/// allows).
#[utoipa::path(get, path = "/v1/tools", tag = "tools", responses((status = 200, body = ListBody<ToolDto>)))]
pub async fn usable(
    auth: TenantAuth,
    State(state): State<AppState>,
) -> Result<Json<ListBody<ToolDto>>, ApiError> {
    let all = tools::usable(&state, &auth, false).await?;
    Ok(Json(ListBody {
        data: all.iter().map(ToolDto::from).collect(),
        next_cursor: None,
    }))
}

/// The tenant's MCP endpoint (Streamable HTTP, stateless, JSON answers): `tools/list` and
/// `tools/call` over the tenant's allowed tools, with the tenant key as bearer token.
/// Each request passes the tenant's (and key's) request limits first, like a gateway call.
#[utoipa::path(post, path = "/mcp", tag = "tools", responses((status = 200), (status = 401), (status = 403), (status = 429)))]
pub async fn endpoint(
    auth: TenantAuth,
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let admitted = tools::admit_mcp_request(&state, &auth).await?;
    let mut response = mcp::serve(state, auth, request).await;
    crate::error::insert_rate_headers(response.headers_mut(), &admitted.report());
    Ok(response)
}
