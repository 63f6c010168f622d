//! Usage reports.

use crate::auth::{OperatorAuth, TenantAuth};
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

/// Usage of all tenants (operator token): the rows of `/v1/usage`, each with `tenant`.
#[utoipa::path(get, path = "/v1/admin/usage", tag = "operator", params(UsageParams), responses((status = 200, body = ListBody<UsageRowDto>)))]
pub async fn admin(
    _op: OperatorAuth,
    State(state): State<AppState>,
    params: Result<Query<UsageParams>, QueryRejection>,
) -> Result<Json<ListBody<UsageRowDto>>, ApiError> {
    let Query(p) = params.map_err(query_rejection)?;
    let q = usage::parse_query(p.from.as_deref(), p.to.as_deref(), p.group_by.as_deref())?;
    let rows = usage::query_all(&state, &q).await?;
    let data = rows
        .iter()
        .map(|(tenant, row)| {
            let mut dto = UsageRowDto::from(row);
            dto.dims.insert(
                "tenant".to_owned(),
                serde_json::Value::String(tenant.clone()),
            );
            dto
        })
        .collect();
    Ok(Json(ListBody {
        data,
        next_cursor: None,
    }))
}
