//! What a run leaves behind: its final write with its usage, the metering of its tool
//! calls and the audit of its data-loss hits, the terminal event its followers get, and
//! the thread messages later runs replay.

use crate::Platform;
use crate::view::RunView;
use berth_audit::NewEntry;
use berth_core::TenantScope;
use berth_core::clock::now_ms;
use berth_llm::{Message, Role as MsgRole};
use berth_runtime::{LiveRun, RunEvent, events_from_steps};
use berth_store::{RunRecord, RunStep, UsageEvent};
use serde_json::{Value, json};
use std::sync::Arc;

/// Audits each data-loss hit of a run by detector, never with the data.
pub(super) async fn audit_dlp_hits(
    state: &Platform,
    scope: &TenantScope,
    run: &RunRecord,
    hits: &[berth_runtime::dlp::DlpHit],
) {
    for hit in hits {
        let entry = NewEntry::new(
            "system",
            "dlp.hit",
            &run.id,
            json!({"agent": run.agent, "on": hit.on, "detectors": hit.detectors, "action": hit.action}),
        );
        if let Err(e) = state.store.append_audit(scope, &entry).await {
            tracing::error!(error = %e, "data-loss hit not audited");
        }
    }
}

/// Meters the tool calls among `steps` (one `tool` usage event each, named by the step, so
/// a retried write counts once): the tool's server as provider, the tool as model.
pub(super) async fn record_tool_calls(
    state: &Platform,
    scope: &TenantScope,
    run: &RunRecord,
    steps: &[RunStep],
) {
    for s in steps.iter().filter(|s| s.kind == "tool_call") {
        let d: Value = serde_json::from_str(&s.data).unwrap_or(Value::Null);
        if d["executed"] != true {
            continue;
        }
        let tool = d["tool"].as_str().unwrap_or_default();
        state
            .usage
            .record(
                scope,
                UsageEvent {
                    id: format!("evt_tool_{}_{}", run.id, s.seq),
                    at_ms: s.at_ms,
                    kind: "tool".to_owned(),
                    key_id: run.key_id.clone(),
                    agent: Some(run.agent.clone()),
                    provider: tool.split_once("__").map(|(server, _)| server.to_owned()),
                    model: Some(tool.to_owned()),
                    latency_ms: d["latency_ms"].as_i64().unwrap_or(0),
                    status: if d.get("error").is_some() {
                        "error"
                    } else {
                        "ok"
                    }
                    .to_owned(),
                    run_id: Some(run.id.clone()),
                    agent_version: Some(run.version),
                    ..UsageEvent::default()
                },
            )
            .await;
    }
}

/// Writes a finished run, records it as a billable run, and ends it for its followers.
pub(super) async fn finish(
    state: &Platform,
    scope: &TenantScope,
    mut run: RunRecord,
    steps: &[RunStep],
    messages: &[String],
    live: &Arc<LiveRun>,
) -> RunRecord {
    // The run's model calls (usage and budget settlements) were journaled as they ended:
    // durable before the run is answered.
    state.gateway.durable().await;
    match state.store.finish_run(scope, &run, steps, messages).await {
        Ok(status) => {
            if status != run.status
                && let Ok(Some(stored)) = state.store.get_run(scope, &run.id).await
            {
                run = stored;
            }
        }
        Err(e) => {
            // The lease runs out and the sweeper marks the run interrupted.
            tracing::error!(run = %run.id, error = %e, "could not store the finished run");
        }
    }
    state
        .usage
        .record(
            scope,
            UsageEvent {
                // One run event per run, whatever retries happen.
                id: format!("evt_run_{}", run.id),
                at_ms: now_ms(),
                kind: "run".to_owned(),
                key_id: run.key_id.clone(),
                agent: Some(run.agent.clone()),
                status: run.status.clone(),
                run_id: Some(run.id.clone()),
                agent_version: Some(run.version),
                ..UsageEvent::default()
            },
        )
        .await;
    end_live(state, scope, run, live)
}

/// Sends the terminal event and forgets the live run.
pub(super) fn end_live(
    state: &Platform,
    scope: &TenantScope,
    run: RunRecord,
    live: &Arc<LiveRun>,
) -> RunRecord {
    live.set_executing(false);
    live.emit(terminal_event(&run));
    state.runner.hub.remove(scope, &run.id);
    run
}

/// `run.completed`, `run.failed` or `run.cancelled` with the run object.
pub fn terminal_event(run: &RunRecord) -> RunEvent {
    let kind = match run.status.as_str() {
        "succeeded" => "run.completed",
        "cancelled" => "run.cancelled",
        _ => "run.failed",
    };
    RunEvent::new(kind, json!({"run": RunView::from(run)}))
}

/// The events a run not live here stands for: started (unless still queued), its stored
/// steps, and its end.
pub fn stored_events(run: &RunRecord, steps: &[RunStep]) -> Vec<RunEvent> {
    let mut out = Vec::new();
    if run.status != "queued" || run.checkpoint.is_some() || !steps.is_empty() {
        out.push(RunEvent::new(
            "run.started",
            json!({"run": RunView::from(run)}),
        ));
    }
    out.extend(events_from_steps(steps));
    if run.is_terminal() {
        out.push(terminal_event(run));
    }
    out
}

/// Thread messages are stored as `{"role", "content", "parts"}`: the text for people and
/// API clients, and the parts (tool calls and results included) for replaying the thread.
pub fn stored(m: &Message) -> String {
    let role = match m.role {
        MsgRole::User => "user",
        MsgRole::Assistant => "assistant",
        MsgRole::Tool => "tool",
    };
    json!({"role": role, "content": m.text_content(), "parts": m.content}).to_string()
}

pub fn restored(text: &str) -> Option<Message> {
    let v: Value = serde_json::from_str(text).ok()?;
    let role = match v["role"].as_str()? {
        "user" => MsgRole::User,
        "assistant" => MsgRole::Assistant,
        "tool" => MsgRole::Tool,
        _ => return None,
    };
    if let Ok(content) = serde_json::from_value::<Vec<berth_llm::Part>>(v["parts"].clone())
        && !content.is_empty()
    {
        return Some(Message { role, content });
    }
    // Older rows carry text only; their tool turns cannot be replayed.
    (role != MsgRole::Tool).then(|| Message::text(role, v["content"].as_str().unwrap_or_default()))
}
