//! OpenAI Chat Completions: requests, responses and `chat.completion.chunk` streams.

use crate::canonical::*;
use crate::error::{LlmError, field};
use serde_json::{Map, Value, json};

fn text_of(v: &Value, at: &str) -> Result<Vec<Part>, LlmError> {
    match v {
        Value::Null => Ok(vec![]),
        Value::String(s) => Ok(vec![Part::Text(s.clone())]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let at = format!("{at}[{i}]");
                match p["type"].as_str() {
                    Some("text") => p["text"]
                        .as_str()
                        .map(|t| Part::Text(t.to_owned()))
                        .ok_or_else(|| field(format!("{at}.text"), "expected a string")),
                    Some("image_url") => p["image_url"]["url"]
                        .as_str()
                        .or_else(|| p["image_url"].as_str())
                        .map(|u| Part::Image { url: u.to_owned() })
                        .ok_or_else(|| field(format!("{at}.image_url.url"), "expected a string")),
                    // Audio and file parts have no counterpart in every provider; refuse them
                    // clearly rather than drop them silently.
                    Some(other) => Err(field(
                        format!("{at}.type"),
                        format!("unsupported content part type {other:?}"),
                    )),
                    None => Err(field(format!("{at}.type"), "missing")),
                }
            })
            .collect(),
        _ => Err(field(at, "expected a string or an array of content parts")),
    }
}

/// Parses a client's Chat Completions request.
pub fn parse_request(body: &Value) -> Result<ChatRequest, LlmError> {
    let obj = body
        .as_object()
        .ok_or_else(|| field("body", "expected a JSON object"))?;
    let model = obj
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| field("model", "required string"))?;
    let raw_messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| field("messages", "required array"))?;
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<Message> = Vec::new();
    for (i, m) in raw_messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = m["role"]
            .as_str()
            .ok_or_else(|| field(format!("{at}.role"), "required string"))?;
        match role {
            "system" | "developer" => {
                let parts = text_of(&m["content"], &format!("{at}.content"))?;
                system.push(
                    Message {
                        role: Role::User,
                        content: parts,
                    }
                    .text_content(),
                );
            }
            "user" => messages.push(Message {
                role: Role::User,
                content: text_of(&m["content"], &format!("{at}.content"))?,
            }),
            "assistant" => {
                let mut content = text_of(&m["content"], &format!("{at}.content"))?;
                if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                    for (j, c) in calls.iter().enumerate() {
                        let cat = format!("{at}.tool_calls[{j}]");
                        content.push(Part::ToolCall {
                            id: c["id"]
                                .as_str()
                                .ok_or_else(|| field(format!("{cat}.id"), "required string"))?
                                .to_owned(),
                            name: c["function"]["name"]
                                .as_str()
                                .ok_or_else(|| {
                                    field(format!("{cat}.function.name"), "required string")
                                })?
                                .to_owned(),
                            arguments: c["function"]["arguments"]
                                .as_str()
                                .unwrap_or("{}")
                                .to_owned(),
                        });
                    }
                }
                messages.push(Message {
                    role: Role::Assistant,
                    content,
                });
            }
            "tool" => {
                let call_id = m["tool_call_id"]
                    .as_str()
                    .ok_or_else(|| field(format!("{at}.tool_call_id"), "required string"))?;
                let text = Message {
                    role: Role::Tool,
                    content: text_of(&m["content"], &format!("{at}.content"))?,
                }
                .text_content();
                let part = Part::ToolResult {
                    call_id: call_id.to_owned(),
                    content: text,
                    is_error: false,
                };
                // Consecutive tool results belong to one turn.
                match messages.last_mut() {
                    Some(last) if last.role == Role::Tool => last.content.push(part),
                    _ => messages.push(Message {
                        role: Role::Tool,
                        content: vec![part],
                    }),
                }
            }
            other => {
                return Err(field(
                    format!("{at}.role"),
                    format!("unknown role {other:?}"),
                ));
            }
        }
    }
    let mut tools = Vec::new();
    if let Some(list) = obj.get("tools").and_then(Value::as_array) {
        for (i, t) in list.iter().enumerate() {
            let f = &t["function"];
            tools.push(ToolDef {
                name: f["name"]
                    .as_str()
                    .ok_or_else(|| field(format!("tools[{i}].function.name"), "required string"))?
                    .to_owned(),
                description: f["description"].as_str().map(str::to_owned),
                parameters: f
                    .get("parameters")
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            });
        }
    }
    let tool_choice = match obj.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => return Err(field("tool_choice", format!("unknown value {other:?}"))),
        }),
        Some(v) => Some(ToolChoice::Tool(
            v["function"]["name"]
                .as_str()
                .ok_or_else(|| field("tool_choice.function.name", "required string"))?
                .to_owned(),
        )),
    };
    let u32_field = |name: &str| -> Result<Option<u32>, LlmError> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| field(name, "expected a positive integer")),
        }
    };
    let f64_field = |name: &str| -> Result<Option<f64>, LlmError> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| field(name, "expected a number")),
        }
    };
    let stop = match obj.get("stop") {
        None | Some(Value::Null) => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(_) => return Err(field("stop", "expected a string or an array of strings")),
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| field("stream", "expected a boolean"))?,
    };
    Ok(ChatRequest {
        model: model.to_owned(),
        system: (!system.is_empty()).then(|| system.join("\n")),
        messages,
        tools,
        tool_choice,
        max_tokens: u32_field("max_completion_tokens")?.or(u32_field("max_tokens")?),
        temperature: f64_field("temperature")?,
        top_p: f64_field("top_p")?,
        stop,
        stream,
        include_usage: obj
            .get("stream_options")
            .and_then(|o| o["include_usage"].as_bool())
            .unwrap_or(false),
        user: obj.get("user").and_then(Value::as_str).map(str::to_owned),
    })
}

fn content_json(parts: &[Part]) -> Value {
    let only_text = parts.iter().all(|p| matches!(p, Part::Text(_)));
    if only_text {
        let text: String = parts
            .iter()
            .filter_map(|p| {
                if let Part::Text(t) = p {
                    Some(t.as_str())
                } else {
                    None
                }
            })
            .collect();
        return Value::String(text);
    }
    Value::Array(
        parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(json!({"type": "text", "text": t})),
                Part::Image { url } => {
                    Some(json!({"type": "image_url", "image_url": {"url": url}}))
                }
                _ => None,
            })
            .collect(),
    )
}

fn tool_calls_json(parts: &[Part]) -> Vec<Value> {
    parts
        .iter()
        .filter_map(|p| match p {
            Part::ToolCall { id, name, arguments } => {
                Some(json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}))
            }
            _ => None,
        })
        .collect()
}

/// Renders a request for an OpenAI-kind upstream. Streams always ask for usage, because
/// the gateway must charge every call whatever the client asked for.
pub fn render_request(req: &ChatRequest) -> Value {
    let mut messages = Vec::new();
    if let Some(s) = &req.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    for m in &req.messages {
        match m.role {
            Role::User => {
                messages.push(json!({"role": "user", "content": content_json(&m.content)}))
            }
            Role::Assistant => {
                let text: Vec<Part> = m
                    .content
                    .iter()
                    .filter(|p| matches!(p, Part::Text(_)))
                    .cloned()
                    .collect();
                let mut msg = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { content_json(&text) }});
                let calls = tool_calls_json(&m.content);
                if !calls.is_empty() {
                    msg["tool_calls"] = Value::Array(calls);
                }
                messages.push(msg);
            }
            Role::Tool => {
                for p in &m.content {
                    match p {
                        Part::ToolResult {
                            call_id, content, ..
                        } => {
                            messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": content}));
                        }
                        Part::Text(t) => messages.push(json!({"role": "user", "content": t})),
                        _ => {}
                    }
                }
            }
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(req.model));
    out.insert("messages".into(), Value::Array(messages));
    if !req.tools.is_empty() {
        out.insert(
            "tools".into(),
            Value::Array(
                req.tools
                    .iter()
                    .map(|t| {
                        let mut f = json!({"name": t.name, "parameters": t.parameters});
                        if let Some(d) = &t.description {
                            f["description"] = json!(d);
                        }
                        json!({"type": "function", "function": f})
                    })
                    .collect(),
            ),
        );
    }
    if let Some(tc) = &req.tool_choice {
        out.insert(
            "tool_choice".into(),
            match tc {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::None => json!("none"),
                ToolChoice::Required => json!("required"),
                ToolChoice::Tool(n) => json!({"type": "function", "function": {"name": n}}),
            },
        );
    }
    if let Some(m) = req.max_tokens {
        out.insert("max_tokens".into(), json!(m));
    }
    if let Some(t) = req.temperature {
        out.insert("temperature".into(), json!(t));
    }
    if let Some(t) = req.top_p {
        out.insert("top_p".into(), json!(t));
    }
    if !req.stop.is_empty() {
        out.insert("stop".into(), json!(req.stop));
    }
    if let Some(u) = &req.user {
        out.insert("user".into(), json!(u));
    }
    if req.stream {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Value::Object(out)
}

fn finish_from(s: Option<&str>) -> FinishReason {
    match s {
        Some("stop") | None => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("tool_calls") | Some("function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        Some(other) => FinishReason::Other(other.to_owned()),
    }
}

fn finish_str(f: &FinishReason) -> &str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Other(s) => s,
    }
}

fn usage_from(v: &Value) -> Option<Usage> {
    let input = v.get("prompt_tokens")?.as_u64()?;
    Some(Usage {
        input_tokens: input,
        output_tokens: v["completion_tokens"].as_u64().unwrap_or(0),
        cached_input_tokens: v["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0),
    })
}

fn usage_json(u: &Usage) -> Value {
    json!({"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
           "total_tokens": u.input_tokens + u.output_tokens,
           "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens}})
}

/// Parses an upstream's (non-streamed) answer.
pub fn parse_response(body: &Value) -> Result<ChatResponse, LlmError> {
    let choice = body["choices"]
        .get(0)
        .ok_or_else(|| field("choices", "expected at least one choice"))?;
    let msg = &choice["message"];
    let mut content = Vec::new();
    if let Some(t) = msg["content"].as_str()
        && !t.is_empty()
    {
        content.push(Part::Text(t.to_owned()));
    }
    for c in msg["tool_calls"].as_array().into_iter().flatten() {
        content.push(Part::ToolCall {
            id: c["id"].as_str().unwrap_or_default().to_owned(),
            name: c["function"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            arguments: c["function"]["arguments"]
                .as_str()
                .unwrap_or("{}")
                .to_owned(),
        });
    }
    Ok(ChatResponse {
        id: body["id"].as_str().unwrap_or("chatcmpl").to_owned(),
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        content,
        finish: finish_from(choice["finish_reason"].as_str()),
        usage: usage_from(&body["usage"]),
    })
}

/// Renders an answer for an OpenAI client. `created` is a Unix time in seconds.
pub fn render_response(resp: &ChatResponse, created: i64) -> Value {
    let text: Vec<Part> = resp
        .content
        .iter()
        .filter(|p| matches!(p, Part::Text(_)))
        .cloned()
        .collect();
    let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { content_json(&text) }});
    let calls = tool_calls_json(&resp.content);
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let mut out = json!({
        "id": resp.id, "object": "chat.completion", "created": created, "model": resp.model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_str(&resp.finish), "logprobs": null}],
    });
    if let Some(u) = &resp.usage {
        out["usage"] = usage_json(u);
    }
    out
}

/// Decodes one `data:` payload of a chunk stream (`[DONE]` yields nothing).
pub fn decode_chunk(data: &str) -> Result<Vec<StreamEvent>, LlmError> {
    if data.trim() == "[DONE]" {
        return Ok(vec![]);
    }
    let v: Value = serde_json::from_str(data).map_err(|e| LlmError::Json(e.to_string()))?;
    if v.get("error").is_some() {
        return Err(field(
            "error",
            v["error"]["message"]
                .as_str()
                .unwrap_or("upstream error in stream")
                .to_owned(),
        ));
    }
    let mut out = Vec::new();
    if let Some(choice) = v["choices"].get(0) {
        let d = &choice["delta"];
        if d["role"].as_str().is_some() {
            out.push(StreamEvent::Start {
                id: v["id"].as_str().unwrap_or_default().to_owned(),
                model: v["model"].as_str().unwrap_or_default().to_owned(),
            });
        }
        if let Some(t) = d["content"].as_str()
            && !t.is_empty()
        {
            out.push(StreamEvent::TextDelta { text: t.to_owned() });
        }
        for c in d["tool_calls"].as_array().into_iter().flatten() {
            let index = u32::try_from(c["index"].as_u64().unwrap_or(0)).unwrap_or(0);
            if let Some(name) = c["function"]["name"].as_str() {
                out.push(StreamEvent::ToolCallStart {
                    index,
                    id: c["id"].as_str().unwrap_or_default().to_owned(),
                    name: name.to_owned(),
                });
            }
            if let Some(args) = c["function"]["arguments"].as_str()
                && !args.is_empty()
            {
                out.push(StreamEvent::ToolCallDelta {
                    index,
                    arguments: args.to_owned(),
                });
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            out.push(StreamEvent::Finish {
                reason: finish_from(Some(f)),
            });
        }
    }
    if let Some(u) = usage_from(&v["usage"]) {
        out.push(StreamEvent::Usage { usage: u });
    }
    Ok(out)
}

/// Turns canonical stream events into the SSE an OpenAI client reads.
pub struct StreamEncoder {
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
    started: bool,
    usage: Option<Usage>,
}

impl StreamEncoder {
    pub fn new(
        id: impl Into<String>,
        model: impl Into<String>,
        created: i64,
        include_usage: bool,
    ) -> Self {
        StreamEncoder {
            id: id.into(),
            model: model.into(),
            created,
            include_usage,
            started: false,
            usage: None,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        let v = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]});
        format!("data: {v}\n\n")
    }

    fn start(&mut self, out: &mut Vec<String>) {
        if !self.started {
            self.started = true;
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
    }

    pub fn encode(&mut self, event: &StreamEvent) -> Vec<String> {
        let mut out = Vec::new();
        match event {
            StreamEvent::Start { .. } => self.start(&mut out),
            StreamEvent::TextDelta { text } => {
                self.start(&mut out);
                out.push(self.chunk(json!({"content": text}), None));
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.start(&mut out);
                out.push(self.chunk(
                    json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
                    None,
                ));
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                self.start(&mut out);
                out.push(self.chunk(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}),
                    None,
                ));
            }
            StreamEvent::Finish { reason } => {
                self.start(&mut out);
                out.push(self.chunk(json!({}), Some(finish_str(reason))));
            }
            StreamEvent::Usage { usage } => self.usage = Some(*usage),
        }
        out
    }

    /// The closing frames: the usage chunk (when the client asked for it) and `[DONE]`.
    /// `extra` fields (such as Berth's cost) are added to the usage chunk.
    pub fn finish(&mut self, extra: Option<(&str, Value)>) -> Vec<String> {
        let mut out = Vec::new();
        if self.include_usage {
            let mut v = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                               "choices": [], "usage": self.usage.as_ref().map(usage_json)});
            if let Some((k, val)) = extra {
                v[k] = val;
            }
            out.push(format!("data: {v}\n\n"));
        }
        out.push("data: [DONE]\n\n".to_owned());
        out
    }
}
