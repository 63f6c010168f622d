//! The tenant's audit log and its verification.

use crate::auth::TenantAuth;
use crate::dto::{AuditEntryDto, AuditVerifyDto, ListBody};
use crate::error::ApiError;
use crate::extract::Pagination;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use berth_core::Role;
use berth_platform::audit;

/// Audit entries in order; `cursor` is the last `seq` seen.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = ListBody<AuditEntryDto>)))]
pub async fn list(
    auth: TenantAuth,
    State(state): State<AppState>,
    Pagination(page): Pagination,
) -> Result<Json<ListBody<AuditEntryDto>>, ApiError> {
    let scope = auth.require(Role::Viewer)?;
    let page = audit::list(&state, scope, &page).await?;
    Ok(Json(ListBody {
        data: page.items.iter().map(AuditEntryDto::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Recomputes the hash chain; reports the first bad `seq` if any row was changed.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", responses((status = 200, body = AuditVerifyDto)))]
pub async fn verify(
    auth: TenantAuth,
    State(state): State<AppState>,
) -> Result<Json<AuditVerifyDto>, ApiError> {
    let scope = auth.require(Role::Viewer)?;
    let v = audit::verify(&state, scope).await?;
    Ok(Json(AuditVerifyDto {
        ok: v.ok,
        entries: v.entries,
        head: v.head,
        seq: v.first_bad_seq,
        reason: v.reason,
    }))
}
