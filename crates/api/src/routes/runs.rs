//! Runs, their traces, and threads.

use crate::auth::TenantAuth;
use crate::dto::{ListBody, RunDto, RunListParams, StartRun, StepDto, ThreadDto};
use crate::error::ApiError;
use crate::extract::{JsonBody, query_rejection};
use crate::service::runs::{self, RunRequest};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use berth_store::{PageRequest, RunFilter};

/// Run an agent and wait for its answer (synchronous runs; `stream` and `async` are
/// refused for now).
#[utoipa::path(post, path = "/v1/agents/{name}/runs", tag = "runs", params(("name" = String, Path)), request_body = StartRun,
    responses((status = 200, body = RunDto), (status = 404)))]
pub async fn start(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<StartRun>,
) -> Result<Json<RunDto>, ApiError> {
    let req = RunRequest {
        input: body.input,
        thread: body.thread,
        version: body.version,
        stream: body.stream,
        asynchronous: body.asynchronous,
    };
    Ok(Json(RunDto::from(
        &runs::start(&state, &auth, &name, req).await?,
    )))
}

/// Runs, newest first; filters `agent`, `status`, `thread`, `since`.
#[utoipa::path(get, path = "/v1/runs", tag = "runs", params(RunListParams), responses((status = 200, body = ListBody<RunDto>)))]
pub async fn list(
    auth: TenantAuth,
    State(state): State<AppState>,
    params: Result<Query<RunListParams>, QueryRejection>,
) -> Result<Json<ListBody<RunDto>>, ApiError> {
    let Query(p) = params.map_err(query_rejection)?;
    let since_ms = match &p.since {
        None => None,
        Some(s) => Some(berth_core::clock::parse_rfc3339(s).ok_or_else(|| {
            ApiError::bad_request("invalid_time", "since must be RFC 3339").with_param("since")
        })?),
    };
    let limit = p.limit.unwrap_or(PageRequest::DEFAULT_LIMIT);
    if !(1..=PageRequest::MAX_LIMIT).contains(&limit) {
        return Err(
            ApiError::bad_request("invalid_limit", "limit must be between 1 and 500")
                .with_param("limit"),
        );
    }
    let filter = RunFilter {
        agent: p.agent,
        status: p.status,
        thread: p.thread,
        since_ms,
        key_id: None,
    };
    let page = runs::list(
        &state,
        &auth,
        filter,
        &PageRequest {
            limit,
            cursor: p.cursor,
        },
    )
    .await?;
    Ok(Json(ListBody {
        data: page.items.iter().map(RunDto::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One run.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", params(("id" = String, Path)), responses((status = 200, body = RunDto), (status = 404)))]
pub async fn get(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunDto>, ApiError> {
    Ok(Json(RunDto::from(&runs::get(&state, &auth, &id).await?)))
}

/// The run's steps in order: `llm_call`, `tool_call`, `error`.
#[utoipa::path(get, path = "/v1/runs/{id}/trace", tag = "runs", params(("id" = String, Path)), responses((status = 200, body = ListBody<StepDto>), (status = 404)))]
pub async fn trace(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ListBody<StepDto>>, ApiError> {
    let steps = runs::trace(&state, &auth, &id).await?;
    Ok(Json(ListBody {
        data: steps.iter().map(StepDto::from).collect(),
        next_cursor: None,
    }))
}

/// A thread and its messages.
#[utoipa::path(get, path = "/v1/threads/{id}", tag = "runs", params(("id" = String, Path)), responses((status = 200, body = ThreadDto), (status = 404)))]
pub async fn get_thread(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ThreadDto>, ApiError> {
    Ok(Json(ThreadDto::from(
        &runs::thread(&state, &auth, &id).await?,
    )))
}

/// Delete a thread and its messages.
#[utoipa::path(delete, path = "/v1/threads/{id}", tag = "runs", params(("id" = String, Path)), responses((status = 204), (status = 404)))]
pub async fn delete_thread(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    runs::delete_thread(&state, &auth, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
