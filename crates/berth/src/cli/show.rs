//! Human text for runs, trace steps and run events: one short line each, shared by
//! `berth run`, `berth runs` and `berth logs`; part of the output layer (`output.rs`).
//!
//! Everything here reads the server's JSON leniently (a missing field prints as `-` or is
//! left out), because a terminal line should survive fields added to the answers later.

use super::output::{text_of, usd};
use serde_json::Value;

/// The widest snippet of model output or tool data put on one line.
const SNIPPET: usize = 80;

/// The first line of `text`, cut to `max` characters; `…` marks what was left out.
pub fn snippet(text: &str, max: usize) -> String {
    let text = text.trim();
    let first = text.lines().next().unwrap_or_default();
    let mut out: String = first.chars().take(max).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// A JSON value on one short line: strings as they are, anything else as compact JSON.
fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => snippet(s, SNIPPET),
        other => snippet(&other.to_string(), SNIPPET),
    }
}

/// The first of `keys` that `v` has (not null).
fn field<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().map(|k| &v[*k]).find(|x| !x.is_null())
}

/// What a finished run said: its output, or its error's message.
fn run_summary(run: &Value) -> String {
    if let Some(message) = run["error"]["message"].as_str() {
        snippet(message, SNIPPET)
    } else {
        run["output"]
            .as_str()
            .map(|o| snippet(o, SNIPPET))
            .unwrap_or_default()
    }
}

/// The line after a run's answer: which run, what it cost.
pub fn run_trailer(run: &Value) -> String {
    let u = &run["usage"];
    let mut line = format!(
        "{} · {} v{} · {} · {} LLM call(s), {} tool call(s) · {}",
        text_of(run, "id"),
        text_of(run, "agent"),
        text_of(run, "version"),
        text_of(run, "status"),
        u["llm_calls"].as_i64().unwrap_or(0),
        u["tool_calls"].as_i64().unwrap_or(0),
        usd(&u["cost_usd"]),
    );
    if let Some(thread) = run["thread"].as_str() {
        line.push_str(&format!(" · thread {thread}"));
    }
    line
}

/// One line of `berth logs`: when, which run, how it ended, what it said.
pub fn run_line(run: &Value) -> String {
    format!(
        "{}  {}  v{}  {:<9}  {:>11}  {}",
        text_of(run, "created_at"),
        text_of(run, "id"),
        text_of(run, "version"),
        text_of(run, "status"),
        usd(&run["usage"]["cost_usd"]),
        run_summary(run)
    )
    .trim_end()
    .to_owned()
}

/// Whether a run's status is final.
pub fn finished(run: &Value) -> bool {
    matches!(
        run["status"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

/// The error for a run that ended as `status` (`failed` or `cancelled`).
pub fn failure(run: &Value, status: &str) -> String {
    let id = text_of(run, "id");
    if status == "cancelled" {
        return format!("run {id} was cancelled");
    }
    let err = &run["error"];
    match (err["message"].as_str(), err["code"].as_str()) {
        (Some(m), Some(c)) => format!("run {id} failed: {m} ({c})"),
        (Some(m), None) => format!("run {id} failed: {m}"),
        _ => format!("run {id} failed"),
    }
}

/// The text and tool calls of a model answer (its canonical parts).
fn response_text(response: &Value) -> String {
    let parts: Vec<String> = response
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| {
                    if let Some(t) = p["text"].as_str() {
                        Some(snippet(t, SNIPPET))
                    } else {
                        p["tool_call"]["name"]
                            .as_str()
                            .map(|n| format!("calls {n}"))
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    parts.join("; ")
}

/// `tool(args) → result`, or `tool(args) → error: …`: a tool call, from a trace step
/// or a `tool.call`/`tool.result` event.
fn tool_text(v: &Value) -> String {
    let name = field(v, &["tool", "name"]).map_or("-".to_owned(), compact);
    let mut line = match field(v, &["arguments", "args", "input"]) {
        Some(args) => format!("{name}({})", compact(args)),
        None => name,
    };
    if let Some(err) = field(v, &["error"]) {
        let message = field(err, &["message"]).unwrap_or(err);
        line.push_str(&format!(" → error: {}", compact(message)));
    } else if let Some(result) = field(v, &["result", "output", "content"]) {
        line.push_str(&format!(" → {}", compact(result)));
    }
    line
}

fn latency(v: &Value) -> String {
    v["latency_ms"]
        .as_i64()
        .map(|ms| format!(", {ms} ms"))
        .unwrap_or_default()
}

/// The gist of one trace step, after its seq and type.
pub fn step_essence(step: &Value) -> String {
    match step["type"].as_str().unwrap_or_default() {
        "llm_call" => {
            let mut line = format!(
                "{} via {}: {} in / {} out tokens, {}{}",
                text_of(step, "model"),
                text_of(step, "provider"),
                text_of(step, "input_tokens"),
                text_of(step, "output_tokens"),
                usd(&step["cost_usd"]),
                latency(step)
            );
            let said = response_text(&step["response"]);
            if !said.is_empty() {
                line.push_str(&format!(": {said}"));
            }
            line
        }
        "tool_call" => format!("{}{}", tool_text(step), latency(step)),
        "error" => format!("{}: {}", text_of(step, "code"), compact(&step["message"])),
        "log" => field(step, &["message", "text"]).map_or_else(String::new, compact),
        // `approval` and steps added later: their own fields, compactly.
        _ => {
            let mut rest = step.clone();
            if let Some(map) = rest.as_object_mut() {
                for k in ["seq", "type", "at"] {
                    map.remove(k);
                }
            }
            compact(&rest)
        }
    }
}

/// The approval an `approval.required` event carries: nested under `approval`, or the
/// event's data itself.
fn approval_of(data: &Value) -> &Value {
    if data["approval"].is_object() {
        &data["approval"]
    } else {
        data
    }
}

/// The id of the approval an `approval.required` event asks for, when it names one.
pub fn approval_id(data: &Value) -> Option<String> {
    let a = approval_of(data);
    a["id"]
        .as_str()
        .or(a["approval_id"].as_str())
        .map(str::to_owned)
}

/// A side line for a streamed event other than the answer's text, or `None` for events
/// that need none.
pub fn event_line(event: &str, data: &Value) -> Option<String> {
    match event {
        "tool.call" => Some(format!("→ {}", tool_text(data))),
        "tool.result" => {
            let name = field(data, &["tool", "name"]).map_or("-".to_owned(), compact);
            Some(match field(data, &["error"]) {
                Some(err) => format!(
                    "← {name} failed: {}",
                    compact(field(err, &["message"]).unwrap_or(err))
                ),
                None => format!(
                    "← {name}: {}",
                    field(data, &["result", "output", "content"]).map_or_else(String::new, compact)
                ),
            })
        }
        "approval.required" => {
            let tool = field(approval_of(data), &["tool", "name"])
                .map_or("a tool call".to_owned(), compact);
            Some(match approval_id(data) {
                Some(id) => format!(
                    "⏸ {tool} waits for approval {id}: berth approvals approve {id} (or deny)"
                ),
                None => format!("⏸ {tool} waits for approval: berth approvals list"),
            })
        }
        "log" => Some(format!(
            "log: {}",
            field(data, &["message", "text"]).map_or_else(|| compact(data), compact)
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn snippets_are_one_short_line() {
        assert_eq!(snippet("hello", 10), "hello");
        assert_eq!(snippet("hello world", 5), "hello…");
        assert_eq!(snippet("one\ntwo", 10), "one…");
        assert_eq!(snippet("héllo", 2), "hé…");
    }

    #[test]
    fn steps_show_their_essence() {
        let llm = json!({"seq": 1, "type": "llm_call", "model": "mock/echo", "provider": "mock",
            "input_tokens": 12, "output_tokens": 3, "cost_usd": 0.000015, "latency_ms": 2,
            "response": [{"text": "hello"}, {"tool_call": {"id": "c1", "name": "crm__lookup", "arguments": "{}"}}]});
        assert_eq!(
            step_essence(&llm),
            "mock/echo via mock: 12 in / 3 out tokens, $0.000015, 2 ms: hello; calls crm__lookup"
        );
        let tool = json!({"type": "tool_call", "tool": "crm__lookup", "error": "not available", "latency_ms": 0});
        assert_eq!(
            step_essence(&tool),
            "crm__lookup → error: not available, 0 ms"
        );
        let err = json!({"type": "error", "code": "max_steps", "message": "too many steps"});
        assert_eq!(step_essence(&err), "max_steps: too many steps");
        let other = json!({"seq": 4, "type": "approval", "at": "t", "decision": "approve"});
        assert_eq!(step_essence(&other), r#"{"decision":"approve"}"#);
    }

    #[test]
    fn events_become_side_lines() {
        assert_eq!(
            event_line(
                "tool.call",
                &json!({"tool": "sandbox__exec", "arguments": {"code": "1"}})
            )
            .as_deref(),
            Some(r#"→ sandbox__exec({"code":"1"})"#)
        );
        assert_eq!(
            event_line("tool.result", &json!({"tool": "t", "result": "ok"})).as_deref(),
            Some("← t: ok")
        );
        let approval = json!({"approval": {"id": "apr_1", "tool": "crm__refund"}});
        assert_eq!(approval_id(&approval).as_deref(), Some("apr_1"));
        assert!(
            event_line("approval.required", &approval)
                .is_some_and(|l| l.contains("crm__refund") && l.contains("approve apr_1"))
        );
        assert_eq!(event_line("message.delta", &json!({"text": "x"})), None);
    }

    #[test]
    fn failures_name_the_run_and_the_reason() {
        let run = json!({"id": "run_1", "status": "failed",
            "error": {"type": "invalid_request", "code": "model_not_allowed", "message": "no"}});
        assert_eq!(
            failure(&run, "failed"),
            "run run_1 failed: no (model_not_allowed)"
        );
        assert_eq!(failure(&run, "cancelled"), "run run_1 was cancelled");
        assert!(!finished(&json!({"status": "waiting_approval"})));
        assert!(finished(&run));
    }
}
