//! The LLM gateway: routes a call to a provider under the tenant's policy, retries and
//! falls back, injects the provider key at the last moment, and meters every call once,
//! streamed or not, finished, failed or abandoned (a non-streamed call runs on a task of
//! its own, so a caller that goes away does not take the metering with it).

mod budget;
mod error;
mod hold;
mod metered;
pub mod mock;
pub mod retry;
pub mod route;
mod scrub;
pub mod settle;
mod upstream;

pub use budget::{BudgetLedger, Refusal, Reservation};
pub use error::GatewayError;
pub use hold::RUN_BUDGET_SCOPE;
pub use metered::MeteredStream;
pub use route::{Route, RouteError, plan};
pub use settle::Settler;
pub use upstream::BodyLimits;

use berth_core::clock::now_ms;
use berth_core::{Id, IdKind, NanoUsd, TenantScope};
use berth_egress::EgressGuard;
use berth_llm::{ChatRequest, ChatResponse, Usage};
use berth_meter::{PriceTable, UsageRecorder};
use berth_store::{ProviderStore, UsageEvent};
use berth_vault::{SecretValue, Vault};
use retry::RetryPolicy;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::task::TaskTracker;

/// The wire a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OpenAi,
    Anthropic,
    /// OpenAI's wire at any base URL (vLLM, Ollama, llama.cpp, Groq…).
    OpenAiCompatible,
    /// The built-in offline provider.
    Mock,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "openai" => Some(Kind::OpenAi),
            "anthropic" => Some(Kind::Anthropic),
            "openai-compatible" => Some(Kind::OpenAiCompatible),
            "mock" => Some(Kind::Mock),
            _ => None,
        }
    }

    /// The name prices are looked up under for a provider of this kind.
    pub fn price_family(self) -> Option<&'static str> {
        match self {
            Kind::OpenAi => Some("openai"),
            Kind::Anthropic => Some("anthropic"),
            Kind::Mock => Some("mock"),
            Kind::OpenAiCompatible => None,
        }
    }

    fn default_base_url(self) -> &'static str {
        match self {
            Kind::Anthropic => "https://api.anthropic.com/v1",
            _ => "https://api.openai.com/v1",
        }
    }
}

/// A platform provider from the server config.
#[derive(Clone)]
pub struct PlatformProvider {
    pub name: String,
    pub kind: Kind,
    pub base_url: Option<String>,
    /// Read from the environment variable the config names, at start.
    pub api_key: Option<Arc<SecretValue>>,
    pub timeout: Duration,
}

/// A provider ready to call: where, how, and with which key.
#[derive(Clone)]
pub(crate) struct Target {
    pub provider: String,
    pub kind: Kind,
    pub base_url: String,
    /// Opened for this call; wiped from memory when the last holder drops it.
    pub key: Option<Arc<SecretValue>>,
    pub timeout: Duration,
    /// `provider/model` as routed.
    pub full_model: String,
    /// The model name the upstream knows.
    pub model: String,
    /// A tenant's own provider: its connections pass the egress guard.
    pub tenant_owned: bool,
}

/// Attribution of a call, from the request.
#[derive(Debug, Clone, Default)]
pub struct CallMeta {
    pub key_id: Option<String>,
    pub agent: Option<String>,
    pub tags: Vec<String>,
    /// Set for the calls of an agent run.
    pub run_id: Option<String>,
    pub agent_version: Option<i64>,
    /// The budgets this call counts against (see `berth_meter::budget::applicable`).
    pub budgets: Vec<berth_meter::budget::ActiveBudget>,
    /// The most this call may cost (what is left of a run's `max_cost_usd`): its worst
    /// case is held to it like a hard budget's, refused with the scope
    /// [`RUN_BUDGET_SCOPE`] when not even its input fits.
    pub cost_limit: Option<NanoUsd>,
}

/// A finished, non-streamed call.
pub struct Answer {
    pub response: ChatResponse,
    pub provider: String,
    pub model: String,
    pub usage: Usage,
    pub cost: NanoUsd,
    pub estimated: bool,
}

/// A streamed call whose first byte arrived; its events follow in `stream`.
pub struct StreamAnswer {
    pub provider: String,
    pub model: String,
    pub stream: MeteredStream,
    /// The answer's output was capped to what the call's `cost_limit` pays for: an answer
    /// cut for length was cut by that limit.
    pub capped_by_cost_limit: bool,
}

pub struct EmbeddingAnswer {
    pub body: serde_json::Value,
    pub provider: String,
    pub cost: NanoUsd,
}

pub struct Gateway {
    platform: HashMap<String, PlatformProvider>,
    prices: Arc<PriceTable>,
    recorder: UsageRecorder,
    vault: Arc<Vault>,
    providers: Arc<dyn ProviderStore>,
    /// For operator-configured providers.
    http: reqwest::Client,
    /// For tenant-supplied base URLs: every connection passes the egress guard.
    guarded_http: reqwest::Client,
    egress: EgressGuard,
    retry: RetryPolicy,
    budgets: Option<Arc<Settler>>,
    limits: BodyLimits,
    /// Non-streamed calls run here, so that shutdown waits for them to be metered.
    tasks: TaskTracker,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The output a call without `max_tokens` may produce under a hard budget, so that its
/// worst case (and so its reservation) is bounded.
pub const UNBOUNDED_OUTPUT_CAP: u32 = 4096;

impl Gateway {
    pub fn new(
        platform: Vec<PlatformProvider>,
        prices: Arc<PriceTable>,
        recorder: UsageRecorder,
        vault: Arc<Vault>,
        providers: Arc<dyn ProviderStore>,
        egress: &EgressGuard,
    ) -> Self {
        let mut map: HashMap<String, PlatformProvider> =
            platform.into_iter().map(|p| (p.name.clone(), p)).collect();
        map.entry("mock".to_owned()).or_insert(PlatformProvider {
            name: "mock".to_owned(),
            kind: Kind::Mock,
            base_url: None,
            api_key: None,
            timeout: DEFAULT_TIMEOUT,
        });
        // Timeouts are per provider and applied per call; the clients carry none of their own.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(256)
            .build()
            .unwrap_or_default();
        Gateway {
            platform: map,
            prices,
            recorder,
            vault,
            providers,
            http,
            guarded_http: egress.client_without_timeout(),
            egress: egress.clone(),
            retry: RetryPolicy::default(),
            budgets: None,
            limits: BodyLimits::default(),
            tasks: TaskTracker::new(),
        }
    }

    /// How much of a provider's answers is read (see [`BodyLimits`]).
    pub fn with_body_limits(mut self, limits: BodyLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Runs non-streamed calls on `tasks` (the server's, drained at shutdown).
    pub fn with_tasks(mut self, tasks: TaskTracker) -> Self {
        self.tasks = tasks;
        self
    }

    /// Enforces budgets through the ledger of `settler` (without one, budgets are not
    /// checked), which also settles every call's reservation.
    pub fn with_budgets(mut self, settler: Arc<Settler>) -> Self {
        self.budgets = Some(settler);
        self
    }

    /// Waits until what every call ended so far owes is durable: its usage, and the
    /// settlement of its budget reservation. An answer's last bytes wait for this.
    pub async fn durable(&self) {
        let settlements = async {
            if let Some(s) = &self.budgets {
                s.durable().await;
            }
        };
        tokio::join!(self.recorder.durable(), settlements);
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Names of the platform's providers.
    pub fn platform_providers(&self) -> Vec<String> {
        let mut names: Vec<String> = self.platform.keys().cloned().collect();
        names.sort();
        names
    }

    /// Models known to the platform's price table and providers, for `/v1/models`.
    pub fn known_models(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .prices
            .models()
            .filter(|m| {
                m.split_once('/')
                    .is_some_and(|(p, _)| self.platform.contains_key(p))
            })
            .collect();
        out.sort();
        out
    }

    async fn resolve(&self, scope: &TenantScope, full_model: &str) -> Result<Target, GatewayError> {
        let (provider, model) = full_model
            .split_once('/')
            .ok_or_else(|| GatewayError::Route(RouteError::UnknownModel(full_model.to_owned())))?;
        if let Some(p) = self.platform.get(provider) {
            return Ok(Target {
                provider: p.name.clone(),
                kind: p.kind,
                base_url: p
                    .base_url
                    .clone()
                    .unwrap_or_else(|| p.kind.default_base_url().to_owned()),
                key: p.api_key.clone(),
                timeout: p.timeout,
                full_model: full_model.to_owned(),
                model: model.to_owned(),
                tenant_owned: false,
            });
        }
        let own = self
            .providers
            .get_provider(scope, provider)
            .await
            .map_err(|e| GatewayError::Internal(e.to_string()))?
            .ok_or_else(|| GatewayError::ProviderNotFound(provider.to_owned()))?;
        let kind = Kind::parse(&own.kind).ok_or_else(|| {
            GatewayError::Internal(format!("stored provider kind {:?}", own.kind))
        })?;
        let base_url = own
            .base_url
            .clone()
            .unwrap_or_else(|| kind.default_base_url().to_owned());
        // Checked again on every call: the operator's egress rules may have changed since
        // the provider was registered, and literal IPs never reach the guarded resolver.
        self.egress
            .check_url(&base_url)
            .map_err(|e| GatewayError::Connect {
                provider: own.name.clone(),
                message: e.to_string(),
            })?;
        // The key is opened now, for this call only, if its binding names this provider
        // (providers are written by admins only).
        let dest = berth_core::binding::Destination {
            kind: berth_core::binding::DestinationKind::Provider,
            name: own.name.clone(),
            host: reqwest::Url::parse(&base_url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
                .unwrap_or_default(),
            written_by: berth_core::Role::Admin,
        };
        let key = self
            .vault
            .reveal_for(scope, &own.api_key_secret, &dest)
            .await
            .map_err(|e| match e {
                berth_vault::VaultError::NotPermitted { .. } => GatewayError::ProviderKeyNotBound {
                    provider: own.name.clone(),
                    secret: own.api_key_secret.clone(),
                },
                e => GatewayError::Internal(e.to_string()),
            })?
            .ok_or_else(|| GatewayError::ProviderKeyMissing {
                provider: own.name.clone(),
                secret: own.api_key_secret.clone(),
            })?;
        Ok(Target {
            provider: own.name.clone(),
            kind,
            base_url,
            key: Some(Arc::new(key)),
            timeout: DEFAULT_TIMEOUT,
            full_model: full_model.to_owned(),
            model: model.to_owned(),
            tenant_owned: true,
        })
    }

    fn client(&self, target: &Target) -> &reqwest::Client {
        if target.tenant_owned {
            &self.guarded_http
        } else {
            &self.http
        }
    }

    /// The exact cost of `usage` on `target`'s model (zero, with a warning, when the
    /// model has no price, which only a call under no hard budget can reach: usage is
    /// still recorded in tokens).
    fn cost(&self, target: &Target, usage: &Usage) -> NanoUsd {
        match self
            .prices
            .lookup(&target.full_model, target.kind.price_family())
        {
            Some(p) => p.cost(
                usage.input_tokens,
                usage.output_tokens,
                usage.cached_input_tokens,
            ),
            None => {
                tracing::warn!(model = %target.full_model, "no price for model; cost recorded as 0");
                NanoUsd(0)
            }
        }
    }

    fn event(meta: &CallMeta, kind: &str, provider: &str, model: &str) -> UsageEvent {
        UsageEvent {
            id: Id::new(IdKind::Event).into_string(),
            at_ms: now_ms(),
            kind: kind.to_owned(),
            key_id: meta.key_id.clone(),
            agent: meta.agent.clone(),
            tags: (!meta.tags.is_empty()).then(|| meta.tags.join(",")),
            provider: Some(provider.to_owned()),
            model: Some(model.to_owned()),
            run_id: meta.run_id.clone(),
            agent_version: meta.agent_version,
            ..UsageEvent::default()
        }
    }

    /// Tries each target of `route` in order, each with retries on retryable failures,
    /// until `call` succeeds; returns its result and the target that gave it. A failure
    /// that is not retryable, or the last one, is recorded as a failed call and returned.
    async fn first_success<T, F, Fut>(
        &self,
        scope: &TenantScope,
        meta: &CallMeta,
        route: &Route,
        started: Instant,
        mut call: F,
    ) -> Result<(T, Target), GatewayError>
    where
        F: FnMut(Target) -> Fut,
        Fut: std::future::Future<Output = Result<T, GatewayError>>,
    {
        let mut last: Option<(GatewayError, String, String)> = None;
        for (i, full) in route.targets.iter().enumerate() {
            let target = match self.resolve(scope, full).await {
                Ok(t) => t,
                Err(e) if i + 1 < route.targets.len() => {
                    last = Some((e, full.clone(), full.clone()));
                    continue;
                }
                Err(e) => return Err(e),
            };
            for attempt in 0..self.retry.attempts.max(1) {
                if attempt > 0 {
                    tokio::time::sleep(self.retry.backoff(attempt)).await;
                }
                match call(target.clone()).await {
                    Ok(v) => return Ok((v, target)),
                    Err(e) if e.retryable() => {
                        tracing::warn!(provider = %target.provider, attempt, error = %e, "upstream call failed; will retry or fall back");
                        last = Some((e, target.provider.clone(), target.full_model.clone()));
                    }
                    Err(e) => {
                        self.record_failure(
                            scope,
                            meta,
                            &target.provider,
                            &target.full_model,
                            started,
                            &e,
                        )
                        .await;
                        return Err(e);
                    }
                }
            }
        }
        let (err, provider, model) = last.unwrap_or((
            GatewayError::Internal("no target to call".into()),
            String::new(),
            String::new(),
        ));
        self.record_failure(scope, meta, &provider, &model, started, &err)
            .await;
        Err(err)
    }

    /// A non-streamed call, metered once on success. It runs on a task of its own: a
    /// caller that goes away (a client that disconnects drops the request's future) does
    /// not cancel it, so every answer the upstream gives is metered and settled.
    pub async fn chat(
        self: &Arc<Self>,
        scope: &TenantScope,
        meta: &CallMeta,
        req: ChatRequest,
        route: &Route,
    ) -> Result<Answer, GatewayError> {
        let (me, scope, meta, route) = (self.clone(), scope.clone(), meta.clone(), route.clone());
        self.tasks
            .spawn(async move { me.chat_to_end(&scope, &meta, &req, &route).await })
            .await
            .map_err(|e| GatewayError::Internal(format!("the call's task failed: {e}")))?
    }

    async fn chat_to_end(
        &self,
        scope: &TenantScope,
        meta: &CallMeta,
        req: &ChatRequest,
        route: &Route,
    ) -> Result<Answer, GatewayError> {
        let started = Instant::now();
        let input_estimate = berth_llm::tokens::estimate_request(req);
        let hold = self
            .hold(scope, meta, &route.targets, input_estimate, req.max_tokens)
            .await?;
        let capped;
        let req = match hold.cap {
            Some(cap) => {
                capped = ChatRequest {
                    max_tokens: Some(cap),
                    ..req.clone()
                };
                &capped
            }
            None => req,
        };
        let limits = &self.limits;
        let outcome = self
            .first_success(scope, meta, route, started, |target: Target| async move {
                match target.kind {
                    Kind::Mock => mock::chat(req, &target.model),
                    _ => upstream::chat(self.client(&target), &target, req, limits).await,
                }
            })
            .await;
        let (mut response, target) = match outcome {
            Ok(x) => x,
            Err(e) => {
                // Failed calls are not charged.
                let _ = self.settle(scope, hold, NanoUsd(0));
                return Err(e);
            }
        };
        let (usage, estimated) = complete_usage(response.usage, input_estimate, &response);
        response.usage = Some(usage);
        let cost = self.cost(&target, &usage);
        let mut ev = Self::event(meta, "llm", &target.provider, &target.full_model);
        ev.input_tokens = to_i64(usage.input_tokens);
        ev.output_tokens = to_i64(usage.output_tokens);
        ev.cached_input_tokens = to_i64(usage.cached_input_tokens);
        ev.cost_nano = cost.0;
        ev.latency_ms = to_i64(started.elapsed().as_millis() as u64);
        ev.status = "ok".to_owned();
        ev.estimated = estimated;
        // The usage and the settlement are made durable together, before the answer.
        let settled = self.settle(scope, hold, cost);
        tokio::join!(self.recorder.record(scope, ev), self.settled(settled));
        Ok(Answer {
            response,
            provider: target.provider,
            model: target.full_model,
            usage,
            cost,
            estimated,
        })
    }

    async fn record_failure(
        &self,
        scope: &TenantScope,
        meta: &CallMeta,
        provider: &str,
        model: &str,
        started: Instant,
        err: &GatewayError,
    ) {
        let mut ev = Self::event(meta, "llm", provider, model);
        ev.status = format!("error:{}", err.code());
        ev.latency_ms = to_i64(started.elapsed().as_millis() as u64);
        self.recorder.record(scope, ev).await;
    }

    /// Opens a streamed call (with retries and fallbacks until the upstream answers);
    /// the returned stream meters itself when it ends, fails, or is dropped.
    pub async fn chat_stream(
        &self,
        scope: &TenantScope,
        meta: &CallMeta,
        req: &ChatRequest,
        route: &Route,
    ) -> Result<StreamAnswer, GatewayError> {
        let started = Instant::now();
        let input_estimate = berth_llm::tokens::estimate_request(req);
        let hold = self
            .hold(scope, meta, &route.targets, input_estimate, req.max_tokens)
            .await?;
        let capped;
        let req = match hold.cap {
            Some(cap) => {
                capped = ChatRequest {
                    max_tokens: Some(cap),
                    ..req.clone()
                };
                &capped
            }
            None => req,
        };
        let capped_by_cost_limit = hold.capped_by_cost_limit;
        let limits = &self.limits;
        let outcome = self
            .first_success(scope, meta, route, started, |target: Target| async move {
                match target.kind {
                    Kind::Mock => Ok(mock::stream(req, &target.model)),
                    _ => upstream::stream(self.client(&target), &target, req, limits).await,
                }
            })
            .await;
        let (rx, target) = match outcome {
            Ok(x) => x,
            Err(e) => {
                let _ = self.settle(scope, hold, NanoUsd(0));
                return Err(e);
            }
        };
        let price = self
            .prices
            .lookup(&target.full_model, target.kind.price_family());
        let event = Self::event(meta, "llm", &target.provider, &target.full_model);
        let stream = MeteredStream::new(
            rx,
            self.recorder.clone(),
            scope.clone(),
            event,
            price,
            input_estimate,
            started,
        );
        // The stream settles its reservation when it is charged: at its end, when it
        // breaks, or when its reader goes away.
        let stream = match (self.budgets.clone(), hold.reservation) {
            (Some(settler), Some(reservation)) => {
                let scope = scope.clone();
                stream.on_charged(Box::new(move |cost| {
                    let _ = settler.settle(&scope, reservation, cost);
                }))
            }
            _ => stream,
        };
        Ok(StreamAnswer {
            provider: target.provider,
            model: target.full_model,
            stream,
            capped_by_cost_limit,
        })
    }

    /// Forwards an embeddings request to the routed provider (no fallbacks: vectors of
    /// different models are not interchangeable), on a task of its own like
    /// [`Gateway::chat`], holding its worst case on the call's budgets first.
    pub async fn embeddings(
        self: &Arc<Self>,
        scope: &TenantScope,
        meta: &CallMeta,
        body: serde_json::Value,
        full_model: &str,
        input_chars: u64,
    ) -> Result<EmbeddingAnswer, GatewayError> {
        let (me, scope, meta, model) = (
            self.clone(),
            scope.clone(),
            meta.clone(),
            full_model.to_owned(),
        );
        self.tasks
            .spawn(async move {
                me.embeddings_to_end(&scope, &meta, body, &model, input_chars)
                    .await
            })
            .await
            .map_err(|e| GatewayError::Internal(format!("the call's task failed: {e}")))?
    }

    async fn embeddings_to_end(
        &self,
        scope: &TenantScope,
        meta: &CallMeta,
        body: serde_json::Value,
        full_model: &str,
        input_chars: u64,
    ) -> Result<EmbeddingAnswer, GatewayError> {
        let started = Instant::now();
        // No output; the input's worst case is a token per character (estimates, and what
        // is billed when the upstream reports nothing, are a quarter of that).
        let hold = self
            .hold(
                scope,
                meta,
                &[full_model.to_owned()],
                input_chars.max(1),
                Some(0),
            )
            .await?;
        let target = match self.resolve(scope, full_model).await {
            Ok(t) => t,
            Err(e) => {
                let _ = self.settle(scope, hold, NanoUsd(0));
                return Err(e);
            }
        };
        let result = match target.kind {
            Kind::Mock => Ok(mock::embeddings(&body, &target.full_model)),
            Kind::Anthropic => Err(GatewayError::BadRequest(format!(
                "provider '{}' offers no embeddings",
                target.provider
            ))),
            _ => upstream::embeddings(self.client(&target), &target, body, &self.limits).await,
        };
        let mut answer = match result {
            Ok(a) => a,
            Err(e) => {
                let _ = self.settle(scope, hold, NanoUsd(0));
                self.record_failure(
                    scope,
                    meta,
                    &target.provider,
                    &target.full_model,
                    started,
                    &e,
                )
                .await;
                return Err(e);
            }
        };
        let (tokens, estimated) = match berth_llm::embeddings::usage(&answer) {
            Some(t) if t > 0 => (t, false),
            _ => (input_chars.div_ceil(4).max(1), true),
        };
        let usage = Usage {
            input_tokens: tokens,
            output_tokens: 0,
            cached_input_tokens: 0,
        };
        let cost = self.cost(&target, &usage);
        answer["model"] = serde_json::Value::String(target.full_model.clone());
        let mut ev = Self::event(meta, "embedding", &target.provider, &target.full_model);
        ev.input_tokens = to_i64(tokens);
        ev.cost_nano = cost.0;
        ev.latency_ms = to_i64(started.elapsed().as_millis() as u64);
        ev.status = "ok".to_owned();
        ev.estimated = estimated;
        // The usage and the settlement are made durable together, before the answer.
        let settled = self.settle(scope, hold, cost);
        tokio::join!(self.recorder.record(scope, ev), self.settled(settled));
        Ok(EmbeddingAnswer {
            body: answer,
            provider: target.provider.clone(),
            cost,
        })
    }
}

/// The usage to meter for an answer: what the upstream reported, with estimates for what
/// it left out or reported as zero (an answer is never free), and whether any of it is
/// an estimate.
fn complete_usage(
    reported: Option<Usage>,
    input_estimate: u64,
    resp: &ChatResponse,
) -> (Usage, bool) {
    let u = reported.unwrap_or_default();
    let input = if u.input_tokens == 0 {
        input_estimate.max(1)
    } else {
        u.input_tokens
    };
    let output = if u.output_tokens == 0 {
        estimate_output(resp)
    } else {
        u.output_tokens
    };
    let estimated = input != u.input_tokens || output != u.output_tokens;
    (
        Usage {
            input_tokens: input,
            output_tokens: output,
            cached_input_tokens: u.cached_input_tokens.min(input),
        },
        estimated,
    )
}

fn estimate_output(resp: &ChatResponse) -> u64 {
    let mut n = berth_llm::tokens::estimate_text(&resp.text());
    for p in &resp.content {
        if let berth_llm::Part::ToolCall {
            name, arguments, ..
        } = p
        {
            n += berth_llm::tokens::estimate_text(name)
                + berth_llm::tokens::estimate_text(arguments);
        }
    }
    n.max(1)
}

pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
