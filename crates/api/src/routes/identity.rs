//! The caller's identity and the tenant's API keys.

use crate::auth::TenantAuth;
use crate::dto::{CreateKey, CreatedKeyDto, KeyDto, ListBody, MeDto, MeKey, MeTenant};
use crate::error::ApiError;
use crate::extract::{JsonBody, Pagination};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use berth_core::{Principal, Role};
use berth_platform::keys;

/// Who am I: the tenant and credential of this request.
#[utoipa::path(get, path = "/v1/me", tag = "identity", responses((status = 200, body = MeDto), (status = 401)))]
pub async fn me(auth: TenantAuth) -> Result<Json<MeDto>, ApiError> {
    auth.require_role(Role::Viewer)?;
    let caller = &auth.0;
    let key = match (caller.scope.principal(), &caller.key) {
        (_, Some(k)) => MeKey {
            id: Some(k.id.clone()),
            name: k.name.clone(),
            role: k.role.to_string(),
            agent: k.agent.clone(),
        },
        (Principal::Jwt { subject, role }, None) => MeKey {
            id: None,
            name: subject.clone(),
            role: role.to_string(),
            agent: None,
        },
        (p, None) => MeKey {
            id: None,
            name: p.actor(),
            role: p.role().to_string(),
            agent: None,
        },
    };
    Ok(Json(MeDto {
        tenant: MeTenant {
            id: caller.tenant.id.to_string(),
            name: caller.tenant.name.clone(),
            plan: caller.tenant.plan.clone(),
        },
        key,
    }))
}

/// Create an API key; the answer is the only time the key is shown.
#[utoipa::path(post, path = "/v1/keys", tag = "identity", request_body = CreateKey,
    responses((status = 201, body = CreatedKeyDto), (status = 403), (status = 422)))]
pub async fn create_key(
    auth: TenantAuth,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKeyDto>), ApiError> {
    let scope = auth.require(Role::Admin)?;
    let req = keys::KeyRequest {
        name: &body.name,
        role: &body.role,
        agent: body.agent.as_deref(),
        expires_at: body.expires_at.as_deref(),
    };
    let (key, token) = keys::create(&state, scope, req).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKeyDto {
            meta: KeyDto::from(&key),
            key: token,
        }),
    ))
}

/// List the tenant's keys (never their secrets).
#[utoipa::path(get, path = "/v1/keys", tag = "identity", params(("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = ListBody<KeyDto>)))]
pub async fn list_keys(
    auth: TenantAuth,
    State(state): State<AppState>,
    Pagination(page): Pagination,
) -> Result<Json<ListBody<KeyDto>>, ApiError> {
    let scope = auth.require(Role::Admin)?;
    let page = keys::list(&state, scope, &page).await?;
    Ok(Json(ListBody {
        data: page.items.iter().map(KeyDto::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Revoke a key; it stops working on the next request.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "identity", params(("id" = String, Path)),
    responses((status = 200, body = KeyDto), (status = 404)))]
pub async fn revoke_key(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<KeyDto>, ApiError> {
    let scope = auth.require(Role::Admin)?;
    Ok(Json(KeyDto::from(&keys::revoke(&state, scope, &id).await?)))
}
