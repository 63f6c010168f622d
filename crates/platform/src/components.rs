//! Component agents on the server: compiled at deploy, run by the worker like manifest
//! agents, with every import served for the run's tenant through the same paths as the
//! built-in loop: model calls through the gateway (metered, budgeted, attributed), tools
//! through the tool set behind both allow-lists, key-value data in the store, HTTP through
//! the egress guard. Each import becomes a trace step.

use crate::Platform;
use crate::budgets;
use crate::error::Error;
use async_trait::async_trait;
use berth_component::{
    AgentHost, Grants, HostError, HttpError, HttpRequest, HttpResponse, Limits, LogLevel,
};
use berth_core::clock::now_ms;
use berth_core::{Manifest, NanoUsd, Policy, TenantScope};
use berth_gateway::{CallMeta, GatewayError};
use berth_llm::{ChatRequest, ChatResponse, Message, ToolDef};
use berth_runtime::dlp::{Dlp, DlpHit, Verdict};
use berth_runtime::tools::{ToolCallCtx, ToolError, needs_approval, tool_allowed};
use berth_runtime::{LiveRun, RunEvent, RunUsage};
use berth_store::RunStep;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The component file of a bundle, compiled off the async threads (an interpreter-sized
/// component takes seconds); a deploy refuses a component that does not compile, naming
/// `component.path`.
pub async fn compile_from_bundle(
    state: &Platform,
    manifest: &Manifest,
    files: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Result<Vec<u8>, Error> {
    let Some(c) = &manifest.component else {
        return Ok(Vec::new());
    };
    let bytes = files.get(&c.path).cloned().ok_or_else(|| {
        Error::invalid(
            "invalid_component",
            "component.path",
            format!("the bundle has no file '{}'", c.path),
        )
    })?;
    let engine = state.components.clone();
    let path = c.path.clone();
    tokio::task::spawn_blocking(move || engine.compile(&bytes))
        .await
        .map_err(|e| Error::internal(&e))?
        .map_err(|e| {
            Error::invalid(
                "invalid_component",
                "component.path",
                format!("{path}: {}", e.message),
            )
        })
}

/// Loads the component of a deployed version: from memory when this process has run it
/// before, else from its bundle (and wasmtime's code cache makes that cheap after a restart).
pub async fn load(
    state: &Platform,
    scope: &TenantScope,
    agent: &str,
    version: i64,
    manifest: &Manifest,
) -> Result<berth_component::Loaded, Error> {
    let v = state
        .store
        .get_version(scope, agent, version)
        .await?
        .ok_or_else(|| {
            Error::not_found(
                "version_not_found",
                format!("agent '{agent}' has no version {version}"),
            )
        })?;
    let key = format!("{}|{}", scope.tenant_str(), v.digest);
    let cached = state.artifacts.get(&key);
    let artifact = match cached {
        Some(a) => a,
        None => {
            let gz = state
                .store
                .version_bundle(scope, agent, version)
                .await?
                .ok_or_else(|| {
                    Error::not_found(
                        "bundle_not_found",
                        "this version has no bundle with its component",
                    )
                })?;
            let bundle =
                crate::bundle::unpack_off_the_workers(agent, bytes::Bytes::from(gz)).await?;
            let a = Arc::new(compile_from_bundle(state, manifest, &bundle.files).await?);
            state.artifacts.insert(key, a.clone());
            a
        }
    };
    let engine = state.components.clone();
    tokio::task::spawn_blocking(move || engine.load(&artifact))
        .await
        .map_err(|e| Error::internal(&e))?
        .map_err(|e| Error::invalid("invalid_component", "component.path", e.message))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The most of an HTTP answer a component gets: the host buffers it before the component
/// sees it, and the destination may be anyone's.
const MAX_HTTP_RESPONSE_BYTES: usize = 16 << 20;

/// Reads at most `limit` bytes of `resp`'s body (refusing a declared larger one before
/// reading), failing the call beyond it.
async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, HttpError> {
    let too_large = || {
        HttpError::Failed(format!(
            "the response is larger than the limit of {} MiB",
            limit >> 20
        ))
    };
    if resp
        .content_length()
        .is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX))
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| HttpError::Failed(e.to_string()))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Serves one run's imports.
pub struct ServerHost {
    pub state: Platform,
    pub scope: TenantScope,
    pub manifest: Arc<Manifest>,
    pub policy: Arc<Policy>,
    pub meta: CallMeta,
    pub run_id: String,
    pub tenant_name: String,
    pub version: i64,
    pub history: Vec<Message>,
    pub live: Arc<LiveRun>,
    /// The tenant's data-loss rules, applied to what the component's calls give and get
    /// as they are to a built-in agent's.
    dlp: Option<Arc<Dlp>>,
    steps: Mutex<Vec<RunStep>>,
    next_seq: Mutex<i64>,
    usage: Mutex<RunUsage>,
    /// The first limit or rule the run hit (`max_steps`, `max_cost_usd`, a blocked
    /// answer): the run fails with it, whatever the component does with the refusal.
    stopped: Mutex<Option<Stopped>>,
    /// Data-loss hits, for the audit log.
    dlp_hits: Mutex<Vec<DlpHit>>,
}

/// Why the host ended a component's run: the run error's type, code and message.
pub type Stopped = (&'static str, &'static str, String);

impl ServerHost {
    #[allow(clippy::too_many_arguments)] // one run's context, given once
    pub fn new(
        state: Platform,
        scope: TenantScope,
        manifest: Arc<Manifest>,
        policy: Arc<Policy>,
        meta: CallMeta,
        run_id: String,
        tenant_name: String,
        version: i64,
        history: Vec<Message>,
        live: Arc<LiveRun>,
        dlp: Option<Arc<Dlp>>,
    ) -> Self {
        ServerHost {
            state,
            scope,
            manifest,
            policy,
            meta,
            run_id,
            tenant_name,
            version,
            history,
            live,
            dlp,
            steps: Mutex::new(Vec::new()),
            next_seq: Mutex::new(1),
            usage: Mutex::new(RunUsage::default()),
            stopped: Mutex::new(None),
            dlp_hits: Mutex::new(Vec::new()),
        }
    }

    /// Ends the run with `(kind, code, message)` (the first stop wins) and answers the
    /// component's call with the same refusal.
    fn stop(&self, kind: &'static str, code: &'static str, message: String) -> HostError {
        let mut s = lock(&self.stopped);
        if s.is_none() {
            *s = Some((kind, code, message.clone()));
        }
        HostError::new(code, message)
    }

    /// Why the host ended the run, if it did.
    pub fn stopped(&self) -> Option<Stopped> {
        lock(&self.stopped).clone()
    }

    /// The data-loss hits of the run so far.
    pub fn take_dlp_hits(&self) -> Vec<DlpHit> {
        std::mem::take(&mut *lock(&self.dlp_hits))
    }

    /// Applies the data-loss rules for `on` (`tool_args`, `tool_results`, `llm_output`),
    /// tracing and keeping a hit by detector name only.
    async fn screen(&self, on: &str, text: &str) -> Verdict {
        let Some(dlp) = &self.dlp else {
            return Verdict::Clean(text.to_owned());
        };
        let (verdict, hit) = dlp.screen_on(on, text).await;
        if let Some(hit) = hit {
            self.step("dlp", hit.step_data());
            lock(&self.dlp_hits).push(hit);
        }
        verdict
    }

    fn step(&self, kind: &str, data: Value) {
        let mut seq = lock(&self.next_seq);
        let step = RunStep {
            seq: *seq,
            kind: kind.to_owned(),
            at_ms: now_ms(),
            data: data.to_string(),
        };
        self.live.keep_step(&step);
        lock(&self.steps).push(step);
        *seq += 1;
    }

    /// The steps and usage of the run so far.
    pub fn take(&self) -> (Vec<RunStep>, RunUsage) {
        (std::mem::take(&mut *lock(&self.steps)), *lock(&self.usage))
    }

    /// The limits and grants of the run, from its manifest.
    pub fn limits_and_grants(manifest: &Manifest) -> Option<(Limits, Grants)> {
        Some((
            Limits::from_manifest(manifest)?,
            Grants::from_manifest(manifest),
        ))
    }
}

fn gateway_error(e: &GatewayError) -> HostError {
    match e {
        GatewayError::BudgetExceeded { .. } => HostError::new("budget_exceeded", e.to_string()),
        GatewayError::Route(_) => HostError::denied(e.to_string()),
        _ => HostError::failed(e.to_string()),
    }
}

#[async_trait]
impl AgentHost for ServerHost {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, HostError> {
        if let Some(stopped) = self.stopped() {
            return Err(HostError::new(stopped.1, stopped.2));
        }
        let limits = &self.manifest.limits;
        let (calls, spent) = {
            let u = lock(&self.usage);
            (u.llm_calls, u.cost_nano)
        };
        // The same limits as a built-in agent's: model calls count as its steps, and each
        // call may cost at most what is left of `max_cost_usd`.
        if calls >= u64::from(limits.max_steps) {
            let msg = format!(
                "the run reached its max_steps of {} model calls",
                limits.max_steps
            );
            return Err(self.stop("invalid_request", "max_steps", msg));
        }
        let max_cost = limits.max_cost_usd.map(NanoUsd::from_usd);
        let over_cost =
            |limit: NanoUsd| format!("the run reached its max_cost_usd of {}", limit.as_usd());
        let meta = CallMeta {
            cost_limit: max_cost.map(|l| NanoUsd((l.0 - spent).max(0))),
            ..self.meta.clone()
        };
        let route = berth_gateway::plan(&self.policy, &request.model, &self.meta.tags)
            .map_err(|e| gateway_error(&e.into()))?;
        let started = Instant::now();
        let asked = json!({"system": request.system, "messages": request.messages});
        let answer = match self
            .state
            .gateway
            .chat(&self.scope, &meta, request, &route)
            .await
        {
            Ok(a) => a,
            Err(GatewayError::BudgetExceeded { scope, .. })
                if scope == berth_gateway::RUN_BUDGET_SCOPE =>
            {
                let limit = max_cost.unwrap_or_default();
                return Err(self.stop("budget_exceeded", "max_cost_exceeded", over_cost(limit)));
            }
            Err(e) => return Err(gateway_error(&e)),
        };
        let spent = {
            let mut u = lock(&self.usage);
            u.llm_calls += 1;
            u.input_tokens += answer.usage.input_tokens;
            u.output_tokens += answer.usage.output_tokens;
            u.cost_nano += answer.cost.0;
            self.live.set_usage(u.to_json());
            u.cost_nano
        };
        let mut answer = answer;
        for part in &mut answer.response.content {
            if let berth_llm::Part::Text(t) = part {
                match self.screen("llm_output", t).await {
                    Verdict::Clean(_) => {}
                    Verdict::Redacted { text, .. } => *t = text,
                    Verdict::Blocked { detectors } => {
                        let msg = format!(
                            "the model's answer was blocked by the data-loss rules ({})",
                            detectors.join(", ")
                        );
                        return Err(self.stop("permission", "dlp_blocked", msg));
                    }
                }
            }
        }
        if let Some(limit) = max_cost
            && spent >= limit.0
        {
            // Paid for and traced below; the run ends here, as a built-in agent's would.
            self.stop("budget_exceeded", "max_cost_exceeded", over_cost(limit));
        }
        let text = answer.response.text();
        if !text.is_empty() {
            self.live
                .emit(RunEvent::new("message.delta", json!({"text": text})));
        }
        self.step(
            "llm_call",
            json!({"model": answer.model, "provider": answer.provider,
                   "request": asked,
                   "response": answer.response.content, "input_tokens": answer.usage.input_tokens,
                   "output_tokens": answer.usage.output_tokens, "cost_usd": answer.cost.as_usd(),
                   "latency_ms": started.elapsed().as_millis() as u64}),
        );
        Ok(answer.response)
    }

    async fn list_tools(&self) -> Vec<ToolDef> {
        self.state
            .runner
            .tools
            .list(&self.scope)
            .await
            .into_iter()
            .filter(|t| tool_allowed(&self.manifest, &self.policy, &t.name))
            .collect()
    }

    async fn call_tool(&self, name: &str, arguments: &str) -> Result<String, HostError> {
        if !tool_allowed(&self.manifest, &self.policy, name) {
            return Err(HostError::denied(format!(
                "tool '{name}' is not available to this agent"
            )));
        }
        // A component cannot be paused mid-call, so a tool that waits for a human is
        // refused with a code the agent can act on.
        if needs_approval(&self.manifest, &self.policy, name) {
            return Err(HostError::new(
                "approval_required",
                format!(
                    "tool '{name}' needs a human approval, which component agents cannot wait for"
                ),
            ));
        }
        if let Some(stopped) = self.stopped() {
            return Err(HostError::new(stopped.1, stopped.2));
        }
        // The rules on arguments run before anything shows or keeps them.
        let arguments = match self.screen("tool_args", arguments).await {
            Verdict::Clean(a) | Verdict::Redacted { text: a, .. } => a,
            Verdict::Blocked { detectors } => {
                let data = json!({"tool": name, "arguments": "[BLOCKED]", "executed": false,
                                  "error": format!("blocked by the data-loss rules ({})", detectors.join(", "))});
                self.live.emit(RunEvent::new("tool.result", data.clone()));
                self.step("tool_call", data);
                return Err(HostError::new(
                    "dlp_blocked",
                    format!(
                        "the arguments of '{name}' were blocked by the data-loss rules ({})",
                        detectors.join(", ")
                    ),
                ));
            }
        };
        let arguments = arguments.as_str();
        let args: Value =
            serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.to_owned()));
        self.live.emit(RunEvent::new(
            "tool.call",
            json!({"tool": name, "arguments": args}),
        ));
        let started = Instant::now();
        let ctx = ToolCallCtx {
            scope: &self.scope,
            agent: &self.manifest.name,
            run_id: &self.run_id,
            key_id: self.meta.key_id.as_deref(),
        };
        let result = self.state.runner.tools.call(&ctx, name, arguments).await;
        let mut data = json!({"tool": name, "arguments": args, "latency_ms": started.elapsed().as_millis() as u64, "executed": true});
        let result = match result {
            Ok(text) => match self.screen("tool_results", &text).await {
                Verdict::Clean(t) | Verdict::Redacted { text: t, .. } => Ok(t),
                Verdict::Blocked { detectors } => Err(ToolError::Failed(format!(
                    "the result of '{name}' was blocked by the data-loss rules ({})",
                    detectors.join(", ")
                ))),
            },
            Err(e) => Err(e),
        };
        let out = match result {
            Ok(text) => {
                data["result"] = json!(text);
                Ok(text)
            }
            Err(ToolError::NotFound(n)) => {
                data["error"] = json!(format!("no tool named '{n}'"));
                data["executed"] = json!(false);
                Err(HostError::new("not_found", format!("no tool named '{n}'")))
            }
            Err(ToolError::Failed(m)) => {
                data["error"] = json!(m);
                Err(HostError::failed(m))
            }
        };
        lock(&self.usage).tool_calls += u64::from(data["executed"] == true);
        self.live.emit(RunEvent::new("tool.result", data.clone()));
        self.step("tool_call", data);
        out
    }

    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.state
            .store
            .kv_get(&self.scope, &self.manifest.name, key)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "kv read failed");
                HostError::failed("the key-value store is unavailable")
            })
    }

    async fn kv_set(&self, key: &str, value: Vec<u8>) -> Result<(), HostError> {
        self.state
            .store
            .kv_set(&self.scope, &self.manifest.name, key, &value)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "kv write failed");
                HostError::failed("the key-value store is unavailable")
            })
    }

    async fn kv_delete(&self, key: &str) -> Result<(), HostError> {
        self.state
            .store
            .kv_delete(&self.scope, &self.manifest.name, key)
            .await
            .map_err(|_| HostError::failed("the key-value store is unavailable"))
    }

    async fn history(&self) -> Vec<Message> {
        let keep = usize::try_from(self.manifest.memory.history).unwrap_or(usize::MAX);
        self.history[self.history.len().saturating_sub(keep)..].to_vec()
    }

    fn log(&self, level: LogLevel, message: &str) {
        let level = match level {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        };
        let data = json!({"level": level, "message": message});
        self.live.emit(RunEvent::new("log", data.clone()));
        self.step("log", data);
    }

    async fn http(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        // The egress guard refuses private, loopback and metadata addresses, also after DNS
        // resolution; `allowed_hosts` was checked by the host function already.
        self.state
            .egress
            .check_url(request.url.as_str())
            .map_err(|e| HttpError::Denied(e.to_string()))?;
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| HttpError::Failed("bad method".into()))?;
        let client = self.state.egress.client(Duration::from_secs(30));
        let mut req = client
            .request(method, request.url.as_str())
            .body(request.body);
        for (k, v) in &request.headers {
            req = req.header(k, v);
        }
        let started = Instant::now();
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() && e.to_string().contains("egress") {
                HttpError::Denied("the destination is not allowed".into())
            } else {
                HttpError::Failed(e.to_string())
            }
        })?;
        let status = resp.status().as_u16();
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let body = read_capped(resp, MAX_HTTP_RESPONSE_BYTES).await?;
        self.step(
            "http",
            json!({"method": request.method, "url": request.url.as_str(), "status": status,
                   "bytes": body.len(), "latency_ms": started.elapsed().as_millis() as u64}),
        );
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }

    fn config(&self, key: &str) -> Option<String> {
        let c = self.manifest.component.as_ref()?;
        if let Some(v) = c.config.get(key) {
            return Some(v.clone());
        }
        match key {
            "system" if !self.manifest.prompt.system.is_empty() => Some(
                self.manifest
                    .prompt
                    .system
                    .replace("{{tenant.name}}", &self.tenant_name)
                    .replace("{{agent.name}}", &self.manifest.name)
                    .replace("{{agent.version}}", &self.version.to_string()),
            ),
            "agent.name" => Some(self.manifest.name.clone()),
            "agent.version" => Some(self.version.to_string()),
            "tenant.name" => Some(self.tenant_name.clone()),
            _ => None,
        }
    }
}

/// The budgets of a component run's model calls (as the built-in loop's).
pub fn call_meta(
    state: &Platform,
    plan: &str,
    policy: &Policy,
    run: &berth_store::RunRecord,
) -> CallMeta {
    CallMeta {
        key_id: run.key_id.clone(),
        agent: Some(run.agent.clone()),
        tags: Vec::new(),
        run_id: Some(run.id.clone()),
        agent_version: Some(run.version),
        budgets: budgets::for_tenant(state, plan, policy, Some(&run.agent), run.key_id.as_deref()),
        cost_limit: None,
    }
}
