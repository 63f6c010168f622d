//! Operator endpoints: the tenant registry and keys minted for a tenant.

use crate::auth::OperatorAuth;
use crate::dto::{
    CreateKey, CreateTenant, CreatedKeyDto, KeyDto, ListBody, PatchTenant, TenantDto,
};
use crate::error::ApiError;
use crate::extract::{JsonBody, Pagination};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use berth_core::TenantScope;
use berth_platform::{keys, tenants};
use berth_store::TenantPatch;

/// Create a tenant.
#[utoipa::path(post, path = "/v1/tenants", tag = "operator", request_body = CreateTenant,
    responses((status = 201, body = TenantDto), (status = 409), (status = 422)))]
pub async fn create(
    _op: OperatorAuth,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateTenant>,
) -> Result<(StatusCode, Json<TenantDto>), ApiError> {
    let tenant = tenants::create(&state, &body.name, body.plan.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(TenantDto::from(&tenant))))
}

/// List tenants.
#[utoipa::path(get, path = "/v1/tenants", tag = "operator", params(("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = ListBody<TenantDto>)))]
pub async fn list(
    _op: OperatorAuth,
    State(state): State<AppState>,
    Pagination(page): Pagination,
) -> Result<Json<ListBody<TenantDto>>, ApiError> {
    let page = tenants::list(&state, &page).await?;
    Ok(Json(ListBody {
        data: page.items.iter().map(TenantDto::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One tenant.
#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "operator", params(("id" = String, Path)),
    responses((status = 200, body = TenantDto), (status = 404)))]
pub async fn get(
    _op: OperatorAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TenantDto>, ApiError> {
    let tenant = tenants::get(&state, &tenants::parse_id(&id)?).await?;
    Ok(Json(TenantDto::from(&tenant)))
}

/// Rename, re-plan, suspend or resume a tenant.
#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "operator", params(("id" = String, Path)), request_body = PatchTenant,
    responses((status = 200, body = TenantDto), (status = 404)))]
pub async fn patch(
    _op: OperatorAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PatchTenant>,
) -> Result<Json<TenantDto>, ApiError> {
    let id = tenants::parse_id(&id)?;
    let patch = TenantPatch {
        name: body.name,
        plan: body.plan,
        suspended: body.suspended,
    };
    Ok(Json(TenantDto::from(
        &tenants::update(&state, &id, patch).await?,
    )))
}

/// Delete a tenant and all of its data.
#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "operator", params(("id" = String, Path)),
    responses((status = 204), (status = 404)))]
pub async fn delete(
    _op: OperatorAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    tenants::delete(&state, &tenants::parse_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Mint a key for a tenant (how a new tenant gets its first admin key).
#[utoipa::path(post, path = "/v1/tenants/{id}/keys", tag = "operator", params(("id" = String, Path)), request_body = CreateKey,
    responses((status = 201, body = CreatedKeyDto), (status = 404)))]
pub async fn create_key(
    _op: OperatorAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKeyDto>), ApiError> {
    let tenant = tenants::get(&state, &tenants::parse_id(&id)?).await?;
    let scope = TenantScope::for_operator(tenant.id);
    let req = keys::KeyRequest {
        name: &body.name,
        role: &body.role,
        agent: body.agent.as_deref(),
        expires_at: body.expires_at.as_deref(),
    };
    let (key, token) = keys::create(&state, &scope, req).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKeyDto {
            meta: KeyDto::from(&key),
            key: token,
        }),
    ))
}
