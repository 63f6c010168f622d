//! Tenant secrets: set (with where each may be injected) and delete by name; listing shows
//! names, bindings and times only.

use crate::auth::TenantAuth;
use crate::dto::{ListBody, PutSecret, SecretDto};
use crate::error::ApiError;
use crate::extract::{JsonBody, Pagination};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use berth_core::Role;
use berth_platform::secrets;

/// Set a secret (encrypted at rest under the tenant's data key) and where it may be
/// injected (`binding`); without `value`, an admin changes only the binding.
#[utoipa::path(put, path = "/v1/secrets/{name}", tag = "secrets", params(("name" = String, Path)), request_body = PutSecret,
    responses((status = 204), (status = 403), (status = 404), (status = 413), (status = 422)))]
pub async fn put(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<PutSecret>,
) -> Result<StatusCode, ApiError> {
    let scope = auth.require(Role::Developer)?;
    match body.value {
        Some(value) => {
            let binding = body.binding.flatten();
            secrets::put(&state, scope, &name, &value, binding.as_deref()).await?;
        }
        None => {
            let Some(binding) = body.binding else {
                return Err(ApiError::invalid(
                    "value_required",
                    "value",
                    "give the secret's value (or, as an admin, only its binding)",
                ));
            };
            let scope = auth.require(Role::Admin)?;
            secrets::set_binding(&state, scope, &name, binding.as_deref()).await?;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Secret names and timestamps; no endpoint ever returns a value.
#[utoipa::path(get, path = "/v1/secrets", tag = "secrets", params(("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = ListBody<SecretDto>)))]
pub async fn list(
    auth: TenantAuth,
    State(state): State<AppState>,
    Pagination(page): Pagination,
) -> Result<Json<ListBody<SecretDto>>, ApiError> {
    let scope = auth.require(Role::Viewer)?;
    let page = secrets::list(&state, scope, &page).await?;
    Ok(Json(ListBody {
        data: page.items.iter().map(SecretDto::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Delete a secret.
#[utoipa::path(delete, path = "/v1/secrets/{name}", tag = "secrets", params(("name" = String, Path)),
    responses((status = 204), (status = 404)))]
pub async fn delete(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let scope = auth.require(Role::Developer)?;
    secrets::delete(&state, scope, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
