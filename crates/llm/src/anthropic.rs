//! Anthropic Messages: requests, responses and the event stream (`message_start` …
//! `message_stop`), whose usage is cumulative.

use crate::canonical::*;
use crate::error::{LlmError, field};
use crate::fields::{
    get, object, opt_array, opt_bool, opt_count, opt_f64, opt_object, opt_str, path, req_str,
    strings,
};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// What an Anthropic upstream needs when a client sent no `max_tokens` (OpenAI allows that,
/// Anthropic requires it).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

fn image_url(source: &Value, at: &str) -> Result<String, LlmError> {
    let src = object(source, at)?;
    match req_str(src, at, "type")? {
        "base64" => Ok(format!(
            "data:{};base64,{}",
            req_str(src, at, "media_type")?,
            req_str(src, at, "data")?
        )),
        "url" => Ok(req_str(src, at, "url")?.to_owned()),
        other => Err(field(
            path(at, "type"),
            format!("unsupported image source {other:?}"),
        )),
    }
}

/// A `data:` URL becomes a base64 source again; anything else is fetched by Anthropic.
fn image_source(url: &str) -> Value {
    match url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"))
    {
        Some((media, data)) => json!({"type": "base64", "media_type": media, "data": data}),
        None => json!({"type": "url", "url": url}),
    }
}

/// A tool result's content: a string or text blocks. Images in tool results have no
/// OpenAI counterpart, so they are refused rather than silently lost.
fn result_text(v: Option<&Value>, at: &str) -> Result<String, LlmError> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(blocks)) => {
            let mut out = String::new();
            for (i, b) in blocks.iter().enumerate() {
                let at = format!("{at}[{i}]");
                let b = object(b, &at)?;
                match req_str(b, &at, "type")? {
                    "text" => out.push_str(req_str(b, &at, "text")?),
                    other => {
                        return Err(field(
                            path(&at, "type"),
                            format!("only text is supported in tool results, not {other:?}"),
                        ));
                    }
                }
            }
            Ok(out)
        }
        Some(_) => Err(field(at, "expected a string or an array of text blocks")),
    }
}

/// How strictly content blocks are read: a client's request is refused on anything this
/// crate cannot carry; an upstream's answer skips blocks it cannot carry (server tools,
/// thinking) so that the rest of the answer still arrives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Request,
    Response,
}

fn blocks(v: &Value, at: &str, mode: Mode) -> Result<Vec<Part>, LlmError> {
    let list = match v {
        Value::String(s) => {
            return Ok(if s.is_empty() {
                vec![]
            } else {
                vec![Part::Text(s.clone())]
            });
        }
        Value::Array(list) => list,
        _ => return Err(field(at, "expected a string or an array of content blocks")),
    };
    let mut out = Vec::new();
    for (i, b) in list.iter().enumerate() {
        let at = format!("{at}[{i}]");
        let obj = object(b, &at)?;
        match req_str(obj, &at, "type")? {
            "text" => {
                let t = req_str(obj, &at, "text")?;
                if !t.is_empty() {
                    out.push(Part::Text(t.to_owned()));
                }
            }
            "image" => out.push(Part::Image {
                url: image_url(
                    obj.get("source").unwrap_or(&Value::Null),
                    &path(&at, "source"),
                )?,
            }),
            "tool_use" => {
                let input = match get(obj, "input") {
                    None => "{}".to_owned(),
                    Some(v @ Value::Object(_)) => v.to_string(),
                    Some(_) => return Err(field(path(&at, "input"), "expected an object")),
                };
                out.push(Part::ToolCall {
                    id: req_str(obj, &at, "id")?.to_owned(),
                    name: req_str(obj, &at, "name")?.to_owned(),
                    arguments: input,
                });
            }
            "tool_result" => out.push(Part::ToolResult {
                call_id: req_str(obj, &at, "tool_use_id")?.to_owned(),
                content: result_text(get(obj, "content"), &path(&at, "content"))?,
                is_error: opt_bool(obj, &at, "is_error")?.unwrap_or(false),
            }),
            // Thinking is only replayed to Anthropic with thinking enabled, which requests
            // rendered here never ask for; no other provider can use it.
            "thinking" | "redacted_thinking" => {}
            _ if mode == Mode::Response => {}
            other => {
                return Err(field(
                    path(&at, "type"),
                    format!("unsupported content block type {other:?}"),
                ));
            }
        }
    }
    Ok(out)
}

fn system_text(v: &Value) -> Result<String, LlmError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(list) => {
            let mut texts = Vec::new();
            for (i, b) in list.iter().enumerate() {
                let at = format!("system[{i}]");
                let b = object(b, &at)?;
                match req_str(b, &at, "type")? {
                    "text" => texts.push(req_str(b, &at, "text")?),
                    other => {
                        return Err(field(
                            path(&at, "type"),
                            format!("expected a text block, not {other:?}"),
                        ));
                    }
                }
            }
            // Blocks are separate paragraphs to whoever wrote them; a newline keeps the
            // last sentence of one from running into the first of the next.
            Ok(texts.join("\n"))
        }
        _ => Err(field(
            "system",
            "expected a string or an array of text blocks",
        )),
    }
}

/// Parses a client's Messages request.
pub fn parse_request(body: &Value) -> Result<ChatRequest, LlmError> {
    let obj = object(body, "body")?;
    let model = req_str(obj, "", "model")?;
    if model.is_empty() {
        return Err(field("model", "must not be empty"));
    }
    let raw = opt_array(obj, "", "messages")?.ok_or_else(|| field("messages", "required array"))?;
    if raw.is_empty() {
        return Err(field("messages", "must not be empty"));
    }
    let mut messages = Vec::new();
    for (i, m) in raw.iter().enumerate() {
        let at = format!("messages[{i}]");
        let m = object(m, &at)?;
        let role = req_str(m, &at, "role")?;
        if role != "user" && role != "assistant" {
            return Err(field(path(&at, "role"), format!("unknown role {role:?}")));
        }
        let cat = path(&at, "content");
        let content = get(m, "content").ok_or_else(|| field(&cat, "required"))?;
        let parts = blocks(content, &cat, Mode::Request)?;
        // Calls belong to the model's turns and results to the user's: the other way round
        // has no meaning in either wire.
        let misplaced = parts.iter().position(|p| {
            matches!(
                (role, p),
                ("user", Part::ToolCall { .. }) | ("assistant", Part::ToolResult { .. })
            )
        });
        if let Some(j) = misplaced {
            return Err(field(
                format!("{cat}[{j}].type"),
                format!("not allowed in a {role} turn"),
            ));
        }
        if role == "assistant" {
            messages.push(Message {
                role: Role::Assistant,
                content: parts,
            });
            continue;
        }
        // Tool results travel in user turns here; canonically they are their own turn,
        // ahead of whatever the user added (Anthropic requires them first).
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
    let system = get(obj, "system").map(system_text).transpose()?;
    let mut tools = Vec::new();
    for (i, t) in opt_array(obj, "", "tools")?
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("tools[{i}]");
        let t = object(t, &at)?;
        // Server tools (web search, code execution, computer use…) run at Anthropic and
        // have no meaning anywhere else.
        match opt_str(t, &at, "type")? {
            None | Some("custom") => {}
            Some(other) => {
                return Err(field(
                    path(&at, "type"),
                    format!("unsupported tool type {other:?}"),
                ));
            }
        }
        tools.push(ToolDef {
            name: req_str(t, &at, "name")?.to_owned(),
            description: opt_str(t, &at, "description")?.map(str::to_owned),
            parameters: match get(t, "input_schema") {
                None => json!({"type": "object", "properties": {}}),
                Some(s @ Value::Object(_)) => s.clone(),
                Some(_) => return Err(field(path(&at, "input_schema"), "expected an object")),
            },
        });
    }
    let tool_choice = match opt_object(obj, "", "tool_choice")? {
        None => None,
        Some(tc) => Some(match req_str(tc, "tool_choice", "type")? {
            "auto" => ToolChoice::Auto,
            "any" => ToolChoice::Required,
            "none" => ToolChoice::None,
            "tool" => ToolChoice::Tool(req_str(tc, "tool_choice", "name")?.to_owned()),
            other => {
                return Err(field(
                    "tool_choice.type",
                    format!("expected auto, any, none or tool, not {other:?}"),
                ));
            }
        }),
    };
    let user = match opt_object(obj, "", "metadata")? {
        Some(meta) => opt_str(meta, "metadata", "user_id")?.map(str::to_owned),
        None => None,
    };
    Ok(ChatRequest {
        model: model.to_owned(),
        system,
        messages,
        tools,
        tool_choice,
        max_tokens: opt_count(obj, "", "max_tokens")?,
        temperature: opt_f64(obj, "", "temperature")?,
        top_p: opt_f64(obj, "", "top_p")?,
        stop: match opt_array(obj, "", "stop_sequences")? {
            Some(list) => strings(list, "stop_sequences")?,
            None => vec![],
        },
        stream: opt_bool(obj, "", "stream")?.unwrap_or(false),
        include_usage: true,
        user,
    })
}

/// Anthropic needs a tool call's `input` as an object; arguments that are not one (a
/// model's broken JSON, or an empty string for a call of no arguments) become `{}`.
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({}),
    }
}

fn blocks_json(parts: &[Part]) -> Vec<Value> {
    parts
        .iter()
        .filter_map(|p| match p {
            // Anthropic refuses empty text blocks.
            Part::Text(t) if t.is_empty() => None,
            Part::Text(t) => Some(json!({"type": "text", "text": t})),
            Part::Image { url } => Some(json!({"type": "image", "source": image_source(url)})),
            Part::ToolCall {
                id,
                name,
                arguments,
            } => Some(
                json!({"type": "tool_use", "id": id, "name": name, "input": tool_input(arguments)}),
            ),
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
                Some(b)
            }
        })
        .collect()
}

/// Renders a request for an Anthropic upstream. `max_tokens` is required there: when the
/// client set none, [`DEFAULT_MAX_TOKENS`].
pub fn render_request(req: &ChatRequest) -> Value {
    let mut messages: Vec<Value> = Vec::new();
    // The canonical role of the last rendered turn.
    let mut last_role = None;
    for m in &req.messages {
        let role = match m.role {
            Role::Assistant => "assistant",
            Role::User | Role::Tool => "user",
        };
        let content = blocks_json(&m.content);
        // A turn with nothing in it is refused; leaving it out loses nothing.
        if content.is_empty() {
            continue;
        }
        // Tool results and the user's next words are one user turn here, results first.
        // Two plain user turns stay two: Anthropic joins them itself, and keeping them
        // apart lets them read back as they were.
        let joins = last_role == Some(Role::Tool) && m.role != Role::Assistant;
        last_role = Some(m.role);
        match messages.last_mut() {
            Some(last) if joins => {
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
        let tools = req
            .tools
            .iter()
            .map(|t| {
                let mut v = json!({"name": t.name, "input_schema": t.parameters});
                if let Some(d) = &t.description {
                    v["description"] = json!(d);
                }
                v
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(tc) = &req.tool_choice {
        let v = match tc {
            ToolChoice::Auto => json!({"type": "auto"}),
            ToolChoice::None => json!({"type": "none"}),
            ToolChoice::Required => json!({"type": "any"}),
            ToolChoice::Tool(n) => json!({"type": "tool", "name": n}),
        };
        out.insert("tool_choice".into(), v);
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

fn finish_from(s: &str) -> FinishReason {
    match s {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
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

/// Anthropic's usage as it reports it: uncached input, cache reads and cache writes apart.
#[derive(Debug, Clone, Copy, Default)]
struct WireUsage {
    input: u64,
    cache_read: u64,
    cache_write: u64,
    output: u64,
}

impl WireUsage {
    /// Takes every count present in `v`; counts absent keep their value. Every count
    /// Anthropic reports is cumulative, so a newer one replaces an older one.
    fn update(&mut self, v: &Value) {
        let take = |key: &str, slot: &mut u64| {
            if let Some(n) = v[key].as_u64() {
                *slot = n;
            }
        };
        take("input_tokens", &mut self.input);
        take("cache_read_input_tokens", &mut self.cache_read);
        take("cache_creation_input_tokens", &mut self.cache_write);
        take("output_tokens", &mut self.output);
    }

    /// Canonically every input token is counted, and cache reads are the cached part.
    fn canonical(&self) -> Usage {
        Usage {
            input_tokens: self
                .input
                .saturating_add(self.cache_read)
                .saturating_add(self.cache_write),
            output_tokens: self.output,
            cached_input_tokens: self.cache_read,
        }
    }
}

fn usage_from(v: &Value) -> Option<Usage> {
    v.get("input_tokens")?.as_u64()?;
    let mut u = WireUsage::default();
    u.update(v);
    Some(u.canonical())
}

fn usage_json(u: &Usage) -> Value {
    json!({"input_tokens": u.input_tokens.saturating_sub(u.cached_input_tokens),
           "cache_read_input_tokens": u.cached_input_tokens, "output_tokens": u.output_tokens})
}

fn upstream_error(v: &Value) -> LlmError {
    LlmError::Upstream(
        v["error"]["message"]
            .as_str()
            .unwrap_or("no message")
            .to_owned(),
    )
}

/// Parses an upstream's (non-streamed) answer. Blocks this crate cannot carry (thinking,
/// server tools) are skipped.
pub fn parse_response(body: &Value) -> Result<ChatResponse, LlmError> {
    if body["type"] == "error" {
        return Err(upstream_error(body));
    }
    let content = blocks(
        body.get("content")
            .ok_or_else(|| field("content", "required array"))?,
        "content",
        Mode::Response,
    )?;
    Ok(ChatResponse {
        id: body["id"].as_str().unwrap_or("msg").to_owned(),
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        content,
        finish: body["stop_reason"]
            .as_str()
            .map_or(FinishReason::Stop, finish_from),
        usage: usage_from(&body["usage"]),
    })
}

/// Renders an answer for an Anthropic client. An answer without usage reports zeros,
/// because the field is required.
pub fn render_response(resp: &ChatResponse) -> Value {
    json!({"id": resp.id, "type": "message", "role": "assistant", "model": resp.model,
           "content": blocks_json(&resp.content), "stop_reason": stop_reason(&resp.finish), "stop_sequence": null,
           "usage": usage_json(&resp.usage.unwrap_or_default())})
}

/// Decodes Anthropic stream events. It keeps the usage reported so far (input tokens come
/// in `message_start`, cumulative output tokens in each `message_delta`) and the mapping
/// from content-block index to tool-call index.
#[derive(Default)]
pub struct StreamDecoder {
    usage: Option<WireUsage>,
    tool_index: BTreeMap<u64, u32>,
    tools: u32,
}

impl StreamDecoder {
    /// Decodes one SSE event: its `event:` name and its `data`.
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
                if m["usage"].is_object() {
                    let u = self.usage.get_or_insert_with(WireUsage::default);
                    u.update(&m["usage"]);
                    out.push(StreamEvent::Usage {
                        usage: u.canonical(),
                    });
                }
            }
            "content_block_start" => {
                let b = &v["content_block"];
                match b["type"].as_str() {
                    Some("tool_use") => {
                        let index = self.tools;
                        self.tools = self.tools.saturating_add(1);
                        self.tool_index
                            .insert(v["index"].as_u64().unwrap_or(0), index);
                        out.push(StreamEvent::ToolCallStart {
                            index,
                            id: b["id"].as_str().unwrap_or_default().to_owned(),
                            name: b["name"].as_str().unwrap_or_default().to_owned(),
                        });
                        // Anthropic starts with `{}` and streams the input; a start that
                        // already carries it must not lose it.
                        if let Some(input) = b["input"].as_object().filter(|o| !o.is_empty()) {
                            out.push(StreamEvent::ToolCallDelta {
                                index,
                                arguments: Value::Object(input.clone()).to_string(),
                            });
                        }
                    }
                    Some("text") => {
                        if let Some(t) = b["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::TextDelta { text: t.to_owned() });
                        }
                    }
                    // Thinking and server-tool blocks have no canonical counterpart.
                    _ => {}
                }
            }
            "content_block_delta" => {
                let d = &v["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => {
                        if let Some(t) = d["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::TextDelta { text: t.to_owned() });
                        }
                    }
                    Some("input_json_delta") => {
                        // A delta of a block that was not a tool call (a server tool's
                        // input) is not the client's to see.
                        if let Some(index) = self.tool_index.get(&v["index"].as_u64().unwrap_or(0))
                            && let Some(j) = d["partial_json"].as_str().filter(|j| !j.is_empty())
                        {
                            out.push(StreamEvent::ToolCallDelta {
                                index: *index,
                                arguments: j.to_owned(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = v["delta"]["stop_reason"].as_str() {
                    out.push(StreamEvent::Finish {
                        reason: finish_from(r),
                    });
                }
                // Output tokens here are the running total, not an increment: replace.
                if v["usage"].is_object() {
                    let u = self.usage.get_or_insert_with(WireUsage::default);
                    u.update(&v["usage"]);
                    out.push(StreamEvent::Usage {
                        usage: u.canonical(),
                    });
                }
            }
            "error" => return Err(upstream_error(&v)),
            // `content_block_stop`, `message_stop`, `ping` and event types added later
            // (Anthropic's versioning policy says to ignore unknown ones).
            _ => {}
        }
        Ok(out)
    }
}

/// The content block the encoder has open.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Text(u32),
    Tool(u32),
}

/// Turns canonical stream events into Anthropic SSE frames.
pub struct StreamEncoder {
    id: String,
    model: String,
    started: bool,
    open: Option<Open>,
    next_block: u32,
    /// Tool-call index → its content-block index.
    tool_blocks: BTreeMap<u32, u32>,
    finish: Option<FinishReason>,
    usage: Usage,
    closed: bool,
}

fn frame(event: &str, data: Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

impl StreamEncoder {
    /// `input_estimate` fills `message_start` when the upstream has reported no input
    /// tokens by the first content (OpenAI reports them at the end); the final
    /// `message_delta` carries the real numbers.
    pub fn new(id: impl Into<String>, model: impl Into<String>, input_estimate: u64) -> Self {
        StreamEncoder {
            id: id.into(),
            model: model.into(),
            started: false,
            open: None,
            next_block: 0,
            tool_blocks: BTreeMap::new(),
            finish: None,
            usage: Usage {
                input_tokens: input_estimate,
                ..Usage::default()
            },
            closed: false,
        }
    }

    /// `message_start` waits for the first content rather than the upstream's start, so
    /// that an Anthropic upstream's input usage (which follows its start) is in it.
    fn start(&mut self, out: &mut Vec<String>) {
        if !self.started {
            self.started = true;
            out.push(frame(
                "message_start",
                json!({"type": "message_start", "message": {"id": self.id, "type": "message", "role": "assistant", "model": self.model,
                       "content": [], "stop_reason": null, "stop_sequence": null,
                       "usage": usage_json(&self.usage)}}),
            ));
        }
    }

    fn close(&mut self, out: &mut Vec<String>) {
        if let Some(Open::Text(index) | Open::Tool(index)) = self.open.take() {
            out.push(frame(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    fn open_block(&mut self, out: &mut Vec<String>, block: Value) -> u32 {
        self.start(out);
        self.close(out);
        let index = self.next_block;
        self.next_block = self.next_block.saturating_add(1);
        out.push(frame(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    fn start_tool(&mut self, out: &mut Vec<String>, tool: u32, id: &str, name: &str) -> u32 {
        let block = self.open_block(
            out,
            json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
        );
        self.open = Some(Open::Tool(block));
        self.tool_blocks.insert(tool, block);
        block
    }

    /// The frames for one event (none for usage and the finish reason, which are held
    /// for `message_delta`).
    pub fn encode(&mut self, event: &StreamEvent) -> Vec<String> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        match event {
            StreamEvent::Start { .. } => {}
            StreamEvent::TextDelta { text } => {
                if text.is_empty() {
                    return out;
                }
                let index = match self.open {
                    Some(Open::Text(index)) => index,
                    _ => {
                        let index = self.open_block(&mut out, json!({"type": "text", "text": ""}));
                        self.open = Some(Open::Text(index));
                        index
                    }
                };
                out.push(frame("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}})));
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                // A repeated start of the same call (some OpenAI-compatible servers
                // repeat the name) must not open a second block.
                if !self.tool_blocks.contains_key(index) {
                    self.start_tool(&mut out, *index, id, name);
                }
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if arguments.is_empty() {
                    return out;
                }
                // Arguments whose start was never seen still need a block to live in. A
                // call whose block was closed by later content keeps its block index:
                // clients gather a call's input by that index.
                let block = match self.tool_blocks.get(index) {
                    Some(b) => *b,
                    None => self.start_tool(&mut out, *index, &format!("toolu_{index}"), ""),
                };
                out.push(frame(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": block, "delta": {"type": "input_json_delta", "partial_json": arguments}}),
                ));
            }
            StreamEvent::Finish { reason } => {
                if self.finish.is_none() {
                    self.finish = Some(reason.clone());
                }
            }
            StreamEvent::Usage { usage } => self.usage = *usage,
        }
        out
    }

    /// The closing frames: block stop, `message_delta` with the stop reason and the final
    /// usage, `message_stop`. A second call writes nothing.
    pub fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        self.start(&mut out);
        self.close(&mut out);
        self.closed = true;
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
