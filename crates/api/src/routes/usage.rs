//! Usage reports.

use crate::auth::TenantAuth;
use crate::dto::{ListBody, UsageParams, UsageRowDto};
use crate::error::ApiError;
use crate::extract::query_rejection;
use crate::service::usage;
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use berth_core::Role;

/// Usage grouped by `agent`, `model`, `provider`, `key`, `day`, over `[from, to)`.
#[utoipa::path(get, path = "/v1/usage", tag = "usage", params(UsageParams), responses((status = 200, body = ListBody<UsageRowDto>)))]
pub async fn get(
    auth: TenantAuth,
    State(state): State<AppState>,
    params: Result<Query<UsageParams>, QueryRejection>,
) -> Result<Json<ListBody<UsageRowDto>>, ApiError> {
    let scope = auth.require(Role::Viewer)?;
    let Query(p) = params.map_err(query_rejection)?;
    let q = usage::parse_query(p.from.as_deref(), p.to.as_deref(), p.group_by.as_deref())?;
    let rows = usage::query(&state, scope, &q).await?;
    Ok(Json(ListBody {
        data: rows.iter().map(UsageRowDto::from).collect(),
        next_cursor: None,
    }))
}
