//! Usage reports.

use crate::auth::{OperatorAuth, TenantAuth};
use crate::dto::{ListBody, UsageParams, UsageRowDto};
use crate::error::ApiError;
use crate::extract::query_rejection;
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use berth_core::Role;
use berth_platform::usage;

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

/// This month's cost so far, its projection to the month's end, and every budget's state.
#[utoipa::path(get, path = "/v1/usage/summary", tag = "usage", responses((status = 200, description = "period, cost_usd, projected_cost_usd, budgets")))]
pub async fn summary(
    auth: TenantAuth,
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let scope = auth.require(Role::Viewer)?;
    Ok(Json(
        berth_platform::billing::summary(&state, scope, &auth.0.tenant).await?,
    ))
}

/// The invoice of a month (`YYYY-MM`): lines by meter and model with unit prices, the
/// plan's markup and totals; `Accept: text/csv` gives CSV.
#[utoipa::path(get, path = "/v1/invoices/{month}", tag = "usage", params(("month" = String, Path)),
    responses((status = 200, description = "the invoice, as JSON or CSV"), (status = 400)))]
pub async fn invoice(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(month): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let scope = auth.require(Role::Viewer)?;
    let inv = berth_platform::billing::invoice(&state, scope, &auth.0.tenant, &month).await?;
    let csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"));
    if csv {
        let mut resp = berth_platform::billing::invoice_csv(&inv).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        return Ok(resp);
    }
    Ok(Json(inv).into_response())
}
