//! OpenAI Chat Completions: requests, responses and `chat.completion.chunk` streams.

use crate::canonical::*;
use crate::error::{LlmError, field};
use crate::fields::{
    Obj, arguments_text, get, object, opt_array, opt_bool, opt_count, opt_f64, opt_object, opt_str,
    path, req_str, strings,
};
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// What a tool definition without `parameters` means: a function of no arguments.
fn empty_schema() -> Value {
    json!({"type": "object", "properties": {}})
}

/// Reads `content`: a string or an array of parts. `images` says whether image parts are
/// allowed in this role (user turns only); `refusal` parts are an assistant's text.
fn content_parts(v: Option<&Value>, at: &str, images: bool) -> Result<Vec<Part>, LlmError> {
    let mut out = Vec::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => push_text(&mut out, s),
        Some(Value::Array(parts)) => {
            for (i, p) in parts.iter().enumerate() {
                let at = format!("{at}[{i}]");
                let obj = object(p, &at)?;
                match req_str(obj, &at, "type")? {
                    "text" => push_text(&mut out, req_str(obj, &at, "text")?),
                    "refusal" => push_text(&mut out, req_str(obj, &at, "refusal")?),
                    "image_url" if images => {
                        let url = match get(obj, "image_url") {
                            // Some clients send the URL itself instead of `{url}`.
                            Some(Value::String(u)) => u.as_str(),
                            Some(Value::Object(o)) => req_str(o, &path(&at, "image_url"), "url")?,
                            _ => return Err(field(path(&at, "image_url"), "required object")),
                        };
                        out.push(Part::Image {
                            url: url.to_owned(),
                        });
                    }
                    // Audio and file parts have no counterpart in every provider; refuse
                    // them clearly rather than drop them silently.
                    other => {
                        return Err(field(
                            path(&at, "type"),
                            format!("unsupported content part type {other:?} here"),
                        ));
                    }
                }
            }
        }
        Some(_) => {
            return Err(field(at, "expected a string or an array of content parts"));
        }
    }
    Ok(out)
}

/// Empty texts are dropped: they carry nothing and Anthropic refuses them.
fn push_text(out: &mut Vec<Part>, s: &str) {
    if !s.is_empty() {
        out.push(Part::Text(s.to_owned()));
    }
}

fn text_only(parts: &[Part]) -> String {
    parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

fn tool_calls(obj: &Obj, at: &str) -> Result<Vec<Part>, LlmError> {
    let mut out = Vec::new();
    for (j, c) in opt_array(obj, at, "tool_calls")?
        .into_iter()
        .flatten()
        .enumerate()
    {
        let cat = format!("{at}.tool_calls[{j}]");
        let call = object(c, &cat)?;
        if let Some(kind) = opt_str(call, &cat, "type")?
            && kind != "function"
        {
            return Err(field(
                path(&cat, "type"),
                format!("unsupported tool call type {kind:?}"),
            ));
        }
        let fat = path(&cat, "function");
        let function =
            opt_object(call, &cat, "function")?.ok_or_else(|| field(&fat, "required object"))?;
        out.push(Part::ToolCall {
            id: req_str(call, &cat, "id")?.to_owned(),
            name: req_str(function, &fat, "name")?.to_owned(),
            arguments: arguments_text(get(function, "arguments")),
        });
    }
    Ok(out)
}

/// Parses a client's Chat Completions request.
pub fn parse_request(body: &Value) -> Result<ChatRequest, LlmError> {
    let obj = object(body, "body")?;
    let model = req_str(obj, "", "model")?;
    if model.is_empty() {
        return Err(field("model", "must not be empty"));
    }
    let raw_messages =
        opt_array(obj, "", "messages")?.ok_or_else(|| field("messages", "required array"))?;
    if raw_messages.is_empty() {
        return Err(field("messages", "must not be empty"));
    }
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<Message> = Vec::new();
    for (i, m) in raw_messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let m = object(m, &at)?;
        let role = req_str(m, &at, "role")?;
        let cat = path(&at, "content");
        let content = get(m, "content");
        match role {
            // System prompts may appear anywhere in OpenAI's list; Anthropic (and the
            // canonical model) has one prompt ahead of the conversation: gather them.
            "system" | "developer" => {
                let text = content.ok_or_else(|| field(&cat, "required"))?;
                system.push(text_only(&content_parts(Some(text), &cat, false)?));
            }
            "user" => {
                let content = content.ok_or_else(|| field(&cat, "required"))?;
                messages.push(Message {
                    role: Role::User,
                    content: content_parts(Some(content), &cat, true)?,
                });
            }
            "assistant" => {
                let mut content = content_parts(content, &cat, false)?;
                content.extend(tool_calls(m, &at)?);
                if get(m, "function_call").is_some() {
                    return Err(field(
                        path(&at, "function_call"),
                        "the legacy function_call is not supported; use tool_calls",
                    ));
                }
                messages.push(Message {
                    role: Role::Assistant,
                    content,
                });
            }
            "tool" => {
                let call_id = req_str(m, &at, "tool_call_id")?;
                let content = content.ok_or_else(|| field(&cat, "required"))?;
                let part = Part::ToolResult {
                    call_id: call_id.to_owned(),
                    content: text_only(&content_parts(Some(content), &cat, false)?),
                    is_error: false,
                };
                // Consecutive tool results answer one assistant turn: one canonical turn.
                match messages.last_mut() {
                    Some(last) if last.role == Role::Tool => last.content.push(part),
                    _ => messages.push(Message {
                        role: Role::Tool,
                        content: vec![part],
                    }),
                }
            }
            other => {
                return Err(field(path(&at, "role"), format!("unknown role {other:?}")));
            }
        }
    }
    if get(obj, "functions").is_some() || get(obj, "function_call").is_some() {
        let name = if get(obj, "functions").is_some() {
            "functions"
        } else {
            "function_call"
        };
        return Err(field(
            name,
            "the legacy functions API is not supported; use tools and tool_choice",
        ));
    }
    let mut tools = Vec::new();
    for (i, t) in opt_array(obj, "", "tools")?
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("tools[{i}]");
        let t = object(t, &at)?;
        match opt_str(t, &at, "type")? {
            None | Some("function") => {}
            Some(other) => {
                return Err(field(
                    path(&at, "type"),
                    format!("unsupported tool type {other:?}"),
                ));
            }
        }
        let fat = path(&at, "function");
        let f = opt_object(t, &at, "function")?
            .ok_or_else(|| field(path(&fat, "name"), "required string"))?;
        tools.push(ToolDef {
            name: req_str(f, &fat, "name")?.to_owned(),
            description: opt_str(f, &fat, "description")?.map(str::to_owned),
            parameters: match get(f, "parameters") {
                None => empty_schema(),
                Some(p @ Value::Object(_)) => p.clone(),
                Some(_) => return Err(field(path(&fat, "parameters"), "expected an object")),
            },
        });
    }
    let tool_choice = match get(obj, "tool_choice") {
        None => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => return Err(field("tool_choice", format!("unknown value {other:?}"))),
        }),
        Some(Value::Object(o)) => {
            let f = opt_object(o, "tool_choice", "function")?
                .ok_or_else(|| field("tool_choice.function.name", "required string"))?;
            Some(ToolChoice::Tool(
                req_str(f, "tool_choice.function", "name")?.to_owned(),
            ))
        }
        Some(_) => {
            return Err(field(
                "tool_choice",
                "expected \"auto\", \"none\", \"required\" or a function",
            ));
        }
    };
    let stop = match get(obj, "stop") {
        None => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => strings(a, "stop")?,
        Some(_) => return Err(field("stop", "expected a string or an array of strings")),
    };
    // One answer per call is all the canonical model carries; answering `n: 3` with one
    // choice would be a silent lie.
    if let Some(n) = get(obj, "n")
        && n.as_u64() != Some(1)
    {
        return Err(field("n", "only 1 is supported"));
    }
    let include_usage = match opt_object(obj, "", "stream_options")? {
        Some(o) => opt_bool(o, "stream_options", "include_usage")?.unwrap_or(false),
        None => false,
    };
    Ok(ChatRequest {
        model: model.to_owned(),
        system: (!system.is_empty()).then(|| system.join("\n")),
        messages,
        tools,
        tool_choice,
        // `max_completion_tokens` replaced `max_tokens`; when both are sent, the newer wins.
        max_tokens: match opt_count(obj, "", "max_completion_tokens")? {
            Some(n) => Some(n),
            None => opt_count(obj, "", "max_tokens")?,
        },
        temperature: opt_f64(obj, "", "temperature")?,
        top_p: opt_f64(obj, "", "top_p")?,
        stop,
        stream: opt_bool(obj, "", "stream")?.unwrap_or(false),
        include_usage,
        user: opt_str(obj, "", "user")?.map(str::to_owned),
    })
}

/// A user turn's content: a lone text is a plain string (what every OpenAI-compatible
/// server understands); anything else is an array of parts, which keeps part boundaries.
fn content_json(parts: &[Part]) -> Value {
    match parts {
        [] => json!(""),
        [Part::Text(t)] => json!(t),
        _ => Value::Array(
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
        ),
    }
}

fn tool_calls_json(parts: &[Part]) -> Vec<Value> {
    parts
        .iter()
        .filter_map(|p| match p {
            Part::ToolCall {
                id,
                name,
                arguments,
            } => Some(json!({"id": id, "type": "function",
                             "function": {"name": name, "arguments": arguments}})),
            _ => None,
        })
        .collect()
}

/// An assistant turn: its texts as `content` (null when there are only tool calls, as
/// OpenAI itself answers) and its calls as `tool_calls`. Images cannot be said by an
/// assistant in this wire and are left out.
fn assistant_json(parts: &[Part]) -> Value {
    let texts: Vec<Part> = parts
        .iter()
        .filter(|p| matches!(p, Part::Text(_)))
        .cloned()
        .collect();
    let calls = tool_calls_json(parts);
    let content = match (texts.is_empty(), calls.is_empty()) {
        (true, false) => Value::Null,
        _ => content_json(&texts),
    };
    let mut msg = json!({"role": "assistant", "content": content});
    if !calls.is_empty() {
        msg["tool_calls"] = Value::Array(calls);
    }
    msg
}

/// Which flavour of the wire an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// api.openai.com: the answer limit is `max_completion_tokens`, because its reasoning
    /// models refuse the deprecated `max_tokens`.
    OpenAi,
    /// Servers that copy the wire (vLLM, Ollama, llama.cpp, Groq…): `max_tokens`, which
    /// all of them read, where not all read the newer name.
    Compatible,
}

/// Renders a request for an OpenAI-compatible upstream (`max_tokens`); see
/// [`render_request_for`].
pub fn render_request(req: &ChatRequest) -> Value {
    render_request_for(req, Dialect::Compatible)
}

/// Renders a request for an upstream of the given dialect. Streams always ask for usage,
/// because the gateway must charge every call whatever the client asked for.
pub fn render_request_for(req: &ChatRequest, dialect: Dialect) -> Value {
    let mut messages = Vec::new();
    if let Some(s) = &req.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    for m in &req.messages {
        match m.role {
            Role::User => {
                messages.push(json!({"role": "user", "content": content_json(&m.content)}))
            }
            Role::Assistant => messages.push(assistant_json(&m.content)),
            Role::Tool => {
                let mut rest = Vec::new();
                for p in &m.content {
                    match p {
                        Part::ToolResult {
                            call_id, content, ..
                        } => messages.push(
                            json!({"role": "tool", "tool_call_id": call_id, "content": content}),
                        ),
                        other => rest.push(other.clone()),
                    }
                }
                // Text beside tool results (Anthropic allows it in one turn) follows them
                // as a user turn, which is where OpenAI allows it.
                let rest: Vec<Part> = rest
                    .into_iter()
                    .filter(|p| matches!(p, Part::Text(_) | Part::Image { .. }))
                    .collect();
                if !rest.is_empty() {
                    messages.push(json!({"role": "user", "content": content_json(&rest)}));
                }
            }
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(req.model));
    out.insert("messages".into(), Value::Array(messages));
    if !req.tools.is_empty() {
        let tools = req
            .tools
            .iter()
            .map(|t| {
                let mut f = json!({"name": t.name, "parameters": t.parameters});
                if let Some(d) = &t.description {
                    f["description"] = json!(d);
                }
                json!({"type": "function", "function": f})
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(tc) = &req.tool_choice {
        let v = match tc {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Tool(n) => json!({"type": "function", "function": {"name": n}}),
        };
        out.insert("tool_choice".into(), v);
    }
    if let Some(m) = req.max_tokens {
        let name = match dialect {
            Dialect::OpenAi => "max_completion_tokens",
            Dialect::Compatible => "max_tokens",
        };
        out.insert(name.into(), json!(m));
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

fn finish_from(s: &str) -> FinishReason {
    match s {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
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

/// `prompt_tokens` already includes `prompt_tokens_details.cached_tokens`, which is the
/// canonical convention, so the numbers are taken as they are.
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
           "total_tokens": u.total(),
           "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens}})
}

fn upstream_error(v: &Value) -> LlmError {
    LlmError::Upstream(
        v["error"]["message"]
            .as_str()
            .or_else(|| v["error"].as_str())
            .unwrap_or("no message")
            .to_owned(),
    )
}

/// Parses an upstream's (non-streamed) answer. Only the first choice is read: requests
/// never ask for more.
pub fn parse_response(body: &Value) -> Result<ChatResponse, LlmError> {
    if body.get("error").is_some_and(|e| !e.is_null()) {
        return Err(upstream_error(body));
    }
    let choice = body["choices"]
        .get(0)
        .ok_or_else(|| field("choices", "expected at least one choice"))?;
    let msg = choice["message"]
        .as_object()
        .ok_or_else(|| field("choices[0].message", "required object"))?;
    let mut content = Vec::new();
    match get(msg, "content") {
        Some(Value::String(t)) => push_text(&mut content, t),
        // Some compatible servers answer with parts, as requests may be written.
        Some(v @ Value::Array(_)) => {
            content = content_parts(Some(v), "choices[0].message.content", false)?
        }
        _ => {}
    }
    // A refusal replaces the content; keep it as text so the client sees why.
    if content.is_empty()
        && let Some(r) = msg.get("refusal").and_then(Value::as_str)
    {
        push_text(&mut content, r);
    }
    content.extend(tool_calls(msg, "choices[0].message")?);
    Ok(ChatResponse {
        id: body["id"].as_str().unwrap_or("chatcmpl").to_owned(),
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        content,
        finish: choice["finish_reason"]
            .as_str()
            .map_or(FinishReason::Stop, finish_from),
        usage: usage_from(&body["usage"]),
    })
}

/// Renders an answer for an OpenAI client. `created` is a Unix time in seconds. Texts are
/// joined into one `content` string, which is what the wire allows in an answer.
pub fn render_response(resp: &ChatResponse, created: i64) -> Value {
    let text = resp.text();
    let calls = tool_calls_json(&resp.content);
    let content = if text.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        json!(text)
    };
    let mut message = json!({"role": "assistant", "content": content, "refusal": null});
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
///
/// Stateless: a tool call starts where a chunk carries its `id` or name, and the
/// encoders ignore a repeated start of the same index, which some compatible servers send.
pub fn decode_chunk(data: &str) -> Result<Vec<StreamEvent>, LlmError> {
    if data.trim() == "[DONE]" {
        return Ok(vec![]);
    }
    let v: Value = serde_json::from_str(data).map_err(|e| LlmError::Json(e.to_string()))?;
    if v.get("error").is_some_and(|e| !e.is_null()) {
        return Err(upstream_error(&v));
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
        for key in ["content", "refusal"] {
            if let Some(t) = d[key].as_str()
                && !t.is_empty()
            {
                out.push(StreamEvent::TextDelta { text: t.to_owned() });
            }
        }
        for c in d["tool_calls"].as_array().into_iter().flatten() {
            let index = c["index"]
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .unwrap_or(0);
            let id = c["id"].as_str().filter(|s| !s.is_empty());
            let name = c["function"]["name"].as_str().filter(|s| !s.is_empty());
            if id.is_some() || name.is_some() {
                out.push(StreamEvent::ToolCallStart {
                    index,
                    id: id.unwrap_or_default().to_owned(),
                    name: name.unwrap_or_default().to_owned(),
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
                reason: finish_from(f),
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
    tools_started: BTreeSet<u32>,
    finished: bool,
    usage: Option<Usage>,
    closed: bool,
}

impl StreamEncoder {
    /// `include_usage` is the client's `stream_options.include_usage`: only then does the
    /// stream end with a usage chunk, because clients that did not ask may not expect a
    /// chunk with no choices.
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
            tools_started: BTreeSet::new(),
            finished: false,
            usage: None,
            closed: false,
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

    /// The frames for one event (none for usage, which is held for the end).
    pub fn encode(&mut self, event: &StreamEvent) -> Vec<String> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        match event {
            StreamEvent::Start { .. } => self.start(&mut out),
            StreamEvent::TextDelta { text } => {
                if !text.is_empty() {
                    self.start(&mut out);
                    out.push(self.chunk(json!({"content": text}), None));
                }
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                // Clients concatenate what each chunk says of a call: a repeated name
                // would be doubled.
                if self.tools_started.insert(*index) {
                    self.start(&mut out);
                    out.push(self.chunk(
                        json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                                               "function": {"name": name, "arguments": ""}}]}),
                        None,
                    ));
                }
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if !arguments.is_empty() {
                    self.start(&mut out);
                    out.push(self.chunk(
                        json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}),
                        None,
                    ));
                }
            }
            StreamEvent::Finish { reason } => {
                if !self.finished {
                    self.finished = true;
                    self.start(&mut out);
                    out.push(self.chunk(json!({}), Some(finish_str(reason))));
                }
            }
            StreamEvent::Usage { usage } => self.usage = Some(*usage),
        }
        out
    }

    /// The closing frames: the usage chunk (when the client asked for it) and `[DONE]`.
    /// `extra` fields (such as Berth's cost) are added to the usage chunk. A second call
    /// writes nothing.
    pub fn finish(&mut self, extra: Option<(&str, Value)>) -> Vec<String> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        self.closed = true;
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
