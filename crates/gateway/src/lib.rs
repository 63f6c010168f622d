//! The LLM gateway: routes a call to a provider under the tenant's policy, retries and
//! falls back, injects the provider key at the last moment, and meters every call once,
//! streamed or not, finished, failed or abandoned.

mod budget;
mod error;
mod metered;
pub mod mock;
pub mod retry;
pub mod route;
mod upstream;

pub use budget::{BudgetLedger, Refusal, Reservation};
pub use error::GatewayError;
pub use metered::MeteredStream;
pub use route::{Route, RouteError, plan};

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
    budgets: Option<Arc<dyn BudgetLedger>>,
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
        }
    }

    /// Enforces budgets through `ledger` (without one, budgets are not checked).
    pub fn with_budgets(mut self, ledger: Arc<dyn BudgetLedger>) -> Self {
        self.budgets = Some(ledger);
        self
    }

    /// Reserves the call's worst case on its budgets (`max_tokens` of output, or
    /// `UNBOUNDED_OUTPUT_CAP` when a hard budget applies and the call sets none); when a
    /// hard budget has less room than that, what it has, and the answer's output is capped
    /// to what that pays for (`Some(cap)`). Models with no price cost nothing, so they hold
    /// nothing.
    async fn hold(
        &self,
        scope: &TenantScope,
        meta: &CallMeta,
        req: &ChatRequest,
        route: &Route,
    ) -> Result<Option<(Reservation, Option<u32>)>, GatewayError> {
        let Some(ledger) = &self.budgets else {
            return Ok(None);
        };
        if meta.budgets.is_empty() {
            return Ok(None);
        }
        // The dearest target decides: a fallback may be pricier than the primary.
        let Some(price) = route
            .targets
            .iter()
            .filter_map(|t| self.price_of(t))
            .max_by_key(|p| (p.output, p.input))
        else {
            return Ok(None);
        };
        let input = berth_llm::tokens::estimate_request(req);
        let hard = meta.budgets.iter().any(|b| b.hard);
        // Under a hard budget every call needs a bounded worst case: one that sets no
        // `max_tokens` is held to `UNBOUNDED_OUTPUT_CAP` tokens (or what the budget affords).
        let max_out = match req.max_tokens {
            Some(m) => m,
            None if hard => UNBOUNDED_OUTPUT_CAP,
            None => 0,
        };
        let want = berth_meter::budget::worst_case(price, input, Some(max_out));
        let floor = price.cost(input, 1, 0);
        let r = ledger
            .reserve(scope, &meta.budgets, want, floor)
            .await
            .map_err(|r| GatewayError::BudgetExceeded {
                scope: r.scope,
                limit_usd: r.limit.as_usd(),
            })?;
        let full = want.is_some_and(|w| r.amount >= w);
        let cap = match (hard, full, req.max_tokens) {
            (false, _, _) => None,
            (true, true, Some(_)) => None,
            (true, true, None) => Some(UNBOUNDED_OUTPUT_CAP),
            (true, false, asked) => Some(
                u32::try_from(berth_meter::budget::affordable_output(
                    price, input, r.amount,
                ))
                .unwrap_or(u32::MAX)
                .min(asked.unwrap_or(UNBOUNDED_OUTPUT_CAP))
                .max(1),
            ),
        };
        Ok(Some((r, cap)))
    }

    fn price_of(&self, full_model: &str) -> Option<berth_meter::Price> {
        let provider = full_model.split_once('/')?.0;
        let family = self
            .platform
            .get(provider)
            .and_then(|p| p.kind.price_family());
        self.prices
            .lookup(full_model, family)
            .or_else(|| self.prices.lookup(full_model, None))
    }

    fn settle(
        &self,
        scope: &TenantScope,
        hold: Option<(Reservation, Option<u32>)>,
        actual: NanoUsd,
    ) {
        if let (Some(ledger), Some((r, _))) = (&self.budgets, hold) {
            ledger.settle(scope, r, actual);
        }
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
    /// model has no price: usage is still recorded in tokens).
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

    /// A non-streamed call, metered once on success.
    pub async fn chat(
        &self,
        scope: &TenantScope,
        meta: &CallMeta,
        req: &ChatRequest,
        route: &Route,
    ) -> Result<Answer, GatewayError> {
        let started = Instant::now();
        let hold = self.hold(scope, meta, req, route).await?;
        let capped;
        let req = match hold.as_ref().and_then(|h| h.1) {
            Some(cap) => {
                capped = ChatRequest {
                    max_tokens: Some(cap),
                    ..req.clone()
                };
                &capped
            }
            None => req,
        };
        let outcome = self
            .first_success(scope, meta, route, started, |target: Target| async move {
                match target.kind {
                    Kind::Mock => mock::chat(req, &target.model),
                    _ => upstream::chat(self.client(&target), &target, req).await,
                }
            })
            .await;
        let (mut response, target) = match outcome {
            Ok(x) => x,
            Err(e) => {
                // Failed calls are not charged.
                self.settle(scope, hold, NanoUsd(0));
                return Err(e);
            }
        };
        let (usage, estimated) = match response.usage {
            Some(u) => (u, false),
            None => (
                Usage {
                    input_tokens: berth_llm::tokens::estimate_request(req),
                    output_tokens: estimate_output(&response),
                    cached_input_tokens: 0,
                },
                true,
            ),
        };
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
        self.recorder.record(scope, ev).await;
        self.settle(scope, hold, cost);
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
        let hold = self.hold(scope, meta, req, route).await?;
        let capped;
        let req = match hold.as_ref().and_then(|h| h.1) {
            Some(cap) => {
                capped = ChatRequest {
                    max_tokens: Some(cap),
                    ..req.clone()
                };
                &capped
            }
            None => req,
        };
        let outcome = self
            .first_success(scope, meta, route, started, |target: Target| async move {
                match target.kind {
                    Kind::Mock => Ok(mock::stream(req, &target.model)),
                    _ => upstream::stream(self.client(&target), &target, req).await,
                }
            })
            .await;
        let (rx, target) = match outcome {
            Ok(x) => x,
            Err(e) => {
                self.settle(scope, hold, NanoUsd(0));
                return Err(e);
            }
        };
        let price = self
            .prices
            .lookup(&target.full_model, target.kind.price_family());
        let event = Self::event(meta, "llm", &target.provider, &target.full_model);
        let input_estimate = berth_llm::tokens::estimate_request(req);
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
        let stream = match (self.budgets.clone(), hold) {
            (Some(ledger), Some((reservation, _))) => {
                let scope = scope.clone();
                stream.on_charged(Box::new(move |cost| {
                    ledger.settle(&scope, reservation, cost)
                }))
            }
            _ => stream,
        };
        Ok(StreamAnswer {
            provider: target.provider,
            model: target.full_model,
            stream,
        })
    }

    /// Forwards an embeddings request to the routed provider (no fallbacks: vectors of
    /// different models are not interchangeable).
    pub async fn embeddings(
        &self,
        scope: &TenantScope,
        meta: &CallMeta,
        body: &serde_json::Value,
        full_model: &str,
        input_chars: u64,
    ) -> Result<EmbeddingAnswer, GatewayError> {
        let started = Instant::now();
        let target = self.resolve(scope, full_model).await?;
        let result = match target.kind {
            Kind::Mock => Ok(mock::embeddings(body, &target.full_model)),
            Kind::Anthropic => Err(GatewayError::BadRequest(format!(
                "provider '{}' offers no embeddings",
                target.provider
            ))),
            _ => upstream::embeddings(self.client(&target), &target, body).await,
        };
        let mut answer = match result {
            Ok(a) => a,
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
        };
        let (tokens, estimated) = match berth_llm::embeddings::usage(&answer) {
            Some(t) => (t, false),
            None => (input_chars.div_ceil(4).max(1), true),
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
        self.recorder.record(scope, ev).await;
        Ok(EmbeddingAnswer {
            body: answer,
            provider: target.provider.clone(),
            cost,
        })
    }
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
