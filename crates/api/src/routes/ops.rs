//! Operational endpoints: liveness, readiness, Prometheus metrics.

use crate::auth::OperatorAuth;
use crate::dto::HealthDto;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, body = HealthDto)))]
pub async fn healthz() -> Json<HealthDto> {
    Json(HealthDto {
        status: "ok",
        store: None,
    })
}

/// The store answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()), responses((status = 200, body = HealthDto), (status = 503)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<HealthDto>, ApiError> {
    state.store.ping().await.map_err(|e| {
        ApiError::unavailable(
            "store_unreachable",
            format!("the {} store does not answer: {e}", state.store.backend()),
        )
    })?;
    Ok(Json(HealthDto {
        status: "ready",
        store: Some(state.store.backend()),
    }))
}

/// Prometheus text: requests by route, method, status and tenant. Operator token only,
/// because the labels list every tenant.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain"), (status = 401), (status = 403)))]
pub async fn metrics(_op: OperatorAuth, State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
