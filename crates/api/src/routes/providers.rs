//! The tenant's own LLM providers (bring your own key).

use crate::auth::TenantAuth;
use crate::dto::{ListBody, ProviderDto, PutProvider};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use berth_core::Role;
use berth_platform::providers;

/// Add or replace a provider; its key is read from the named secret at call time.
#[utoipa::path(put, path = "/v1/providers/{name}", tag = "providers", params(("name" = String, Path)), request_body = PutProvider,
    responses((status = 200, body = ProviderDto), (status = 422)))]
pub async fn put(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<PutProvider>,
) -> Result<Json<ProviderDto>, ApiError> {
    let scope = auth.require(Role::Admin)?;
    let req = providers::ProviderRequest {
        kind: body.kind,
        base_url: body.base_url,
        api_key_secret: body.api_key_secret,
    };
    Ok(Json(ProviderDto::from(
        &providers::put(&state, scope, &name, req).await?,
    )))
}

/// The tenant's providers.
#[utoipa::path(get, path = "/v1/providers", tag = "providers", responses((status = 200, body = ListBody<ProviderDto>)))]
pub async fn list(
    auth: TenantAuth,
    State(state): State<AppState>,
) -> Result<Json<ListBody<ProviderDto>>, ApiError> {
    let scope = auth.require(Role::Viewer)?;
    let all = providers::list(&state, scope).await?;
    Ok(Json(ListBody {
        data: all.iter().map(ProviderDto::from).collect(),
        next_cursor: None,
    }))
}

/// One provider.
#[utoipa::path(get, path = "/v1/providers/{name}", tag = "providers", params(("name" = String, Path)),
    responses((status = 200, body = ProviderDto), (status = 404)))]
pub async fn get(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ProviderDto>, ApiError> {
    let scope = auth.require(Role::Viewer)?;
    Ok(Json(ProviderDto::from(
        &providers::get(&state, scope, &name).await?,
    )))
}

/// Remove a provider.
#[utoipa::path(delete, path = "/v1/providers/{name}", tag = "providers", params(("name" = String, Path)),
    responses((status = 204), (status = 404)))]
pub async fn delete(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let scope = auth.require(Role::Admin)?;
    providers::delete(&state, scope, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
