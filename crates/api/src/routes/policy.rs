//! The tenant policy document.

use crate::auth::TenantAuth;
use crate::dto::PolicyDto;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use berth_core::Role;
use berth_core::clock::rfc3339;
use berth_platform::policy;

fn answer(dto: PolicyDto) -> impl IntoResponse {
    let etag = HeaderValue::from_str(&format!("\"{}\"", dto.revision)).ok();
    let mut resp = Json(dto).into_response();
    if let Some(v) = etag {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// The tenant's policy; revision 0 and an empty document when none was set.
#[utoipa::path(get, path = "/v1/policy", tag = "policy", responses((status = 200, body = PolicyDto)))]
pub async fn get(
    auth: TenantAuth,
    State(state): State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    let scope = auth.require(Role::Viewer)?;
    let dto = match policy::get(&state, scope).await? {
        Some(p) => PolicyDto {
            revision: p.revision,
            updated_at: Some(rfc3339(p.updated_at_ms)),
            policy: serde_json::from_str(&p.document).map_err(|e| ApiError::internal(&e))?,
        },
        None => PolicyDto {
            revision: 0,
            updated_at: None,
            policy: serde_json::json!({}),
        },
    };
    Ok(answer(dto))
}

/// Replace the policy (validated; unknown fields refused). `If-Match: <revision>` makes the
/// write fail with 409 if someone else changed it since.
#[utoipa::path(put, path = "/v1/policy", tag = "policy", request_body = Object,
    responses((status = 200, body = PolicyDto), (status = 409), (status = 422)))]
pub async fn put(
    auth: TenantAuth,
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(doc): JsonBody<serde_json::Value>,
) -> Result<impl IntoResponse, ApiError> {
    let scope = auth.require(Role::Admin)?;
    let expected = match headers.get(header::IF_MATCH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .map(|s| s.trim().trim_matches('"'))
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_if_match",
                        "If-Match must be a policy revision number",
                    )
                })?,
        ),
    };
    let stored = policy::put(&state, scope, doc, expected).await?;
    Ok(answer(PolicyDto {
        revision: stored.revision,
        updated_at: Some(rfc3339(stored.updated_at_ms)),
        policy: serde_json::from_str(&stored.document).map_err(|e| ApiError::internal(&e))?,
    }))
}
