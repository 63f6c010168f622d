//! The LLM gateway endpoints' logic: parse the client's wire format, route under the
//! tenant's policy, call through the gateway (which meters), render back in the client's
//! format, streamed or not.

use crate::auth::TenantAuth;
use crate::error::ApiError;
use crate::service::policy;
use crate::state::AppState;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_core::{AgentName, NanoUsd, Role};
use berth_gateway::{CallMeta, StreamAnswer};
use berth_llm::{LlmError, StreamEvent, anthropic, openai};
use futures_util::StreamExt;
use serde_json::{Value, json};

/// Which wire the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    Anthropic,
}

fn llm_error(e: LlmError) -> ApiError {
    match e {
        LlmError::Field { field, message } => {
            ApiError::bad_request("invalid_request", format!("{field}: {message}"))
                .with_param(field)
        }
        other => ApiError::bad_request("invalid_request", other.to_string()),
    }
}

/// Attribution from the caller and the `Berth-Agent` / `Berth-Tags` headers. A key
/// restricted to one agent is attributed to it and may not claim another.
pub fn call_meta(auth: &TenantAuth, headers: &HeaderMap) -> Result<CallMeta, ApiError> {
    let header_text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let mut agent = match header_text("berth-agent") {
        None => None,
        Some(a) => Some(
            AgentName::parse(a)
                .map_err(|e| ApiError::bad_request("invalid_agent", format!("Berth-Agent: {e}")))?
                .as_str()
                .to_owned(),
        ),
    };
    if let Some(only) = auth.0.scope.principal().agent_restriction() {
        if agent.as_deref().is_some_and(|a| a != only) {
            return Err(ApiError::forbidden(
                "agent_restricted_key",
                format!("this key is restricted to agent '{only}'"),
            ));
        }
        agent = Some(only.to_owned());
    }
    let tags: Vec<String> = header_text("berth-tags")
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if tags.len() > 32 || tags.iter().any(|t| t.len() > 64) {
        return Err(ApiError::bad_request(
            "invalid_tags",
            "Berth-Tags: at most 32 tags of at most 64 characters",
        ));
    }
    Ok(CallMeta {
        key_id: auth.0.key.as_ref().map(|k| k.id.clone()),
        agent,
        tags,
        ..CallMeta::default()
    })
}

fn cost_header(cost: NanoUsd) -> HeaderValue {
    HeaderValue::from_str(&format!("{:.9}", cost.as_usd())).unwrap_or(HeaderValue::from_static("0"))
}

fn provider_header(provider: &str) -> HeaderValue {
    HeaderValue::from_str(provider).unwrap_or(HeaderValue::from_static("unknown"))
}

/// Counts this call against the tenant's requests per minute (its policy's limit, capped
/// by its plan's). Returns the headers to send, or the 429 to answer.
async fn admit(
    state: &AppState,
    auth: &TenantAuth,
    policy: &berth_core::Policy,
) -> Result<Vec<(&'static str, String)>, ApiError> {
    let tenant = &auth.0.tenant;
    // Config validation guarantees the default plan exists; a tenant whose plan was since
    // removed from the config is held to the default plan's limits.
    let Some(plan) = state
        .settings
        .plans
        .get(&tenant.plan)
        .or_else(|| state.settings.plans.get(&state.settings.default_plan))
    else {
        return Ok(Vec::new());
    };
    let limit = policy
        .effective_limits(plan)
        .requests_per_minute
        .unwrap_or(plan.requests_per_minute);
    let d = state
        .limiter
        .check(
            &format!("rpm:{}", tenant.id),
            u64::from(limit),
            std::time::Duration::from_secs(60),
            1,
        )
        .await;
    let headers = vec![
        ("x-ratelimit-limit-requests", d.limit.to_string()),
        ("x-ratelimit-remaining-requests", d.remaining.to_string()),
        (
            "x-ratelimit-reset-requests",
            format!("{:.3}s", d.reset.as_secs_f64()),
        ),
    ];
    if d.allowed {
        return Ok(headers);
    }
    let mut err = ApiError::rate_limited(format!(
        "this tenant may make {} requests per minute; retry in {:.1}s",
        d.limit,
        d.retry_after.as_secs_f64()
    ));
    err.retry_after_secs = Some(d.retry_after.as_secs_f64().ceil().max(1.0) as u64);
    err.headers = Some(Box::new(headers));
    Err(err)
}

fn add_headers(resp: &mut Response, headers: Vec<(&'static str, String)>) {
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
}

fn now_secs() -> i64 {
    berth_core::clock::now_ms() / 1000
}

/// `POST /v1/chat/completions` and `POST /v1/messages`.
pub async fn chat(
    state: &AppState,
    auth: &TenantAuth,
    headers: &HeaderMap,
    body: &Value,
    wire: Wire,
) -> Result<Response, ApiError> {
    let scope = auth.require_role(Role::Invoker)?;
    let meta = call_meta(auth, headers)?;
    let req = match wire {
        Wire::OpenAi => openai::parse_request(body),
        Wire::Anthropic => anthropic::parse_request(body),
    }
    .map_err(llm_error)?;
    let policy = policy::effective(state, scope).await?;
    let route = berth_gateway::plan(&policy, &req.model, &meta.tags)
        .map_err(berth_gateway::GatewayError::from)?;
    let limits = admit(state, auth, &policy).await?;
    if req.stream {
        let answer = state
            .gateway
            .chat_stream(scope, &meta, &req, &route)
            .await?;
        let input_estimate = berth_llm::tokens::estimate_request(&req);
        let mut resp = stream_response(answer, wire, req.include_usage, input_estimate);
        add_headers(&mut resp, limits);
        return Ok(resp);
    }
    let answer = state.gateway.chat(scope, &meta, &req, &route).await?;
    let mut response = answer.response;
    response.model = answer.model.clone();
    let body = match wire {
        Wire::OpenAi => openai::render_response(&response, now_secs()),
        Wire::Anthropic => anthropic::render_response(&response),
    };
    let mut resp = axum::Json(body).into_response();
    let h = resp.headers_mut();
    h.insert("x-berth-provider", provider_header(&answer.provider));
    h.insert("x-berth-cost-usd", cost_header(answer.cost));
    add_headers(&mut resp, limits);
    Ok(resp)
}

/// The SSE answer. The gateway's stream meters itself; this only re-encodes events for the
/// client's wire and reports an upstream failure in-band (headers are already sent).
fn stream_response(
    answer: StreamAnswer,
    wire: Wire,
    include_usage: bool,
    input_estimate: u64,
) -> Response {
    let StreamAnswer {
        provider,
        model,
        stream,
    } = answer;
    let id = format!(
        "chatcmpl-{}",
        berth_core::Id::new(berth_core::IdKind::Request)
            .as_str()
            .trim_start_matches("req_")
    );
    enum Enc {
        OpenAi(openai::StreamEncoder),
        Anthropic(anthropic::StreamEncoder),
    }
    let encoder = match wire {
        Wire::OpenAi => Enc::OpenAi(openai::StreamEncoder::new(
            id.clone(),
            model.clone(),
            now_secs(),
            include_usage,
        )),
        Wire::Anthropic => Enc::Anthropic(anthropic::StreamEncoder::new(
            id.replace("chatcmpl-", "msg_"),
            model.clone(),
            input_estimate,
        )),
    };
    let body = futures_util::stream::unfold(
        (stream, encoder, false),
        move |(mut stream, mut enc, done)| async move {
            if done {
                return None;
            }
            let frames: Vec<String> = match stream.next().await {
                Some(Ok(event)) => match &mut enc {
                    Enc::OpenAi(e) => e.encode(&event),
                    Enc::Anthropic(e) => e.encode(&event),
                },
                Some(Err(err)) => {
                    let frame = match &enc {
                        Enc::OpenAi(_) => format!(
                            "data: {}\n\n",
                            json!({"error": {"type": "upstream", "code": err.code(), "message": err.to_string()}})
                        ),
                        Enc::Anthropic(_) => format!(
                            "event: error\ndata: {}\n\n",
                            json!({"type": "error", "error": {"type": "api_error", "message": err.to_string()}})
                        ),
                    };
                    return Some((
                        Ok::<_, std::io::Error>(bytes::Bytes::from(frame)),
                        (stream, enc, true),
                    ));
                }
                None => {
                    let cost = stream.cost();
                    let (usage, _) = stream.usage();
                    let frames = match &mut enc {
                        Enc::OpenAi(e) => {
                            e.encode(&StreamEvent::Usage { usage });
                            e.finish(Some(("berth", json!({"cost_usd": cost.as_usd()}))))
                        }
                        Enc::Anthropic(e) => {
                            e.encode(&StreamEvent::Usage { usage });
                            e.finish()
                        }
                    };
                    return Some((Ok(bytes::Bytes::from(frames.concat())), (stream, enc, true)));
                }
            };
            Some((
                Ok(bytes::Bytes::from(frames.concat())),
                (stream, enc, false),
            ))
        },
    );
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-berth-provider", provider_header(&provider));
    *resp.status_mut() = StatusCode::OK;
    resp
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    state: &AppState,
    auth: &TenantAuth,
    headers: &HeaderMap,
    body: &Value,
) -> Result<Response, ApiError> {
    let scope = auth.require_role(Role::Invoker)?;
    let meta = call_meta(auth, headers)?;
    let (model, chars) = berth_llm::embeddings::check_request(body).map_err(llm_error)?;
    let policy = policy::effective(state, scope).await?;
    let route = berth_gateway::plan(&policy, &model, &meta.tags)
        .map_err(berth_gateway::GatewayError::from)?;
    let limits = admit(state, auth, &policy).await?;
    let target = route.targets.first().cloned().unwrap_or(model);
    let answer = state
        .gateway
        .embeddings(scope, &meta, body, &target, chars)
        .await?;
    let mut resp = axum::Json(answer.body).into_response();
    resp.headers_mut()
        .insert("x-berth-provider", provider_header(&answer.provider));
    resp.headers_mut()
        .insert("x-berth-cost-usd", cost_header(answer.cost));
    add_headers(&mut resp, limits);
    Ok(resp)
}

/// `GET /v1/models`: the platform's priced models and the tenant's aliases that its policy
/// allows, in the OpenAI list shape.
pub async fn models(state: &AppState, auth: &TenantAuth) -> Result<Value, ApiError> {
    let scope = auth.require_role(Role::Viewer)?;
    let policy = policy::effective(state, scope).await?;
    let allowed = |m: &str| berth_gateway::plan(&policy, m, &[]).is_ok();
    let mut ids: Vec<String> = state
        .gateway
        .known_models()
        .into_iter()
        .filter(|m| allowed(m))
        .collect();
    ids.extend(policy.models.aliases.keys().filter(|a| allowed(a)).cloned());
    let data: Vec<Value> = ids
        .iter()
        .map(|id| {
            let owner = id.split_once('/').map_or("alias", |(p, _)| p);
            json!({"id": id, "object": "model", "created": 0, "owned_by": owner})
        })
        .collect();
    Ok(json!({"object": "list", "data": data}))
}
