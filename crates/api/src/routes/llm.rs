//! The OpenAI- and Anthropic-compatible LLM gateway endpoints.

use crate::auth::TenantAuth;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::service::llm::{self, Wire};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::Value;

/// OpenAI Chat Completions (streaming with `stream: true`). Headers `Berth-Agent` and
/// `Berth-Tags` attribute and route the call.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "llm", request_body = Object,
    responses((status = 200, description = "chat.completion, or text/event-stream chunks"), (status = 400), (status = 404), (status = 429), (status = 502)))]
pub async fn chat_completions(
    auth: TenantAuth,
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    llm::chat(&state, &auth, &headers, &body, Wire::OpenAi).await
}

/// Anthropic Messages (streaming with `stream: true`).
#[utoipa::path(post, path = "/v1/messages", tag = "llm", request_body = Object,
    responses((status = 200, description = "message, or text/event-stream events"), (status = 400), (status = 404), (status = 429), (status = 502)))]
pub async fn messages(
    auth: TenantAuth,
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    llm::chat(&state, &auth, &headers, &body, Wire::Anthropic).await
}

/// OpenAI Embeddings.
#[utoipa::path(post, path = "/v1/embeddings", tag = "llm", request_body = Object, responses((status = 200), (status = 400), (status = 404)))]
pub async fn embeddings(
    auth: TenantAuth,
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    llm::embeddings(&state, &auth, &headers, &body).await
}

/// Models this tenant may use.
#[utoipa::path(get, path = "/v1/models", tag = "llm", responses((status = 200, body = Object)))]
pub async fn models(
    auth: TenantAuth,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(llm::models(&state, &auth).await?))
}
