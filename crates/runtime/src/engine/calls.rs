//! The tool calls of a model turn: each is checked against the allow-lists and the
//! approval gate, called through the one tool interface (or paused for a human), and its
//! result screened, traced and handed back to the model.

use super::*;

/// Answers the pending calls in order. `Ok(false)`: some call waits for a human (the run
/// pauses, with approvals created for the calls that need one and have none yet).
pub(super) async fn answer_calls(
    ex: &mut Exec<'_>,
    tools: &dyn ToolHost,
    offered: &[berth_llm::ToolDef],
    decisions: &mut HashMap<String, Decision>,
) -> Result<bool, Stop> {
    let spec = ex.spec;
    while let Some(call) = ex.cp.pending.first().cloned() {
        let callable = offered.iter().any(|t| t.name == call.name);
        if callable && !call.blocked && needs_approval(spec.manifest, spec.policy, &call.name) {
            match &call.approval_id {
                None => {
                    // Every call of this turn that needs a human gets its approval now, so
                    // the reviewer sees them together.
                    return Ok(false);
                }
                Some(id) => match decisions.remove(id) {
                    None => return Ok(false),
                    Some(d) => {
                        let shown = json!({"approval_id": id, "tool": call.name, "status": d.status,
                                           "reason": d.reason, "decided_by": d.decided_by});
                        ex.step("approval", shown.clone());
                        ex.live.emit(RunEvent::new("approval.decided", shown));
                        if d.status != "approved" {
                            let why = match d.status.as_str() {
                                "expired" => "no reviewer decided in time".to_owned(),
                                _ => format!(
                                    "a reviewer denied it{}",
                                    d.reason.map(|r| format!(": {r}")).unwrap_or_default()
                                ),
                            };
                            let message =
                                format!("the call to '{}' was not approved: {why}", call.name);
                            record_result(ex, &call, Err(message), 0, false, false);
                            continue;
                        }
                    }
                },
            }
        }
        let started = Instant::now();
        let mut executed = false;
        let result = if !callable {
            Err(format!(
                "tool '{}' is not available to this agent",
                call.name
            ))
        } else {
            // The arguments were screened when the model gave them, so what the trace and
            // the events show is what the tool gets (redacted), or nothing of it (blocked).
            let allowed_args = !call.blocked;
            ex.live.emit(RunEvent::new(
                "tool.call",
                tool_call_event(&call_data(&call)),
            ));
            let ctx = ToolCallCtx {
                scope: spec.scope,
                agent: &spec.manifest.name,
                run_id: spec.run_id,
                key_id: spec.key_id,
            };
            let timeout =
                parse_duration(&spec.manifest.limits.timeout).unwrap_or(Duration::from_secs(60));
            let Some(remaining) = timeout.checked_sub(ex.elapsed()) else {
                return Err(ex.timeout_stop());
            };
            executed = allowed_args;
            let arguments = allowed_args.then(|| call.arguments.clone());
            match arguments {
                None => Err(format!(
                    "the call to '{}' was blocked by the data-loss rules: its arguments hold protected data",
                    call.name
                )),
                Some(arguments) => {
                    let answer = tokio::select! {
                        biased;
                        _ = ex.live.cancel.cancelled() => return Err(Stop::Cancelled),
                        r = tokio::time::timeout(remaining, tools.call(&ctx, &call.name, &arguments)) => match r {
                            Err(_) => return Err(ex.timeout_stop()),
                            Ok(Ok(text)) => Ok(text),
                            Ok(Err(ToolError::NotFound(n))) => Err(format!("tool '{n}' is not available to this agent")),
                            Ok(Err(ToolError::Failed(m))) => Err(m),
                        }
                    };
                    match answer {
                        Ok(text) => match ex.dlp("tool_results", &text).await {
                            crate::dlp::Verdict::Clean(t)
                            | crate::dlp::Verdict::Redacted { text: t, .. } => Ok(t),
                            crate::dlp::Verdict::Blocked { .. } => Err(format!(
                                "the result of '{}' was withheld by the data-loss rules",
                                call.name
                            )),
                        },
                        Err(e) => Err(e),
                    }
                }
            }
        };
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        record_result(ex, &call, result, ms, callable, executed);
        if executed {
            ex.cp.usage.tool_calls += 1;
        }
    }
    let turn = Message {
        role: Role::Tool,
        content: std::mem::take(&mut ex.cp.results),
    };
    ex.cp.messages.push(turn.clone());
    ex.cp.new_messages.push(turn);
    Ok(true)
}

pub(super) fn parse_args(arguments: &str) -> Value {
    serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.to_owned()))
}

fn call_data(call: &PendingCall) -> Value {
    json!({"id": call.call_id, "tool": call.name, "arguments": parse_args(&call.arguments)})
}

/// Records a call's result (its `tool.call` event first, unless it was announced when the
/// call started), as a step, an event and the model's next input.
fn record_result(
    ex: &mut Exec<'_>,
    call: &PendingCall,
    result: Result<String, String>,
    ms: u64,
    announced: bool,
    executed: bool,
) {
    let mut data = call_data(call);
    data["latency_ms"] = json!(ms);
    // Only a call that reached its tool is metered as a tool call.
    data["executed"] = json!(executed);
    if !announced {
        ex.live
            .emit(RunEvent::new("tool.call", tool_call_event(&data)));
    }
    let (content, is_error) = match result {
        Ok(text) => {
            data["result"] = Value::String(text.clone());
            (text, false)
        }
        Err(message) => {
            data["error"] = Value::String(message.clone());
            (message, true)
        }
    };
    ex.live
        .emit(RunEvent::new("tool.result", tool_result_event(&data)));
    ex.step("tool_call", data);
    ex.cp.results.push(Part::ToolResult {
        call_id: call.call_id.clone(),
        content,
        is_error,
    });
    ex.cp.pending.remove(0);
}
