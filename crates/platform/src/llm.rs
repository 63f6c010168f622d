//! Gateway calls on a tenant's behalf: parse the client's wire format, route under the
//! tenant's policy, pass the rate limits and budgets, call through the gateway (which
//! meters) and screen the answer under the data-loss rules. The HTTP crate renders the
//! answer back in the client's wire, whole or as an event stream.

use crate::Platform;
use crate::auth::TenantCaller;
use crate::error::{Error, RateReport};
use crate::limits::{self, Admitted, Ask};
use crate::policy;
use berth_core::{AgentName, NanoUsd, Role};
use berth_gateway::{CallMeta, MeteredStream, StreamAnswer};
use berth_llm::{ChatResponse, LlmError, StreamEvent, anthropic, openai};
use berth_runtime::dlp::{Screened, StreamScreen};
use serde_json::Value;

/// Which wire the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    Anthropic,
}

fn llm_error(e: LlmError) -> Error {
    match e {
        LlmError::Field { field, message } => {
            Error::bad_request("invalid_request", format!("{field}: {message}")).with_param(field)
        }
        other => Error::bad_request("invalid_request", other.to_string()),
    }
}

/// How a caller attributes and routes a gateway call (the `Berth-Agent` and `Berth-Tags`
/// headers): each the text sent, trimmed, `None` when absent or empty.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attribution<'a> {
    pub agent: Option<&'a str>,
    /// Comma-separated routing tags.
    pub tags: Option<&'a str>,
}

/// Attribution from the caller and what it claims. A key restricted to one agent is
/// attributed to it and may not claim another.
pub fn call_meta(auth: &TenantCaller, claimed: Attribution<'_>) -> Result<CallMeta, Error> {
    let mut agent = match claimed.agent {
        None => None,
        Some(a) => Some(
            AgentName::parse(a)
                .map_err(|e| Error::bad_request("invalid_agent", format!("Berth-Agent: {e}")))?
                .as_str()
                .to_owned(),
        ),
    };
    if let Some(only) = auth.scope.principal().agent_restriction() {
        if agent.as_deref().is_some_and(|a| a != only) {
            return Err(Error::forbidden(
                "agent_restricted_key",
                format!("this key is restricted to agent '{only}'"),
            ));
        }
        agent = Some(only.to_owned());
    }
    let tags: Vec<String> = claimed
        .tags
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if tags.len() > 32 || tags.iter().any(|t| t.len() > 64) {
        return Err(Error::bad_request(
            "invalid_tags",
            "Berth-Tags: at most 32 tags of at most 64 characters",
        ));
    }
    Ok(CallMeta {
        key_id: auth.key.as_ref().map(|k| k.id.clone()),
        agent,
        tags,
        ..CallMeta::default()
    })
}

/// A whole answer of a gateway call, screened; the client's wire renders it.
pub struct Whole {
    pub response: ChatResponse,
    pub provider: String,
    pub cost: NanoUsd,
    pub rate: RateReport,
}

/// A streamed answer of a gateway call. Its stream meters itself; whoever frames it for
/// the client passes each event through `screen` and calls `settlement` once at its end.
pub struct Streamed {
    pub provider: String,
    pub model: String,
    pub stream: MeteredStream,
    /// The input tokens as estimated before the call (Anthropic's `message_start` needs it).
    pub input_estimate: u64,
    pub include_usage: bool,
    pub settlement: Settlement,
    /// The data-loss screen of the answer's text, when the policy asks for one.
    pub screen: Option<OutputScreen>,
    pub rate: RateReport,
}

/// The answer of [`chat`].
pub enum ChatAnswer {
    Whole(Box<Whole>),
    Streamed(Box<Streamed>),
}

/// A chat call (`POST /v1/chat/completions`, `POST /v1/messages`), streamed when the
/// request asks for it.
pub async fn chat(
    state: &Platform,
    auth: &TenantCaller,
    claimed: Attribution<'_>,
    body: &Value,
    wire: Wire,
) -> Result<ChatAnswer, Error> {
    let scope = auth.require_role(Role::Invoker)?;
    let mut meta = call_meta(auth, claimed)?;
    let req = match wire {
        Wire::OpenAi => openai::parse_request(body),
        Wire::Anthropic => anthropic::parse_request(body),
    }
    .map_err(llm_error)?;
    let policy = policy::effective(state, scope).await?;
    meta.budgets = crate::budgets::for_call(state, auth, &policy, meta.agent.as_deref());
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
        let rate = admitted.report();
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
        let StreamAnswer {
            provider,
            model,
            stream,
            ..
        } = answer;
        return Ok(ChatAnswer::Streamed(Box::new(Streamed {
            provider,
            model,
            stream,
            input_estimate,
            include_usage: req.include_usage,
            settlement,
            screen,
            rate,
        })));
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
    Ok(ChatAnswer::Whole(Box::new(Whole {
        response,
        provider: answer.provider,
        cost: answer.cost,
        rate: admitted.report(),
    })))
}

/// Applies the policy's `on_llm_output` data-loss rule to a whole answer's text (the call
/// is metered already: a blocked answer is still paid for, like a run's).
async fn screen_output(
    state: &Platform,
    scope: &berth_core::TenantScope,
    policy: &std::sync::Arc<berth_core::Policy>,
    response: &mut berth_llm::ChatResponse,
    agent: Option<&str>,
) -> Result<(), Error> {
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
    crate::tools::audit_dlp_via(&state.audit, scope, "gateway", target, &hits).await;
    if blocked {
        return Err(Error::invalid(
            "dlp_blocked",
            "model",
            "the model's answer was withheld by the data-loss rules",
        ));
    }
    Ok(())
}

/// A streamed call's token reservation, settled when the stream ends with what it used.
/// A stream the client abandons keeps its whole reservation: that errs toward the limit.
pub struct Settlement {
    limiter: std::sync::Arc<dyn berth_meter::RateLimiter>,
    admitted: Admitted,
    gateway: std::sync::Arc<berth_gateway::Gateway>,
}

impl Settlement {
    /// At the end of a stream, before its last frame: the call's usage and budget
    /// settlement (made when the upstream ended) are durable, and the rate-limit
    /// reservation settled.
    pub async fn settle(&mut self, used_tokens: u64) {
        self.gateway.durable().await;
        self.admitted
            .settle(self.limiter.as_ref(), used_tokens)
            .await;
    }
}

/// The policy's `on_llm_output` rule applied to a streamed answer as it goes (text is held
/// back by at most [`StreamScreen::HOLD`] bytes), and where its hits are audited.
pub struct OutputScreen {
    screen: StreamScreen,
    audit: berth_store::AuditWriter,
    scope: berth_core::TenantScope,
    target: String,
}

impl OutputScreen {
    /// What to send for `event` (`None`: the end of the answer): text goes through the
    /// screen; any other event but usage, and the end, first take out what the screen
    /// holds, so text stays in order. `Err`: blocked.
    pub fn events(&mut self, event: Option<StreamEvent>) -> Result<Vec<StreamEvent>, Vec<String>> {
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
    pub async fn audit(&self, blocked: Option<Vec<String>>) {
        let hit = match blocked {
            Some(detectors) => ("llm_output", detectors, "block"),
            None if self.screen.redacted.is_empty() => return,
            None => ("llm_output", self.screen.redacted.clone(), "redact"),
        };
        crate::tools::audit_dlp_via(&self.audit, &self.scope, "gateway", &self.target, &[hit])
            .await;
    }
}

/// An embeddings answer: the provider's body, as the OpenAI wire has it.
pub struct Embedded {
    pub body: Value,
    pub provider: String,
    pub cost: NanoUsd,
    pub rate: RateReport,
}

/// An embeddings call (`POST /v1/embeddings`).
pub async fn embeddings(
    state: &Platform,
    auth: &TenantCaller,
    claimed: Attribution<'_>,
    body: &Value,
) -> Result<Embedded, Error> {
    let scope = auth.require_role(Role::Invoker)?;
    let mut meta = call_meta(auth, claimed)?;
    let (model, chars) = berth_llm::embeddings::check_request(body).map_err(llm_error)?;
    let policy = policy::effective(state, scope).await?;
    meta.budgets = crate::budgets::for_call(state, auth, &policy, meta.agent.as_deref());
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
    Ok(Embedded {
        body: answer.body,
        provider: answer.provider,
        cost: answer.cost,
        rate: admitted.report(),
    })
}

/// The models this tenant may use (`GET /v1/models`): the platform's priced models and the
/// tenant's aliases that its policy allows.
pub async fn models(state: &Platform, auth: &TenantCaller) -> Result<Vec<String>, Error> {
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
    Ok(ids)
}
