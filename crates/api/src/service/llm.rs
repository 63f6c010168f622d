//! The LLM gateway endpoints' logic: parse the client's wire format, route under the
//! tenant's policy, call through the gateway (which meters), render back in the client's
//! format, streamed or not.

use crate::auth::TenantAuth;
use crate::error::ApiError;
use crate::service::limits::{self, Admitted, Ask};
use crate::service::policy;
use crate::state::AppState;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_core::{AgentName, NanoUsd, Role};
use berth_gateway::{CallMeta, StreamAnswer};
use berth_llm::{LlmError, StreamEvent, anthropic, openai};
use berth_runtime::dlp::{Screened, StreamScreen};
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
    let mut meta = call_meta(auth, headers)?;
    let req = match wire {
        Wire::OpenAi => openai::parse_request(body),
        Wire::Anthropic => anthropic::parse_request(body),
    }
    .map_err(llm_error)?;
    let policy = policy::effective(state, scope).await?;
    meta.budgets = crate::service::budgets::for_call(state, auth, &policy, meta.agent.as_deref());
    let route = berth_gateway::plan(&policy, &req.model, &meta.tags)
        .map_err(berth_gateway::GatewayError::from)?;
    let input_estimate = berth_llm::tokens::estimate_request(&req);
    // The worst case this call may use, reserved now and settled with its usage.
    let reserve = input_estimate.saturating_add(u64::from(
        req.max_tokens
            .unwrap_or(berth_llm::anthropic::DEFAULT_MAX_TOKENS),
    ));
    let ask = Ask {
        agent: meta.agent.as_deref(),
        tokens: Some(reserve),
    };
    let mut admitted = limits::admit(state, auth, &policy, ask).await?;
    if req.stream {
        let answer = match state.gateway.chat_stream(scope, &meta, &req, &route).await {
            Ok(a) => a,
            Err(e) => {
                // Nothing was generated: the reservation goes back whole.
                admitted.settle(state.limiter.as_ref(), 0).await;
                return Err(e.into());
            }
        };
        let mut limit_headers = HeaderMap::new();
        admitted.add_headers(&mut limit_headers);
        let settlement = Settlement {
            limiter: state.limiter.clone(),
            admitted,
            gateway: state.gateway.clone(),
        };
        let screen = state
            .runner
            .dlp_for(scope, &policy)
            .filter(|d| d.on_llm_output != berth_core::policy::DlpAction::Allow)
            .map(|d| OutputScreen {
                screen: StreamScreen::new(d.clone(), d.on_llm_output),
                audit: state.audit.clone(),
                scope: scope.clone(),
                target: meta.agent.clone().unwrap_or_else(|| "gateway".to_owned()),
            });
        let mut resp = stream_response(
            answer,
            wire,
            req.include_usage,
            input_estimate,
            settlement,
            screen,
        );
        resp.headers_mut().extend(limit_headers);
        return Ok(resp);
    }
    let answer = match state.gateway.chat(scope, &meta, req, &route).await {
        Ok(a) => a,
        Err(e) => {
            admitted.settle(state.limiter.as_ref(), 0).await;
            return Err(e.into());
        }
    };
    admitted
        .settle(state.limiter.as_ref(), answer.usage.total())
        .await;
    let mut response = answer.response;
    response.model = answer.model.clone();
    screen_output(state, scope, &policy, &mut response, meta.agent.as_deref()).await?;
    let body = match wire {
        Wire::OpenAi => openai::render_response(&response, now_secs()),
        Wire::Anthropic => anthropic::render_response(&response),
    };
    let mut resp = axum::Json(body).into_response();
    let h = resp.headers_mut();
    h.insert("x-berth-provider", provider_header(&answer.provider));
    h.insert("x-berth-cost-usd", cost_header(answer.cost));
    admitted.add_headers(resp.headers_mut());
    Ok(resp)
}

/// Applies the policy's `on_llm_output` data-loss rule to a whole answer's text (the call
/// is metered already: a blocked answer is still paid for, like a run's).
async fn screen_output(
    state: &AppState,
    scope: &berth_core::TenantScope,
    policy: &std::sync::Arc<berth_core::Policy>,
    response: &mut berth_llm::ChatResponse,
    agent: Option<&str>,
) -> Result<(), ApiError> {
    use berth_runtime::dlp::Verdict;
    let Some(dlp) = state.runner.dlp_for(scope, policy) else {
        return Ok(());
    };
    let mut hits: Vec<(&str, Vec<String>, &str)> = Vec::new();
    let mut blocked = false;
    for part in &mut response.content {
        if let berth_llm::Part::Text(text) = part {
            match dlp.screen(text, dlp.on_llm_output).await {
                Verdict::Clean(_) => {}
                Verdict::Redacted { text: t, detectors } => {
                    *text = t;
                    hits.push(("llm_output", detectors, "redact"));
                }
                Verdict::Blocked { detectors } => {
                    blocked = true;
                    hits.push(("llm_output", detectors, "block"));
                }
            }
        }
    }
    let target = agent.unwrap_or("gateway");
    crate::service::tools::audit_dlp_via(&state.audit, scope, "gateway", target, &hits).await;
    if blocked {
        return Err(ApiError::invalid(
            "dlp_blocked",
            "model",
            "the model's answer was withheld by the data-loss rules",
        ));
    }
    Ok(())
}

/// A streamed call's token reservation, settled when the stream ends with what it used.
/// A stream the client abandons keeps its whole reservation: that errs toward the limit.
struct Settlement {
    limiter: std::sync::Arc<dyn berth_meter::RateLimiter>,
    admitted: Admitted,
    gateway: std::sync::Arc<berth_gateway::Gateway>,
}

impl Settlement {
    /// At the end of a stream, before its last frame: the call's usage and budget
    /// settlement (made when the upstream ended) are durable, and the rate-limit
    /// reservation settled.
    async fn settle(&mut self, used_tokens: u64) {
        self.gateway.durable().await;
        self.admitted
            .settle(self.limiter.as_ref(), used_tokens)
            .await;
    }
}

/// The policy's `on_llm_output` rule applied to a streamed answer as it goes (text is held
/// back by at most [`StreamScreen::HOLD`] bytes), and where its hits are audited.
struct OutputScreen {
    screen: StreamScreen,
    audit: berth_store::AuditWriter,
    scope: berth_core::TenantScope,
    target: String,
}

impl OutputScreen {
    /// What to send for `event` (`None`: the end of the answer): text goes through the
    /// screen; any other event but usage, and the end, first take out what the screen
    /// holds, so text stays in order. `Err`: blocked.
    fn events(&mut self, event: Option<StreamEvent>) -> Result<Vec<StreamEvent>, Vec<String>> {
        let released = match &event {
            Some(StreamEvent::TextDelta { text }) => self.screen.push(text),
            Some(StreamEvent::Usage { .. }) => return Ok(event.into_iter().collect()),
            _ => self.screen.finish(),
        };
        let mut out = match released {
            Screened::Pass(text) if text.is_empty() => Vec::new(),
            Screened::Pass(text) => vec![StreamEvent::TextDelta { text }],
            Screened::Blocked(detectors) => return Err(detectors),
        };
        out.extend(event.filter(|e| !matches!(e, StreamEvent::TextDelta { .. })));
        Ok(out)
    }

    /// Audits what the screen redacted, or the detectors that blocked the answer.
    async fn audit(&self, blocked: Option<Vec<String>>) {
        let hit = match blocked {
            Some(detectors) => ("llm_output", detectors, "block"),
            None if self.screen.redacted.is_empty() => return,
            None => ("llm_output", self.screen.redacted.clone(), "redact"),
        };
        crate::service::tools::audit_dlp_via(
            &self.audit,
            &self.scope,
            "gateway",
            &self.target,
            &[hit],
        )
        .await;
    }
}

enum Enc {
    OpenAi(openai::StreamEncoder),
    Anthropic(anthropic::StreamEncoder),
}

impl Enc {
    fn encode(&mut self, events: &[StreamEvent]) -> Vec<String> {
        events
            .iter()
            .flat_map(|event| match self {
                Enc::OpenAi(e) => e.encode(event),
                Enc::Anthropic(e) => e.encode(event),
            })
            .collect()
    }

    /// An in-band error frame (the status line went out with the first byte): an
    /// upstream failure, or an answer the data-loss rules withheld (`blocked`).
    fn error(&self, blocked: bool, code: &str, message: &str) -> String {
        let kind = match (self, blocked) {
            (_, true) => "invalid_request_error",
            (Enc::OpenAi(_), false) => "upstream",
            (Enc::Anthropic(_), false) => "api_error",
        };
        match self {
            Enc::OpenAi(_) => format!(
                "data: {}\n\n",
                json!({"error": {"type": kind, "code": code, "message": message}})
            ),
            Enc::Anthropic(_) => format!(
                "event: error\ndata: {}\n\n",
                json!({"type": "error", "error": {"type": kind, "code": code, "message": message}})
            ),
        }
    }
}

/// The SSE answer. The gateway's stream meters itself; this re-encodes events for the
/// client's wire, screens text under the data-loss rules, and reports an upstream failure
/// or a blocked answer in-band (headers are already sent).
fn stream_response(
    answer: StreamAnswer,
    wire: Wire,
    include_usage: bool,
    input_estimate: u64,
    settlement: Settlement,
    screen: Option<OutputScreen>,
) -> Response {
    let StreamAnswer {
        provider,
        model,
        stream,
        ..
    } = answer;
    let id = format!(
        "chatcmpl-{}",
        berth_core::Id::new(berth_core::IdKind::Request)
            .as_str()
            .trim_start_matches("req_")
    );
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
        (stream, encoder, settlement, screen, false),
        move |(mut stream, mut enc, mut settlement, mut screen, done)| async move {
            if done {
                return None;
            }
            let next = stream.next().await;
            let ended = next.is_none();
            let events = match (next, &mut screen) {
                (Some(Ok(event)), None) => Ok(vec![event]),
                (Some(Ok(event)), Some(s)) => s.events(Some(event)),
                (None, Some(s)) => s.events(None),
                (None, None) => Ok(Vec::new()),
                (Some(Err(err)), _) => {
                    settlement.settle(stream.usage().0.total()).await;
                    if let Some(s) = &screen {
                        s.audit(None).await;
                    }
                    let frame = enc.error(false, err.code(), &err.to_string());
                    return Some((
                        Ok::<_, std::io::Error>(bytes::Bytes::from(frame)),
                        (stream, enc, settlement, screen, true),
                    ));
                }
            };
            let mut frames = match events {
                Ok(events) => enc.encode(&events),
                Err(detectors) => {
                    // Nothing of the blocked text was sent: it was still held.
                    settlement.settle(stream.usage().0.total()).await;
                    if let Some(s) = &screen {
                        s.audit(Some(detectors)).await;
                    }
                    let frame = enc.error(
                        true,
                        "dlp_blocked",
                        "the model's answer was withheld by the data-loss rules",
                    );
                    return Some((
                        Ok(bytes::Bytes::from(frame)),
                        (stream, enc, settlement, screen, true),
                    ));
                }
            };
            if ended {
                let cost = stream.cost();
                let (usage, _) = stream.usage();
                settlement.settle(usage.total()).await;
                if let Some(s) = &screen {
                    s.audit(None).await;
                }
                match &mut enc {
                    Enc::OpenAi(e) => {
                        e.encode(&StreamEvent::Usage { usage });
                        frames
                            .extend(e.finish(Some(("berth", json!({"cost_usd": cost.as_usd()})))));
                    }
                    Enc::Anthropic(e) => {
                        e.encode(&StreamEvent::Usage { usage });
                        frames.extend(e.finish());
                    }
                }
            }
            Some((
                Ok(bytes::Bytes::from(frames.concat())),
                (stream, enc, settlement, screen, ended),
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
    let mut meta = call_meta(auth, headers)?;
    let (model, chars) = berth_llm::embeddings::check_request(body).map_err(llm_error)?;
    let policy = policy::effective(state, scope).await?;
    meta.budgets = crate::service::budgets::for_call(state, auth, &policy, meta.agent.as_deref());
    let route = berth_gateway::plan(&policy, &model, &meta.tags)
        .map_err(berth_gateway::GatewayError::from)?;
    // Embeddings produce no tokens: the input's estimate (as the gateway bills it when
    // the upstream reports none) is the whole charge, not settled.
    let ask = Ask {
        agent: meta.agent.as_deref(),
        tokens: Some(chars.div_ceil(4).max(1)),
    };
    let admitted = limits::admit(state, auth, &policy, ask).await?;
    let target = route.targets.first().cloned().unwrap_or(model);
    let answer = state
        .gateway
        .embeddings(scope, &meta, body.clone(), &target, chars)
        .await?;
    let mut resp = axum::Json(answer.body).into_response();
    resp.headers_mut()
        .insert("x-berth-provider", provider_header(&answer.provider));
    resp.headers_mut()
        .insert("x-berth-cost-usd", cost_header(answer.cost));
    admitted.add_headers(resp.headers_mut());
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
