//! The run engine: which version serves a run, and the built-in agent loop for manifest
//! agents (model turns through the gateway, limits on steps, time and cost, every step
//! traced).

use berth_core::clock::{now_ms, parse_duration};
use berth_core::{Manifest, NanoUsd, Policy, TenantScope};
use berth_gateway::{CallMeta, Gateway, GatewayError};
use berth_llm::{ChatRequest, Message, Part, Role};
use berth_store::{RunStep, Traffic};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Picks the version of a run: the request's own (already authorised), the caller key's
/// pin, the thread's version (a thread keeps the version it started on), then the split.
pub fn choose_version(
    traffic: &Traffic,
    requested: Option<i64>,
    key_id: Option<&str>,
    thread_version: Option<i64>,
) -> Option<i64> {
    if let Some(v) = requested {
        return Some(v);
    }
    if let Some(p) = key_id.and_then(|k| traffic.pins.iter().find(|p| p.key == k)) {
        return Some(p.version);
    }
    if thread_version.is_some() {
        return thread_version;
    }
    let total: u32 = traffic.split.iter().map(|s| s.weight).sum();
    if total == 0 {
        return None;
    }
    let mut roll = rand::Rng::gen_range(&mut rand::thread_rng(), 0..total);
    for s in &traffic.split {
        if roll < s.weight {
            return Some(s.version);
        }
        roll -= s.weight;
    }
    traffic.split.last().map(|s| s.version)
}

/// How a run ended, and what it cost.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: &'static str,
    pub output: Option<String>,
    /// `{"type", "code", "message"}` of a failed run.
    pub error: Option<Value>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub llm_calls: u64,
    pub tool_calls: u64,
    pub cost: NanoUsd,
    pub steps: Vec<RunStep>,
    /// The turns to append to the thread (the input and the answer).
    pub new_messages: Vec<Message>,
}

impl Outcome {
    pub fn usage_json(&self, compute_ms: u64) -> Value {
        json!({"input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "llm_calls": self.llm_calls,
               "tool_calls": self.tool_calls, "cost_usd": self.cost.as_usd(), "compute_ms": compute_ms})
    }
}

/// What a built-in run needs to know.
pub struct RunContext<'a> {
    pub scope: &'a TenantScope,
    pub meta: CallMeta,
    pub policy: &'a Policy,
    pub manifest: &'a Manifest,
    pub tenant_name: &'a str,
    pub version: i64,
    pub history: Vec<Message>,
    pub input: Vec<Message>,
}

fn render_prompt(template: &str, ctx: &RunContext<'_>) -> String {
    template
        .replace("{{tenant.name}}", ctx.tenant_name)
        .replace("{{agent.name}}", &ctx.manifest.name)
        .replace("{{agent.version}}", &ctx.version.to_string())
}

fn failed(out: &mut Outcome, kind: &str, code: &str, message: String) {
    out.status = "failed";
    out.error = Some(json!({"type": kind, "code": code, "message": message}));
    out.steps.push(step(
        out.steps.len(),
        "error",
        json!({"code": code, "message": out.error.as_ref().map(|e| e["message"].clone())}),
    ));
}

fn step(index: usize, kind: &str, data: Value) -> RunStep {
    RunStep {
        seq: index as i64 + 1,
        kind: kind.to_owned(),
        at_ms: now_ms(),
        data: data.to_string(),
    }
}

/// The built-in loop: ask the model; answer tool calls; stop on a final answer or a limit.
/// No tool is callable yet (MCP tools and the code sandbox plug in here); a requested tool
/// gets an error result the model can react to.
pub async fn run_builtin(gateway: &Gateway, ctx: RunContext<'_>) -> Outcome {
    let m = ctx.manifest;
    let mut out = Outcome {
        status: "running",
        output: None,
        error: None,
        input_tokens: 0,
        output_tokens: 0,
        llm_calls: 0,
        tool_calls: 0,
        cost: NanoUsd(0),
        steps: Vec::new(),
        new_messages: ctx.input.clone(),
    };
    let timeout = parse_duration(&m.limits.timeout).unwrap_or(Duration::from_secs(60));
    let started = Instant::now();
    let max_cost = m.limits.max_cost_usd.map(NanoUsd::from_usd);
    let keep = usize::try_from(m.memory.history).unwrap_or(usize::MAX);
    let skip = ctx.history.len().saturating_sub(keep);
    let mut messages: Vec<Message> = ctx.history[skip..].to_vec();
    messages.extend(ctx.input.iter().cloned());
    let system = (!m.prompt.system.is_empty()).then(|| render_prompt(&m.prompt.system, &ctx));
    let mut route = match berth_gateway::plan(ctx.policy, &m.model.name, &ctx.meta.tags) {
        Ok(r) => r,
        Err(e) => {
            let err = GatewayError::from(e);
            failed(&mut out, "invalid_request", err.code(), err.to_string());
            return out;
        }
    };
    for f in &m.model.fallbacks {
        if let Ok(extra) = berth_gateway::plan(ctx.policy, f, &[]) {
            for t in extra.targets {
                if !route.targets.contains(&t) {
                    route.targets.push(t);
                }
            }
        }
    }
    for _ in 0..m.limits.max_steps {
        let Some(remaining) = timeout.checked_sub(started.elapsed()) else {
            failed(
                &mut out,
                "timeout",
                "timeout",
                format!("the run took longer than its {} limit", m.limits.timeout),
            );
            return out;
        };
        let req = ChatRequest {
            model: m.model.name.clone(),
            system: system.clone(),
            messages: messages.clone(),
            max_tokens: m.model.max_tokens,
            temperature: m.model.temperature,
            ..ChatRequest::default()
        };
        let call_started = Instant::now();
        let answer =
            match tokio::time::timeout(remaining, gateway.chat(ctx.scope, &ctx.meta, &req, &route))
                .await
            {
                Err(_) => {
                    failed(
                        &mut out,
                        "timeout",
                        "timeout",
                        format!("the run took longer than its {} limit", m.limits.timeout),
                    );
                    return out;
                }
                Ok(Err(e)) => {
                    failed(&mut out, "upstream", e.code(), e.to_string());
                    return out;
                }
                Ok(Ok(a)) => a,
            };
        out.llm_calls += 1;
        out.input_tokens += answer.usage.input_tokens;
        out.output_tokens += answer.usage.output_tokens;
        out.cost += answer.cost;
        let request_messages = serde_json::to_value(&req.messages).unwrap_or(Value::Null);
        let response = serde_json::to_value(&answer.response.content).unwrap_or(Value::Null);
        out.steps.push(step(
            out.steps.len(),
            "llm_call",
            json!({"model": answer.model, "provider": answer.provider, "request": {"system": req.system, "messages": request_messages},
                   "response": response, "input_tokens": answer.usage.input_tokens, "output_tokens": answer.usage.output_tokens,
                   "cost_usd": answer.cost.as_usd(), "latency_ms": call_started.elapsed().as_millis() as u64}),
        ));
        let reply = Message {
            role: Role::Assistant,
            content: answer.response.content.clone(),
        };
        messages.push(reply.clone());
        out.new_messages.push(reply);
        if let Some(limit) = max_cost
            && out.cost > limit
        {
            failed(
                &mut out,
                "budget_exceeded",
                "max_cost_exceeded",
                format!(
                    "the run cost more than its max_cost_usd of {}",
                    limit.as_usd()
                ),
            );
            return out;
        }
        let calls: Vec<(String, String)> = answer
            .response
            .content
            .iter()
            .filter_map(|p| match p {
                Part::ToolCall { id, name, .. } => Some((id.clone(), name.clone())),
                _ => None,
            })
            .collect();
        if calls.is_empty() {
            out.status = "succeeded";
            out.output = Some(answer.response.text());
            return out;
        }
        let mut results = Vec::new();
        for (id, name) in calls {
            out.tool_calls += 1;
            let message = format!("tool '{name}' is not available to this agent");
            out.steps.push(step(
                out.steps.len(),
                "tool_call",
                json!({"tool": name, "error": message, "latency_ms": 0}),
            ));
            results.push(Part::ToolResult {
                call_id: id,
                content: message,
                is_error: true,
            });
        }
        let turn = Message {
            role: Role::Tool,
            content: results,
        };
        messages.push(turn.clone());
        out.new_messages.push(turn);
    }
    failed(
        &mut out,
        "invalid_request",
        "max_steps",
        format!(
            "the run reached its max_steps of {} without a final answer",
            m.limits.max_steps
        ),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_store::{Pin, SplitEntry};

    #[test]
    fn version_choice_order_and_weights() {
        let t = Traffic {
            split: vec![
                SplitEntry {
                    version: 3,
                    weight: 90,
                },
                SplitEntry {
                    version: 4,
                    weight: 10,
                },
            ],
            pins: vec![Pin {
                key: "key_p".into(),
                version: 2,
            }],
            previous_full: None,
        };
        assert_eq!(choose_version(&t, Some(1), Some("key_p"), Some(5)), Some(1));
        assert_eq!(choose_version(&t, None, Some("key_p"), Some(5)), Some(2));
        assert_eq!(choose_version(&t, None, Some("key_q"), Some(5)), Some(5));
        let mut counts = [0u32; 2];
        for _ in 0..10_000 {
            match choose_version(&t, None, None, None) {
                Some(3) => counts[0] += 1,
                Some(4) => counts[1] += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!((8_700..=9_300).contains(&counts[0]), "{counts:?}");
        assert_eq!(choose_version(&Traffic::default(), None, None, None), None);
    }
}
