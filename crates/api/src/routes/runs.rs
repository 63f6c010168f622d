//! Runs, their traces, and threads.

use crate::auth::TenantAuth;
use crate::dto::{ListBody, RunDto, RunListParams, StartRun, StepDto, ThreadDto};
use crate::error::ApiError;
use crate::extract::{JsonBody, query_rejection};
use crate::sse;
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_platform::runs::{self, RunRequest, Started};
use berth_runtime::RunEvent;
use berth_store::{PageRequest, RunFilter};
use tokio::sync::mpsc;

/// Run an agent: synchronously (200 with the finished run; 202 when it waits for
/// approval), asynchronously (`async: true`: 202 with the queued run) or streamed
/// (`stream: true` or `Accept: text/event-stream`: SSE events until the run ends).
#[utoipa::path(post, path = "/v1/agents/{name}/runs", tag = "runs", params(("name" = String, Path)), request_body = StartRun,
    responses((status = 200, body = RunDto), (status = 202, body = RunDto, description = "queued, or waiting for approval"),
              (status = 404), (status = 409)))]
pub async fn start(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<StartRun>,
) -> Result<Response, ApiError> {
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let req = RunRequest {
        input: body.input,
        thread: body.thread,
        version: body.version,
        stream: body.stream || (wants_sse && !body.asynchronous),
        asynchronous: body.asynchronous,
        metadata: body.metadata,
    };
    let (started, admitted) = runs::start(&state, &auth, &name, req).await?;
    let mut resp = match started {
        Started::Done(run) => {
            let status = if run.status == "waiting_approval" {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            (status, Json(RunDto::from(&run))).into_response()
        }
        Started::Queued(run) => (StatusCode::ACCEPTED, Json(RunDto::from(&run))).into_response(),
        Started::Stream(run, _live) => events_response(&state, auth.0.scope.clone(), run.id),
    };
    crate::error::insert_rate_headers(resp.headers_mut(), &admitted.report());
    Ok(resp)
}

/// SSE of a run's events; ends after its terminal event.
fn events_response(state: &AppState, scope: berth_core::TenantScope, run_id: String) -> Response {
    let (tx, rx) = mpsc::channel::<RunEvent>(64);
    let s = state.clone();
    state
        .tasks
        .spawn(async move { runs::follow(s.platform, scope, run_id, tx).await });
    sse::response(rx)
}

/// Cancel a run that has not ended.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", params(("id" = String, Path)), responses((status = 200, body = RunDto), (status = 404)))]
pub async fn cancel(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunDto>, ApiError> {
    Ok(Json(RunDto::from(&runs::cancel(&state, &auth, &id).await?)))
}

/// The run's events as SSE: replayed from the start, then followed live until it ends.
#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, description = "text/event-stream"), (status = 404)))]
pub async fn events(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let run = runs::get(&state, &auth, &id).await?;
    Ok(events_response(&state, auth.0.scope.clone(), run.id))
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

/// The run's steps in order: `llm_call`, `tool_call`, `approval`, `log`, `error`.
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
