//! The OpenAI- and Anthropic-compatible LLM gateway endpoints.

use crate::auth::TenantAuth;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;
use crate::wire;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use berth_platform::llm::{self, ChatAnswer, Wire};
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
    chat(&state, &auth, &headers, &body, Wire::OpenAi).await
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
    chat(&state, &auth, &headers, &body, Wire::Anthropic).await
}

async fn chat(
    state: &AppState,
    auth: &TenantAuth,
    headers: &HeaderMap,
    body: &Value,
    wire: Wire,
) -> Result<Response, ApiError> {
    Ok(
        match llm::chat(state, auth, wire::attribution(headers), body, wire).await? {
            ChatAnswer::Whole(answer) => wire::whole(*answer, wire),
            ChatAnswer::Streamed(answer) => wire::streamed(*answer, wire),
        },
    )
}

/// OpenAI Embeddings.
#[utoipa::path(post, path = "/v1/embeddings", tag = "llm", request_body = Object, responses((status = 200), (status = 400), (status = 404)))]
pub async fn embeddings(
    auth: TenantAuth,
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let answer = llm::embeddings(&state, &auth, wire::attribution(&headers), &body).await?;
    Ok(wire::embedded(answer))
}

/// Models this tenant may use.
#[utoipa::path(get, path = "/v1/models", tag = "llm", responses((status = 200, body = Object)))]
pub async fn models(
    auth: TenantAuth,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(wire::models(&llm::models(&state, &auth).await?)))
}
