//! The built-in loop of manifest agents: ask the model (through the gateway, streamed, so
//! followers see text as it comes), run the tool calls it asks for (through the one tool
//! interface, behind the allow-lists and the approval gate), and stop on a final answer, a
//! limit, a cancel, or a call that must wait for a human. A paused run leaves a
//! [`Checkpoint`] from which it resumes once every decision is in.

use crate::events::{LiveRun, RunEvent, tool_call_event, tool_result_event};
use crate::tools::{ToolCallCtx, ToolError, ToolHost, needs_approval, tool_allowed};
use berth_core::clock::{now_ms, parse_duration};
use berth_core::{Id, IdKind, Manifest, NanoUsd, Policy, TenantScope};
use berth_gateway::{CallMeta, Gateway, GatewayError, Route};
use berth_llm::{ChatRequest, ChatResponse, FinishReason, Message, Part, Role, StreamEvent};
use berth_store::{ApprovalRecord, RunStep};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

mod calls;
use calls::{answer_calls, parse_args};

/// What a run has consumed so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub llm_calls: u64,
    pub tool_calls: u64,
    pub cost_nano: i64,
    pub compute_ms: u64,
}

impl RunUsage {
    /// The run object's `usage`.
    pub fn to_json(&self) -> Value {
        json!({"input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "llm_calls": self.llm_calls,
               "tool_calls": self.tool_calls, "cost_usd": NanoUsd(self.cost_nano).as_usd(), "compute_ms": self.compute_ms})
    }
}

/// A tool call of the current model turn that has no result yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingCall {
    pub call_id: String,
    pub name: String,
    pub arguments: String,
    /// Set when the call waits for a human decision.
    pub approval_id: Option<String>,
    /// The data-loss rules blocked its arguments (now `"[BLOCKED]"`): it is answered with
    /// an error, never executed, and never waits for a human.
    #[serde(default)]
    pub blocked: bool,
}

/// What a call whose arguments were blocked shows instead of them.
const BLOCKED_ARGS: &str = "\"[BLOCKED]\"";

/// Where a run stands between two executions (paused for approval).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The conversation as the model sees it (history tail, input, turns so far).
    pub messages: Vec<Message>,
    /// What the thread gains when the run ends.
    pub new_messages: Vec<Message>,
    /// Results already known for the current turn's calls.
    pub results: Vec<Part>,
    /// The current turn's calls still to answer, in order.
    pub pending: Vec<PendingCall>,
    pub usage: RunUsage,
    pub turns: u32,
    /// Time spent executing (waiting for a human does not count against `timeout`).
    pub elapsed_ms: u64,
    pub next_seq: i64,
}

/// A human's answer to an approval.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// `approved`, `denied`, `expired` or `cancelled`.
    pub status: String,
    pub reason: Option<String>,
    pub decided_by: Option<String>,
}

/// How a run begins this execution.
pub enum Begin {
    Fresh {
        history: Vec<Message>,
        input: Vec<Message>,
    },
    Resume {
        checkpoint: Checkpoint,
        decisions: HashMap<String, Decision>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Succeeded,
    Failed,
    Cancelled,
    WaitingApproval,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::WaitingApproval => "waiting_approval",
        }
    }
}

/// How this execution of a run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    pub output: Option<String>,
    /// `{"type", "code", "message"}` of a failed run.
    pub error: Option<Value>,
    pub usage: RunUsage,
    /// The steps of this execution (earlier ones are stored already).
    pub steps: Vec<RunStep>,
    /// What the thread gains (only when the run ended).
    pub new_messages: Vec<Message>,
    /// Set when the run waits for approval.
    pub checkpoint: Option<Checkpoint>,
    pub approvals: Vec<ApprovalRecord>,
    /// Data-loss rule hits: (where, detectors, action), for the audit log.
    pub dlp_hits: Vec<crate::dlp::DlpHit>,
}

/// What one run needs to know.
pub struct RunSpec<'a> {
    pub scope: &'a TenantScope,
    pub meta: CallMeta,
    pub policy: &'a Policy,
    pub manifest: &'a Manifest,
    pub tenant_name: &'a str,
    pub version: i64,
    pub run_id: &'a str,
    pub key_id: Option<&'a str>,
    /// How long an approval waits for a decision before it expires.
    pub approval_timeout: Duration,
    /// The tenant's data-loss rules, if its policy has any.
    pub dlp: Option<&'a std::sync::Arc<crate::dlp::Dlp>>,
}

fn render_prompt(template: &str, spec: &RunSpec<'_>) -> String {
    template
        .replace("{{tenant.name}}", spec.tenant_name)
        .replace("{{agent.name}}", &spec.manifest.name)
        .replace("{{agent.version}}", &spec.version.to_string())
}

/// A run's state while it executes.
struct Exec<'a> {
    spec: &'a RunSpec<'a>,
    live: &'a LiveRun,
    cp: Checkpoint,
    steps: Vec<RunStep>,
    started: Instant,
    dlp_hits: Vec<crate::dlp::DlpHit>,
}

enum Stop {
    Failed(&'static str, &'static str, String),
    Cancelled,
}

impl Exec<'_> {
    /// Applies the data-loss rules for `on` (`tool_args`, `tool_results`, `llm_output`);
    /// a hit is traced and kept for the audit log, by detector name only.
    async fn dlp(&mut self, on: &str, text: &str) -> crate::dlp::Verdict {
        let Some(dlp) = self.spec.dlp else {
            return crate::dlp::Verdict::Clean(text.to_owned());
        };
        let (verdict, hit) = dlp.screen_on(on, text).await;
        if let Some(hit) = hit {
            self.step("dlp", hit.step_data());
            self.dlp_hits.push(hit);
        }
        verdict
    }

    fn step(&mut self, kind: &str, data: Value) {
        let step = RunStep {
            seq: self.cp.next_seq,
            kind: kind.to_owned(),
            at_ms: now_ms(),
            data: data.to_string(),
        };
        self.live.keep_step(&step);
        self.steps.push(step);
        self.cp.next_seq += 1;
    }

    fn elapsed(&self) -> Duration {
        Duration::from_millis(self.cp.elapsed_ms) + self.started.elapsed()
    }

    fn finish(mut self, status: Status, output: Option<String>, error: Option<Value>) -> Outcome {
        self.cp.elapsed_ms = u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX);
        Outcome {
            status,
            output,
            error,
            usage: self.cp.usage,
            steps: self.steps,
            new_messages: self.cp.new_messages,
            checkpoint: None,
            approvals: Vec::new(),
            dlp_hits: self.dlp_hits,
        }
    }

    fn stop(mut self, stop: Stop) -> Outcome {
        match stop {
            Stop::Cancelled => self.finish(Status::Cancelled, None, None),
            Stop::Failed(kind, code, message) => {
                self.step("error", json!({"code": code, "message": message}));
                let error = json!({"type": kind, "code": code, "message": message});
                self.finish(Status::Failed, None, Some(error))
            }
        }
    }

    fn timeout_stop(&self) -> Stop {
        Stop::Failed(
            "timeout",
            "timeout",
            format!(
                "the run took longer than its {} limit",
                self.spec.manifest.limits.timeout
            ),
        )
    }
}

/// Runs (or resumes) a manifest agent until it ends or must wait for a human.
pub async fn run_builtin(
    gateway: &Gateway,
    tools: &dyn ToolHost,
    spec: &RunSpec<'_>,
    live: &LiveRun,
    begin: Begin,
    next_seq: i64,
) -> Outcome {
    let m = spec.manifest;
    let (cp, decisions) = match begin {
        Begin::Fresh { history, input } => {
            let keep = usize::try_from(m.memory.history).unwrap_or(usize::MAX);
            let mut messages = history[history.len().saturating_sub(keep)..].to_vec();
            // A cut through a tool exchange would leave results without their calls.
            while messages.first().is_some_and(|m| m.role != Role::User) {
                messages.remove(0);
            }
            messages.extend(input.iter().cloned());
            let cp = Checkpoint {
                messages,
                new_messages: input,
                results: Vec::new(),
                pending: Vec::new(),
                usage: RunUsage::default(),
                turns: 0,
                elapsed_ms: 0,
                next_seq,
            };
            (cp, HashMap::new())
        }
        Begin::Resume {
            checkpoint,
            decisions,
        } => (checkpoint, decisions),
    };
    let mut ex = Exec {
        spec,
        live,
        cp,
        steps: Vec::new(),
        started: Instant::now(),
        dlp_hits: Vec::new(),
    };
    let timeout = parse_duration(&m.limits.timeout).unwrap_or(Duration::from_secs(60));
    let max_cost = m.limits.max_cost_usd.map(NanoUsd::from_usd);
    let system = (!m.prompt.system.is_empty()).then(|| render_prompt(&m.prompt.system, spec));
    let route = match plan_route(spec) {
        Ok(r) => r,
        Err(e) => return ex.stop(Stop::Failed("invalid_request", e.code(), e.to_string())),
    };
    let offered: Vec<berth_llm::ToolDef> = if m.tools.use_.is_empty() {
        Vec::new()
    } else {
        tools
            .list(spec.scope)
            .await
            .into_iter()
            .filter(|t| tool_allowed(m, spec.policy, &t.name))
            .collect()
    };
    let mut decisions = decisions;
    let screened = spec
        .dlp
        .is_some_and(|d| d.on_llm_output != berth_core::policy::DlpAction::Allow);
    loop {
        // Answer the current turn's calls, or pause if one of them waits for a human.
        if !ex.cp.pending.is_empty() {
            match answer_calls(&mut ex, tools, &offered, &mut decisions).await {
                Ok(true) => {}
                Ok(false) => return pause(ex),
                Err(stop) => return ex.stop(stop),
            }
        }
        if ex.cp.turns >= m.limits.max_steps {
            let msg = format!(
                "the run reached its max_steps of {} without a final answer",
                m.limits.max_steps
            );
            return ex.stop(Stop::Failed("invalid_request", "max_steps", msg));
        }
        let Some(remaining) = timeout.checked_sub(ex.elapsed()) else {
            let stop = ex.timeout_stop();
            return ex.stop(stop);
        };
        let req = ChatRequest {
            model: m.model.name.clone(),
            system: system.clone(),
            messages: ex.cp.messages.clone(),
            tools: offered.clone(),
            max_tokens: m.model.max_tokens,
            temperature: m.model.temperature,
            stream: true,
            include_usage: true,
            ..ChatRequest::default()
        };
        // Each call may cost at most what is left of `max_cost_usd`, so no turn overshoots it.
        let cost_left = max_cost.map(|l| NanoUsd((l.0 - ex.cp.usage.cost_nano).max(0)));
        let call_started = Instant::now();
        let turn = tokio::select! {
            biased;
            _ = live.cancel.cancelled() => return ex.stop(Stop::Cancelled),
            r = tokio::time::timeout(remaining, model_turn(gateway, spec, &req, &route, live, screened, cost_left)) => r,
        };
        let turn = match turn {
            Err(_) => {
                let stop = ex.timeout_stop();
                return ex.stop(stop);
            }
            Ok(Err((e, spent))) => {
                ex.cp.usage.llm_calls += u64::from(spent.is_some());
                if let Some(t) = spent {
                    add_usage(&mut ex.cp.usage, &t);
                }
                let stop = match &e {
                    GatewayError::BudgetExceeded { scope, .. }
                        if scope == berth_gateway::RUN_BUDGET_SCOPE =>
                    {
                        let msg = format!(
                            "what is left of the run's max_cost_usd of {} cannot pay for another model call",
                            max_cost.unwrap_or_default().as_usd()
                        );
                        Stop::Failed("budget_exceeded", "max_cost_exceeded", msg)
                    }
                    GatewayError::BudgetExceeded { .. } => {
                        Stop::Failed("budget_exceeded", e.code(), e.to_string())
                    }
                    GatewayError::BudgetUnavailable { .. } => {
                        Stop::Failed("unavailable", e.code(), e.to_string())
                    }
                    GatewayError::Unpriced { .. } => {
                        Stop::Failed("invalid_request", e.code(), e.to_string())
                    }
                    _ => Stop::Failed("upstream", e.code(), e.to_string()),
                };
                return ex.stop(stop);
            }
            Ok(Ok(t)) => t,
        };
        ex.cp.turns += 1;
        ex.cp.usage.llm_calls += 1;
        add_usage(&mut ex.cp.usage, &turn);
        live.set_usage(ex.cp.usage.to_json());
        let mut content = turn.response.content.clone();
        // Tool calls' arguments are screened here, as they come from the model, before
        // anything keeps or shows them (trace, thread, approval, events), not only before
        // the tool is called: a call that waits for a human would show them first.
        let mut blocked_calls = Vec::new();
        for part in &mut content {
            match part {
                Part::Text(t) => match ex.dlp("llm_output", t).await {
                    crate::dlp::Verdict::Clean(_) => {}
                    crate::dlp::Verdict::Redacted { text, .. } => *t = text,
                    crate::dlp::Verdict::Blocked { detectors } => {
                        let msg = format!(
                            "the model's answer was blocked by the data-loss rules ({})",
                            detectors.join(", ")
                        );
                        return ex.stop(Stop::Failed("permission", "dlp_blocked", msg));
                    }
                },
                Part::ToolCall { id, arguments, .. } => {
                    match ex.dlp("tool_args", arguments).await {
                        crate::dlp::Verdict::Clean(_) => {}
                        crate::dlp::Verdict::Redacted { text, .. } => *arguments = text,
                        crate::dlp::Verdict::Blocked { .. } => {
                            *arguments = BLOCKED_ARGS.to_owned();
                            blocked_calls.push(id.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        let request_messages = serde_json::to_value(&req.messages).unwrap_or(Value::Null);
        // The trace keeps the answer as the rules let it through.
        let response = serde_json::to_value(&content).unwrap_or(Value::Null);
        ex.step(
            "llm_call",
            json!({"model": turn.model, "provider": turn.provider, "request": {"system": req.system, "messages": request_messages},
                   "response": response, "input_tokens": turn.response.usage.map(|u| u.input_tokens).unwrap_or(0),
                   "output_tokens": turn.response.usage.map(|u| u.output_tokens).unwrap_or(0),
                   "cost_usd": turn.cost.as_usd(), "latency_ms": call_started.elapsed().as_millis() as u64}),
        );
        if screened {
            let text: String = content
                .iter()
                .filter_map(|p| match p {
                    Part::Text(t) => Some(t.as_str()),
                    _ => None,
                })
                .collect();
            if !text.is_empty() {
                live.emit(RunEvent::new("message.delta", json!({"text": text})));
            }
        }
        let reply = Message {
            role: Role::Assistant,
            content: content.clone(),
        };
        if !reply.content.is_empty() {
            ex.cp.messages.push(reply.clone());
            ex.cp.new_messages.push(reply);
        }
        // An answer cut short because what was left of max_cost_usd paid for no more is
        // the run hitting its limit too (the manifest's own max_tokens did not cut it).
        let cut_by_cost = turn.capped_by_cost_limit && turn.response.finish == FinishReason::Length;
        if let Some(limit) = max_cost
            && (NanoUsd(ex.cp.usage.cost_nano) > limit || cut_by_cost)
        {
            let msg = format!(
                "the run cost more than its max_cost_usd of {}",
                limit.as_usd()
            );
            return ex.stop(Stop::Failed("budget_exceeded", "max_cost_exceeded", msg));
        }
        let calls: Vec<PendingCall> = content
            .iter()
            .filter_map(|p| match p {
                Part::ToolCall {
                    id,
                    name,
                    arguments,
                } => Some(PendingCall {
                    call_id: id.clone(),
                    name: name.clone(),
                    arguments: arguments.clone(),
                    approval_id: None,
                    blocked: blocked_calls.contains(id),
                }),
                _ => None,
            })
            .collect();
        if calls.is_empty() {
            let text: String = content
                .iter()
                .filter_map(|p| match p {
                    Part::Text(t) => Some(t.as_str()),
                    _ => None,
                })
                .collect();
            return ex.finish(Status::Succeeded, Some(text), None);
        }
        ex.cp.pending = calls;
    }
}

fn plan_route(spec: &RunSpec<'_>) -> Result<Route, GatewayError> {
    let m = spec.manifest;
    let mut route = berth_gateway::plan(spec.policy, &m.model.name, &spec.meta.tags)?;
    for f in &m.model.fallbacks {
        if let Ok(extra) = berth_gateway::plan(spec.policy, f, &[]) {
            for t in extra.targets {
                if !route.targets.contains(&t) {
                    route.targets.push(t);
                }
            }
        }
    }
    Ok(route)
}

fn add_usage(u: &mut RunUsage, t: &Turn) {
    if let Some(x) = t.response.usage {
        u.input_tokens += x.input_tokens;
        u.output_tokens += x.output_tokens;
    }
    u.cost_nano += t.cost.0;
}

struct Turn {
    response: ChatResponse,
    provider: String,
    model: String,
    cost: NanoUsd,
    /// Its output was capped to what was left of the run's max_cost_usd.
    capped_by_cost_limit: bool,
}

/// Followers get the answer's text in pieces of at least this many bytes…
const DELTA_BYTES: usize = 256;
/// …or after this long, whichever comes first.
const DELTA_WAIT: Duration = Duration::from_millis(20);

/// One streamed model call, its text forwarded to the run's followers as it arrives and its
/// tool calls assembled. A broken stream is still charged (the gateway meters it); what it
/// cost is returned with the error.
async fn model_turn(
    gateway: &Gateway,
    spec: &RunSpec<'_>,
    req: &ChatRequest,
    route: &Route,
    live: &LiveRun,
    screened: bool,
    cost_limit: Option<NanoUsd>,
) -> Result<Turn, (GatewayError, Option<Turn>)> {
    let limited;
    let meta = match cost_limit {
        None => &spec.meta,
        Some(_) => {
            limited = CallMeta {
                cost_limit,
                ..spec.meta.clone()
            };
            &limited
        }
    };
    let answer = gateway
        .chat_stream(spec.scope, meta, req, route)
        .await
        .map_err(|e| (e, None))?;
    let mut stream = answer.stream;
    let mut text = String::new();
    let mut parts: Vec<Part> = Vec::new();
    // Tool calls by their stream index: (id, name, arguments).
    let mut calls: Vec<(u32, String, String, String)> = Vec::new();
    let mut finish = FinishReason::Stop;
    let mut failure = None;
    // Text for the run's followers, sent in pieces of at least `DELTA_BYTES` or after at
    // most `DELTA_WAIT`: an event per token would keep a few hundred bytes per token of the
    // answer in the run's event log.
    let mut unsent = String::new();
    let mut send_by: Option<tokio::time::Instant> = None;
    let flush = |unsent: &mut String| {
        if !unsent.is_empty() {
            live.emit(RunEvent::new(
                "message.delta",
                json!({"text": std::mem::take(unsent)}),
            ));
        }
    };
    loop {
        let ev = match send_by {
            Some(at) => tokio::select! {
                ev = stream.next() => ev,
                () = tokio::time::sleep_until(at) => {
                    flush(&mut unsent);
                    send_by = None;
                    continue;
                }
            },
            None => stream.next().await,
        };
        let Some(ev) = ev else { break };
        match ev {
            Err(e) => {
                failure = Some(e);
                break;
            }
            Ok(StreamEvent::TextDelta { text: t }) => {
                // Screened output is shown once it has been checked, not as it comes.
                if !screened {
                    unsent.push_str(&t);
                    if unsent.len() >= DELTA_BYTES {
                        flush(&mut unsent);
                        send_by = None;
                    } else if send_by.is_none() {
                        send_by = Some(tokio::time::Instant::now() + DELTA_WAIT);
                    }
                }
                text.push_str(&t);
            }
            Ok(StreamEvent::ToolCallStart { index, id, name }) => {
                flush(&mut unsent);
                send_by = None;
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                calls.push((index, id, name, String::new()));
            }
            Ok(StreamEvent::ToolCallDelta { index, arguments }) => {
                if let Some(c) = calls.iter_mut().find(|c| c.0 == index) {
                    c.3.push_str(&arguments);
                }
            }
            Ok(StreamEvent::Finish { reason }) => finish = reason,
            Ok(StreamEvent::Start { .. } | StreamEvent::Usage { .. }) => {}
        }
    }
    flush(&mut unsent);
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    for (_, id, name, arguments) in calls {
        let arguments = if arguments.trim().is_empty() {
            "{}".to_owned()
        } else {
            arguments
        };
        parts.push(Part::ToolCall {
            id,
            name,
            arguments,
        });
    }
    let (usage, _) = stream.usage();
    let turn = Turn {
        response: ChatResponse {
            id: String::new(),
            model: answer.model.clone(),
            content: parts,
            finish,
            usage: Some(usage),
        },
        provider: answer.provider,
        model: answer.model,
        cost: stream.cost(),
        capped_by_cost_limit: answer.capped_by_cost_limit,
    };
    match failure {
        Some(e) => Err((e, Some(turn))),
        None => Ok(turn),
    }
}

/// Creates the approvals the pending calls still need and stops this execution.
fn pause(mut ex: Exec<'_>) -> Outcome {
    let spec = ex.spec;
    let expires =
        now_ms() + i64::try_from(spec.approval_timeout.as_millis()).unwrap_or(i64::MAX / 2);
    let mut approvals = Vec::new();
    let mut pending = std::mem::take(&mut ex.cp.pending);
    for call in &mut pending {
        if call.approval_id.is_some()
            || call.blocked
            || !needs_approval(spec.manifest, spec.policy, &call.name)
        {
            continue;
        }
        let id = Id::new(IdKind::Approval).into_string();
        call.approval_id = Some(id.clone());
        let a = ApprovalRecord {
            id: id.clone(),
            run_id: Some(spec.run_id.to_owned()),
            agent: spec.manifest.name.clone(),
            tool: call.name.clone(),
            call_id: call.call_id.clone(),
            arguments: call.arguments.clone(),
            key_id: spec.key_id.map(str::to_owned),
            status: "pending".to_owned(),
            reason: None,
            decided_by: None,
            created_at_ms: now_ms(),
            expires_at_ms: expires,
            decided_at_ms: None,
            // A run's approvals are owned by whoever started the run (`RunRecord::started_by`).
            started_by: None,
        };
        let shown = json!({"approval_id": id, "tool": call.name, "arguments": parse_args(&call.arguments),
                           "status": "pending", "expires_at_ms": expires});
        ex.step("approval", shown.clone());
        ex.live.emit(RunEvent::new("approval.required", shown));
        approvals.push(a);
    }
    ex.cp.pending = pending;
    ex.cp.elapsed_ms = u64::try_from(ex.elapsed().as_millis()).unwrap_or(u64::MAX);
    let usage = ex.cp.usage;
    Outcome {
        status: Status::WaitingApproval,
        output: None,
        error: None,
        usage,
        steps: ex.steps,
        new_messages: Vec::new(),
        checkpoint: Some(ex.cp),
        approvals,
        dlp_hits: ex.dlp_hits,
    }
}
