//! Approvals of tool calls that wait for a human.

use crate::auth::TenantAuth;
use crate::dto::{ApprovalDto, ApprovalListParams, DecideApproval, ListBody};
use crate::error::ApiError;
use crate::extract::{JsonBody, query_rejection};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use berth_platform::approvals;
use berth_store::{ApprovalFilter, PageRequest};

/// Approvals, newest first; `?status=pending` for those waiting.
#[utoipa::path(get, path = "/v1/approvals", tag = "runs", params(ApprovalListParams), responses((status = 200, body = ListBody<ApprovalDto>)))]
pub async fn list(
    auth: TenantAuth,
    State(state): State<AppState>,
    params: Result<Query<ApprovalListParams>, QueryRejection>,
) -> Result<Json<ListBody<ApprovalDto>>, ApiError> {
    let Query(p) = params.map_err(query_rejection)?;
    let limit = p.limit.unwrap_or(PageRequest::DEFAULT_LIMIT);
    if !(1..=PageRequest::MAX_LIMIT).contains(&limit) {
        return Err(
            ApiError::bad_request("invalid_limit", "limit must be between 1 and 500")
                .with_param("limit"),
        );
    }
    let filter = ApprovalFilter {
        status: p.status,
        agent: p.agent,
        run_id: p.run,
    };
    let page = approvals::list(
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
        data: page.items.iter().map(ApprovalDto::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Approve or deny a pending tool call; the run resumes once all its calls are decided.
#[utoipa::path(post, path = "/v1/approvals/{id}", tag = "runs", params(("id" = String, Path)), request_body = DecideApproval,
    responses((status = 200, body = ApprovalDto), (status = 404), (status = 409)))]
pub async fn decide(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<DecideApproval>,
) -> Result<Json<ApprovalDto>, ApiError> {
    let a = approvals::decide(&state, &auth, &id, &body.decision, body.reason).await?;
    Ok(Json(ApprovalDto::from(&a)))
}
