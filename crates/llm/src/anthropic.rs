//! Anthropic Messages: requests, responses and the event stream (`message_start` …
//! `message_stop`), whose output usage is cumulative.

use crate::canonical::*;
use crate::error::{LlmError, field};
use serde_json::{Map, Value, json};

/// What an Anthropic upstream needs when a client sent no `max_tokens` (OpenAI allows that).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

fn image_url(source: &Value) -> Option<String> {
    match source["type"].as_str()? {
        "base64" => Some(format!(
            "data:{};base64,{}",
            source["media_type"].as_str()?,
            source["data"].as_str()?
        )),
        "url" => source["url"].as_str().map(str::to_owned),
        _ => None,
    }
}

fn image_source(url: &str) -> Value {
    match url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"))
    {
        Some((media, data)) => json!({"type": "base64", "media_type": media, "data": data}),
        None => json!({"type": "url", "url": url}),
    }
}

fn result_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn blocks(v: &Value, at: &str) -> Result<Vec<Part>, LlmError> {
    match v {
        Value::String(s) => Ok(vec![Part::Text(s.clone())]),
        Value::Array(list) => {
            let mut out = Vec::new();
            for (i, b) in list.iter().enumerate() {
                let at = format!("{at}[{i}]");
                match b["type"].as_str() {
                    Some("text") => out.push(Part::Text(
                        b["text"]
                            .as_str()
                            .ok_or_else(|| field(format!("{at}.text"), "expected a string"))?
                            .to_owned(),
                    )),
                    Some("image") => out.push(Part::Image {
                        url: image_url(&b["source"]).ok_or_else(|| {
                            field(format!("{at}.source"), "expected a base64 or url source")
                        })?,
                    }),
                    Some("tool_use") => out.push(Part::ToolCall {
                        id: b["id"]
                            .as_str()
                            .ok_or_else(|| field(format!("{at}.id"), "required string"))?
                            .to_owned(),
                        name: b["name"]
                            .as_str()
                            .ok_or_else(|| field(format!("{at}.name"), "required string"))?
                            .to_owned(),
                        arguments: b
                            .get("input")
                            .map_or_else(|| "{}".to_owned(), Value::to_string),
                    }),
                    Some("tool_result") => out.push(Part::ToolResult {
                        call_id: b["tool_use_id"]
                            .as_str()
                            .ok_or_else(|| field(format!("{at}.tool_use_id"), "required string"))?
                            .to_owned(),
                        content: result_text(&b["content"]),
                        is_error: b["is_error"].as_bool().unwrap_or(false),
                    }),
                    // Thinking blocks carry no content another provider could use.
                    Some("thinking") | Some("redacted_thinking") => {}
                    Some(other) => {
                        return Err(field(
                            format!("{at}.type"),
                            format!("unsupported content block type {other:?}"),
                        ));
                    }
                    None => return Err(field(format!("{at}.type"), "missing")),
                }
            }
            Ok(out)
        }
        _ => Err(field(at, "expected a string or an array of content blocks")),
    }
}

/// Parses a client's Messages request.
pub fn parse_request(body: &Value) -> Result<ChatRequest, LlmError> {
    let obj = body
        .as_object()
        .ok_or_else(|| field("body", "expected a JSON object"))?;
    let model = obj
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| field("model", "required string"))?;
    let raw = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| field("messages", "required array"))?;
    let mut messages = Vec::new();
    for (i, m) in raw.iter().enumerate() {
        let at = format!("messages[{i}]");
        let parts = blocks(&m["content"], &format!("{at}.content"))?;
        match m["role"].as_str() {
            Some("user") => {
                // Tool results travel in user turns here; canonically they are their own turn.
                let (results, rest): (Vec<Part>, Vec<Part>) = parts
                    .into_iter()
                    .partition(|p| matches!(p, Part::ToolResult { .. }));
                if !results.is_empty() {
                    messages.push(Message {
                        role: Role::Tool,
                        content: results,
                    });
                }
                if !rest.is_empty() {
                    messages.push(Message {
                        role: Role::User,
                        content: rest,
                    });
                }
            }
            Some("assistant") => messages.push(Message {
                role: Role::Assistant,
                content: parts,
            }),
            Some(other) => {
                return Err(field(
                    format!("{at}.role"),
                    format!("unknown role {other:?}"),
                ));
            }
            None => return Err(field(format!("{at}.role"), "required string")),
        }
    }
    let system = match obj.get("system") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v @ Value::Array(_)) => Some(result_text(v)),
        Some(_) => {
            return Err(field(
                "system",
                "expected a string or an array of text blocks",
            ));
        }
    };
    let mut tools = Vec::new();
    for (i, t) in obj
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        tools.push(ToolDef {
            name: t["name"]
                .as_str()
                .ok_or_else(|| field(format!("tools[{i}].name"), "required string"))?
                .to_owned(),
            description: t["description"].as_str().map(str::to_owned),
            parameters: t
                .get("input_schema")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        });
    }
    let tool_choice = match obj.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(v) => Some(match v["type"].as_str() {
            Some("auto") => ToolChoice::Auto,
            Some("any") => ToolChoice::Required,
            Some("none") => ToolChoice::None,
            Some("tool") => ToolChoice::Tool(
                v["name"]
                    .as_str()
                    .ok_or_else(|| field("tool_choice.name", "required string"))?
                    .to_owned(),
            ),
            _ => {
                return Err(field(
                    "tool_choice.type",
                    "expected auto, any, none or tool",
                ));
            }
        }),
    };
    let max_tokens = match obj.get("max_tokens") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| field("max_tokens", "expected a positive integer"))?,
        ),
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| field("stream", "expected a boolean"))?,
    };
    Ok(ChatRequest {
        model: model.to_owned(),
        system,
        messages,
        tools,
        tool_choice,
        max_tokens,
        temperature: obj.get("temperature").and_then(Value::as_f64),
        top_p: obj.get("top_p").and_then(Value::as_f64),
        stop: obj
            .get("stop_sequences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        stream,
        include_usage: true,
        user: obj
            .get("metadata")
            .and_then(|m| m["user_id"].as_str())
            .map(str::to_owned),
    })
}

fn blocks_json(parts: &[Part]) -> Vec<Value> {
    parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => json!({"type": "text", "text": t}),
            Part::Image { url } => json!({"type": "image", "source": image_source(url)}),
            Part::ToolCall {
                id,
                name,
                arguments,
            } => {
                let input: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
                json!({"type": "tool_use", "id": id, "name": name, "input": input})
            }
            Part::ToolResult {
                call_id,
                content,
                is_error,
            } => {
                let mut b =
                    json!({"type": "tool_result", "tool_use_id": call_id, "content": content});
                if *is_error {
                    b["is_error"] = json!(true);
                }
                b
            }
        })
        .collect()
}

/// Renders a request for an Anthropic upstream.
pub fn render_request(req: &ChatRequest) -> Value {
    let mut messages: Vec<Value> = Vec::new();
    for m in &req.messages {
        let role = match m.role {
            Role::Assistant => "assistant",
            Role::User | Role::Tool => "user",
        };
        let content = blocks_json(&m.content);
        // Anthropic wants alternating turns: merge a tool-result turn into an adjacent user turn.
        match messages.last_mut() {
            Some(last) if last["role"] == role && role == "user" => {
                if let Some(list) = last["content"].as_array_mut() {
                    list.extend(content);
                }
            }
            _ => messages.push(json!({"role": role, "content": content})),
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(req.model));
    out.insert(
        "max_tokens".into(),
        json!(req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    if let Some(s) = &req.system {
        out.insert("system".into(), json!(s));
    }
    out.insert("messages".into(), Value::Array(messages));
    if !req.tools.is_empty() {
        out.insert(
            "tools".into(),
            Value::Array(
                req.tools
                    .iter()
                    .map(|t| {
                        let mut v = json!({"name": t.name, "input_schema": t.parameters});
                        if let Some(d) = &t.description {
                            v["description"] = json!(d);
                        }
                        v
                    })
                    .collect(),
            ),
        );
    }
    if let Some(tc) = &req.tool_choice {
        out.insert(
            "tool_choice".into(),
            match tc {
                ToolChoice::Auto => json!({"type": "auto"}),
                ToolChoice::None => json!({"type": "none"}),
                ToolChoice::Required => json!({"type": "any"}),
                ToolChoice::Tool(n) => json!({"type": "tool", "name": n}),
            },
        );
    }
    if let Some(t) = req.temperature {
        out.insert("temperature".into(), json!(t));
    }
    if let Some(t) = req.top_p {
        out.insert("top_p".into(), json!(t));
    }
    if !req.stop.is_empty() {
        out.insert("stop_sequences".into(), json!(req.stop));
    }
    if let Some(u) = &req.user {
        out.insert("metadata".into(), json!({"user_id": u}));
    }
    if req.stream {
        out.insert("stream".into(), json!(true));
    }
    Value::Object(out)
}

fn finish_from(s: Option<&str>) -> FinishReason {
    match s {
        Some("end_turn") | Some("stop_sequence") | None => FinishReason::Stop,
        Some("max_tokens") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::ContentFilter,
        Some(other) => FinishReason::Other(other.to_owned()),
    }
}

fn stop_reason(f: &FinishReason) -> &str {
    match f {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
        FinishReason::Other(s) => s,
    }
}

/// Anthropic counts cache reads and writes apart from `input_tokens`; canonically every
/// input token is counted, and cache reads are the cached part.
fn usage_from(v: &Value) -> Option<Usage> {
    let base = v.get("input_tokens")?.as_u64()?;
    let read = v["cache_read_input_tokens"].as_u64().unwrap_or(0);
    let write = v["cache_creation_input_tokens"].as_u64().unwrap_or(0);
    Some(Usage {
        input_tokens: base + read + write,
        output_tokens: v["output_tokens"].as_u64().unwrap_or(0),
        cached_input_tokens: read,
    })
}

fn usage_json(u: &Usage) -> Value {
    json!({"input_tokens": u.input_tokens - u.cached_input_tokens.min(u.input_tokens),
           "cache_read_input_tokens": u.cached_input_tokens, "output_tokens": u.output_tokens})
}

pub fn parse_response(body: &Value) -> Result<ChatResponse, LlmError> {
    if body["type"] == "error" {
        return Err(field(
            "error",
            body["error"]["message"]
                .as_str()
                .unwrap_or("upstream error")
                .to_owned(),
        ));
    }
    let content = blocks(
        body.get("content")
            .ok_or_else(|| field("content", "required array"))?,
        "content",
    )?;
    Ok(ChatResponse {
        id: body["id"].as_str().unwrap_or("msg").to_owned(),
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        content,
        finish: finish_from(body["stop_reason"].as_str()),
        usage: usage_from(&body["usage"]),
    })
}

pub fn render_response(resp: &ChatResponse) -> Value {
    json!({"id": resp.id, "type": "message", "role": "assistant", "model": resp.model,
           "content": blocks_json(&resp.content), "stop_reason": stop_reason(&resp.finish), "stop_sequence": null,
           "usage": usage_json(&resp.usage.unwrap_or_default())})
}

/// Decodes Anthropic stream events; it keeps the input tokens of `message_start` and the
/// mapping from content-block index to tool-call index.
#[derive(Default)]
pub struct StreamDecoder {
    input: Option<Usage>,
    tool_index: std::collections::HashMap<u64, u32>,
    tools: u32,
}

impl StreamDecoder {
    pub fn decode(&mut self, event: &str, data: &str) -> Result<Vec<StreamEvent>, LlmError> {
        if event == "ping" {
            return Ok(vec![]);
        }
        let v: Value = serde_json::from_str(data).map_err(|e| LlmError::Json(e.to_string()))?;
        let kind = v["type"].as_str().unwrap_or(event);
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                let m = &v["message"];
                out.push(StreamEvent::Start {
                    id: m["id"].as_str().unwrap_or_default().to_owned(),
                    model: m["model"].as_str().unwrap_or_default().to_owned(),
                });
                if let Some(u) = usage_from(&m["usage"]) {
                    self.input = Some(u);
                    out.push(StreamEvent::Usage { usage: u });
                }
            }
            "content_block_start" => {
                let b = &v["content_block"];
                if b["type"] == "tool_use" {
                    let index = self.tools;
                    self.tools += 1;
                    self.tool_index
                        .insert(v["index"].as_u64().unwrap_or(0), index);
                    out.push(StreamEvent::ToolCallStart {
                        index,
                        id: b["id"].as_str().unwrap_or_default().to_owned(),
                        name: b["name"].as_str().unwrap_or_default().to_owned(),
                    });
                } else if let Some(t) = b["text"].as_str().filter(|t| !t.is_empty()) {
                    out.push(StreamEvent::TextDelta { text: t.to_owned() });
                }
            }
            "content_block_delta" => {
                let d = &v["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => out.push(StreamEvent::TextDelta {
                        text: d["text"].as_str().unwrap_or_default().to_owned(),
                    }),
                    Some("input_json_delta") => {
                        let index = self
                            .tool_index
                            .get(&v["index"].as_u64().unwrap_or(0))
                            .copied()
                            .unwrap_or(0);
                        out.push(StreamEvent::ToolCallDelta {
                            index,
                            arguments: d["partial_json"].as_str().unwrap_or_default().to_owned(),
                        });
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = v["delta"]["stop_reason"].as_str() {
                    out.push(StreamEvent::Finish {
                        reason: finish_from(Some(r)),
                    });
                }
                // Output tokens here are the running total, not an increment.
                if let Some(output) = v["usage"]["output_tokens"].as_u64() {
                    let mut u = self.input.unwrap_or_default();
                    if let Some(newer) = usage_from(&v["usage"]) {
                        u.input_tokens = newer.input_tokens.max(u.input_tokens);
                        u.cached_input_tokens =
                            newer.cached_input_tokens.max(u.cached_input_tokens);
                    }
                    u.output_tokens = output;
                    self.input = Some(u);
                    out.push(StreamEvent::Usage { usage: u });
                }
            }
            "error" => {
                return Err(field(
                    "error",
                    v["error"]["message"]
                        .as_str()
                        .unwrap_or("upstream error in stream")
                        .to_owned(),
                ));
            }
            _ => {}
        }
        Ok(out)
    }
}

/// Turns canonical stream events into Anthropic SSE frames.
pub struct StreamEncoder {
    id: String,
    model: String,
    started: bool,
    /// The open content block: its index and whether it is text.
    open: Option<(u32, bool)>,
    next_block: u32,
    finish: Option<FinishReason>,
    usage: Usage,
}

fn frame(event: &str, data: Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

impl StreamEncoder {
    /// `input_estimate` fills `message_start` when the upstream reports input tokens
    /// only at the end (OpenAI); the final `message_delta` carries the real numbers.
    pub fn new(id: impl Into<String>, model: impl Into<String>, input_estimate: u64) -> Self {
        StreamEncoder {
            id: id.into(),
            model: model.into(),
            started: false,
            open: None,
            next_block: 0,
            finish: None,
            usage: Usage {
                input_tokens: input_estimate,
                ..Usage::default()
            },
        }
    }

    fn start(&mut self, out: &mut Vec<String>) {
        if !self.started {
            self.started = true;
            out.push(frame(
                "message_start",
                json!({"type": "message_start", "message": {"id": self.id, "type": "message", "role": "assistant", "model": self.model,
                       "content": [], "stop_reason": null, "stop_sequence": null,
                       "usage": {"input_tokens": self.usage.input_tokens, "output_tokens": 0}}}),
            ));
        }
    }

    fn close(&mut self, out: &mut Vec<String>) {
        if let Some((index, _)) = self.open.take() {
            out.push(frame(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    pub fn encode(&mut self, event: &StreamEvent) -> Vec<String> {
        let mut out = Vec::new();
        match event {
            StreamEvent::Start { .. } => self.start(&mut out),
            StreamEvent::TextDelta { text } => {
                self.start(&mut out);
                if !matches!(self.open, Some((_, true))) {
                    self.close(&mut out);
                    let index = self.next_block;
                    self.next_block += 1;
                    self.open = Some((index, true));
                    out.push(frame("content_block_start", json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})));
                }
                let index = self.open.map_or(0, |o| o.0);
                out.push(frame("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}})));
            }
            StreamEvent::ToolCallStart { id, name, .. } => {
                self.start(&mut out);
                self.close(&mut out);
                let index = self.next_block;
                self.next_block += 1;
                self.open = Some((index, false));
                out.push(frame(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
                ));
            }
            StreamEvent::ToolCallDelta { arguments, .. } => {
                self.start(&mut out);
                let index = self.open.map_or(0, |o| o.0);
                out.push(frame(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": arguments}}),
                ));
            }
            StreamEvent::Finish { reason } => self.finish = Some(reason.clone()),
            StreamEvent::Usage { usage } => self.usage = *usage,
        }
        out
    }

    /// The closing frames: block stop, `message_delta` with the stop reason and the final
    /// usage, `message_stop`.
    pub fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        self.start(&mut out);
        self.close(&mut out);
        let reason = self.finish.clone().unwrap_or(FinishReason::Stop);
        out.push(frame(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(&reason), "stop_sequence": null},
                   "usage": usage_json(&self.usage)}),
        ));
        out.push(frame("message_stop", json!({"type": "message_stop"})));
        out
    }
}
