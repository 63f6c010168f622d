//! The canonical chat model every wire format maps to and from.
//!
//! Conventions the parsers keep, so that the renderers may rely on them:
//! - the system prompt is `ChatRequest::system`, never a message;
//! - tool calls are only in `Assistant` messages, tool results only in `Tool` messages;
//! - no `Part::Text` is empty (an empty text carries nothing, and Anthropic refuses it);
//! - `Usage::input_tokens` counts every input token, cached ones included.

use serde::{Deserialize, Serialize};

/// One chat call, as a client asked for it.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ChatRequest {
    /// The model as the client named it (`provider/model` or an alias); the gateway
    /// replaces it with the upstream's own name before rendering.
    pub model: String,
    /// System (and OpenAI developer) instructions, joined with newlines.
    pub system: Option<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolDef>,
    pub tool_choice: Option<ToolChoice>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    pub stream: bool,
    /// The client asked for a usage chunk at the end of an OpenAI stream. Anthropic
    /// streams always report usage, so Anthropic requests parse with this set.
    pub include_usage: bool,
    /// The end user, for the provider's abuse tracking (OpenAI `user`, Anthropic
    /// `metadata.user_id`).
    pub user: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    /// Results of tool calls (OpenAI `role: tool`; Anthropic `tool_result` blocks).
    Tool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
}

impl Message {
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Message {
            role,
            content: vec![Part::Text(text.into())],
        }
    }

    /// The message's text parts joined.
    pub fn text_content(&self) -> String {
        text_of(&self.content)
    }
}

fn text_of(parts: &[Part]) -> String {
    parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Text(String),
    /// An image by URL; base64 images are `data:<media type>;base64,<data>` URLs, which
    /// is how OpenAI carries them and maps one to one onto Anthropic's base64 source.
    Image {
        url: String,
    },
    /// A call the model made. `arguments` is JSON text, as OpenAI carries it; Anthropic's
    /// `input` object is serialised into it.
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    /// The answer to a tool call. Only text: neither wire's tool results are rendered
    /// with images here.
    ToolResult {
        call_id: String,
        content: String,
        is_error: bool,
    },
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolDef {
    pub name: String,
    pub description: Option<String>,
    /// The JSON Schema of the arguments (OpenAI `parameters`, Anthropic `input_schema`).
    pub parameters: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    Auto,
    None,
    /// Some tool must be called (OpenAI `required`, Anthropic `any`).
    Required,
    /// This tool must be called.
    Tool(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    /// A reason with no counterpart in the other wire, passed through by name.
    Other(String),
}

/// Token usage. `input_tokens` includes `cached_input_tokens`: one number is what every
/// price is applied to, whichever wire reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// A complete (non-streamed) answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatResponse {
    pub id: String,
    pub model: String,
    /// Text and tool calls, in order.
    pub content: Vec<Part>,
    pub finish: FinishReason,
    pub usage: Option<Usage>,
}

impl ChatResponse {
    /// The answer's text parts joined.
    pub fn text(&self) -> String {
        text_of(&self.content)
    }
}

/// One step of a streamed answer, in either wire format.
///
/// A stream is `Start`, then text and tool-call events in order, then `Finish`, with
/// `Usage` anywhere. Its end is the end of the event sequence: the encoders' `finish`
/// writes the closing frames.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    Start {
        id: String,
        model: String,
    },
    TextDelta {
        text: String,
    },
    /// A tool call begins. `index` counts tool calls from 0 within the answer (OpenAI's
    /// `tool_calls[].index`), not content blocks.
    ToolCallStart {
        index: u32,
        id: String,
        name: String,
    },
    /// More argument JSON text for the tool call `index`.
    ToolCallDelta {
        index: u32,
        arguments: String,
    },
    Finish {
        reason: FinishReason,
    },
    /// Usage so far. Values are cumulative: a later one replaces an earlier one, never
    /// adds to it.
    Usage {
        usage: Usage,
    },
}
