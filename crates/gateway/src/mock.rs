//! The built-in `mock` provider, so the platform, its demo and its tests run offline.
//!
//! `mock/echo` answers with the last user message (cut at `max_tokens`). `mock/tools` calls every offered tool
//! whose name appears in the last user message (arguments `{}`), and once tool results
//! come back, answers with them. `mock/embed` gives small deterministic vectors. Token
//! counts are the deterministic estimates of `berth_llm::tokens`, so costs are exact and
//! reproducible.

use crate::upstream::EventRx;
use berth_llm::tokens::{estimate_request, estimate_text};
use berth_llm::{ChatRequest, ChatResponse, FinishReason, Part, Role, StreamEvent, Usage};
use serde_json::{Value, json};
use tokio::sync::mpsc;

fn answer(req: &ChatRequest, model: &str) -> (Vec<Part>, FinishReason) {
    let last = req.messages.last();
    if model.starts_with("tools") {
        if let Some(m) = last.filter(|m| m.role == Role::Tool) {
            let results: Vec<String> = m
                .content
                .iter()
                .filter_map(|p| match p {
                    Part::ToolResult { content, .. } => Some(content.clone()),
                    _ => None,
                })
                .collect();
            return (
                vec![Part::Text(format!("tool results: {}", results.join("; ")))],
                FinishReason::Stop,
            );
        }
        let asked = last.map(|m| m.text_content()).unwrap_or_default();
        let calls: Vec<Part> = req
            .tools
            .iter()
            .filter(|t| asked.contains(&t.name))
            .enumerate()
            .map(|(i, t)| Part::ToolCall {
                id: format!("call_mock_{}", i + 1),
                name: t.name.clone(),
                arguments: "{}".to_owned(),
            })
            .collect();
        if !calls.is_empty() {
            return (calls, FinishReason::ToolCalls);
        }
    }
    let text = req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.text_content())
        .unwrap_or_default();
    // Like a real model, the answer stops at `max_tokens`.
    if let Some(max) = req.max_tokens
        && estimate_text(&text) > u64::from(max)
    {
        // A character weighs at least a quarter token, so this is already near the cut.
        let mut cut: String = text.chars().take(max as usize * 4 + 4).collect();
        while !cut.is_empty() && estimate_text(&cut) > u64::from(max) {
            cut.pop();
        }
        let cut = if cut.is_empty() {
            "…".to_owned()
        } else {
            cut
        };
        return (vec![Part::Text(cut)], FinishReason::Length);
    }
    (vec![Part::Text(text)], FinishReason::Stop)
}

fn output_tokens(parts: &[Part]) -> u64 {
    parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => estimate_text(t),
            Part::ToolCall {
                name, arguments, ..
            } => estimate_text(name) + estimate_text(arguments),
            _ => 0,
        })
        .sum::<u64>()
        .max(1)
}

pub(crate) fn chat(req: &ChatRequest, model: &str) -> Result<ChatResponse, crate::GatewayError> {
    let (content, finish) = answer(req, model);
    let usage = Usage {
        input_tokens: estimate_request(req),
        output_tokens: output_tokens(&content),
        cached_input_tokens: 0,
    };
    Ok(ChatResponse {
        id: format!("mock-{}", usage.input_tokens),
        model: format!("mock/{model}"),
        content,
        finish,
        usage: Some(usage),
    })
}

/// The same answer as a stream: text word by word, tool calls in two pieces. The events
/// are made as the reader takes them (a bounded channel, like a real provider's stream),
/// not all at once: a long answer would otherwise sit in memory as one event per word.
pub(crate) fn stream(req: &ChatRequest, model: &str) -> EventRx {
    let (content, finish) = answer(req, model);
    let usage = Usage {
        input_tokens: estimate_request(req),
        output_tokens: output_tokens(&content),
        cached_input_tokens: 0,
    };
    let start = StreamEvent::Start {
        id: format!("mock-{}", usage.input_tokens),
        model: format!("mock/{model}"),
    };
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let send = |e: StreamEvent| {
            let tx = tx.clone();
            async move { tx.send(Ok(e)).await.is_ok() }
        };
        if !send(start).await {
            return;
        }
        let mut tool_index = 0;
        for p in content {
            match p {
                Part::Text(t) => {
                    for (i, w) in t.split(' ').enumerate() {
                        let text = if i == 0 {
                            w.to_owned()
                        } else {
                            format!(" {w}")
                        };
                        if !send(StreamEvent::TextDelta { text }).await {
                            return; // the reader is gone
                        }
                    }
                }
                Part::ToolCall {
                    id,
                    name,
                    arguments,
                } => {
                    let start = StreamEvent::ToolCallStart {
                        index: tool_index,
                        id,
                        name,
                    };
                    let delta = StreamEvent::ToolCallDelta {
                        index: tool_index,
                        arguments,
                    };
                    if !send(start).await || !send(delta).await {
                        return;
                    }
                    tool_index += 1;
                }
                _ => {}
            }
        }
        if send(StreamEvent::Finish { reason: finish }).await {
            send(StreamEvent::Usage { usage }).await;
        }
    });
    rx
}

pub(crate) fn embeddings(body: &Value, full_model: &str) -> Value {
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect(),
        _ => vec![],
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let seed = s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            let v: Vec<f64> = (0..8)
                .map(|k| ((seed >> (k * 8)) & 0xff) as f64 / 255.0)
                .collect();
            json!({"object": "embedding", "index": i, "embedding": v})
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|s| estimate_text(s).max(1)).sum();
    json!({"object": "list", "data": data, "model": full_model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_llm::{Message, ToolDef};

    #[test]
    fn echo_and_tools() {
        let req = ChatRequest {
            messages: vec![Message::text(Role::User, "please run lookup and weather")],
            ..Default::default()
        };
        let r = chat(&req, "echo").unwrap();
        assert_eq!(r.text(), "please run lookup and weather");
        assert_eq!(
            r.usage.unwrap().output_tokens,
            estimate_text("please run lookup and weather")
        );

        let tool = |n: &str| ToolDef {
            name: n.into(),
            description: None,
            parameters: json!({}),
        };
        let req = ChatRequest {
            tools: vec![tool("lookup"), tool("other")],
            ..req
        };
        let r = chat(&req, "tools").unwrap();
        assert_eq!(r.finish, FinishReason::ToolCalls);
        assert!(matches!(&r.content[..], [Part::ToolCall { name, .. }] if name == "lookup"));

        let mut req = req;
        req.messages.push(Message {
            role: Role::Tool,
            content: vec![Part::ToolResult {
                call_id: "call_mock_1".into(),
                content: "found".into(),
                is_error: false,
            }],
        });
        assert_eq!(chat(&req, "tools").unwrap().text(), "tool results: found");
    }
}
