//! Token estimates for when an upstream reports no usage: deterministic, conservative,
//! and never zero for non-empty text, because a missing report must not bill as free.
//!
//! No tokenizer is shipped (each model has its own, and they are megabytes); instead text
//! is weighed so that the estimate errs high for every script: English runs about four
//! characters a token, while other scripts take far more tokens per character.

use crate::canonical::{ChatRequest, ChatResponse, Part};

/// Tokens charged for an image, whose size is unknown without decoding it: about what
/// either provider charges for a typical one-megapixel picture (OpenAI 765 for 1024×1024
/// at high detail, Anthropic about 1,400 for 1092×1092), rounded to a round number.
pub const IMAGE_TOKENS: u64 = 1_000;
/// Per-message framing (role markers and separators), as OpenAI documents it.
pub const MESSAGE_TOKENS: u64 = 4;
/// Per-tool framing around a definition's name, description and schema.
pub const TOOL_TOKENS: u64 = 8;

/// A text's weight in quarter tokens: one per ASCII character, two per two-byte UTF-8
/// character (accented Latin, Greek, Cyrillic, Hebrew, Arabic: around half a token
/// each), four per longer one (CJK, emoji: a token or more each).
pub fn text_weight(text: &str) -> u64 {
    text.chars()
        .map(|c| match c.len_utf8() {
            1 => 1,
            2 => 2,
            _ => 4,
        })
        .sum()
}

/// Estimated tokens of a text: its weight over four, rounded up; zero only when empty.
pub fn estimate_text(text: &str) -> u64 {
    text_weight(text).div_ceil(4)
}

/// Estimated tokens of content parts (a message's, or an answer's).
pub fn estimate_parts(parts: &[Part]) -> u64 {
    parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => estimate_text(t),
            Part::Image { .. } => IMAGE_TOKENS,
            Part::ToolCall {
                id,
                name,
                arguments,
            } => estimate_text(id) + estimate_text(name) + estimate_text(arguments),
            Part::ToolResult {
                call_id, content, ..
            } => estimate_text(call_id) + estimate_text(content),
        })
        .sum()
}

/// Input tokens of a request: its texts, tool definitions and a few tokens per message;
/// at least one, since every call sends something.
pub fn estimate_request(req: &ChatRequest) -> u64 {
    let mut total = req
        .system
        .as_deref()
        .map_or(0, |s| MESSAGE_TOKENS + estimate_text(s));
    for m in &req.messages {
        total += MESSAGE_TOKENS + estimate_parts(&m.content);
    }
    for t in &req.tools {
        total += TOOL_TOKENS
            + estimate_text(&t.name)
            + t.description.as_deref().map_or(0, estimate_text)
            + estimate_text(&t.parameters.to_string());
    }
    total.max(1)
}

/// Output tokens of an answer: its text and tool calls; at least one, since even an
/// empty answer costs the token that ended it.
pub fn estimate_response(resp: &ChatResponse) -> u64 {
    estimate_parts(&resp.content).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::{FinishReason, Message, Role, ToolDef};

    #[test]
    fn never_zero_for_content() {
        assert_eq!(estimate_text(""), 0);
        assert_eq!(estimate_text("a"), 1);
        assert_eq!(estimate_text("abcd"), 1);
        assert_eq!(estimate_text("abcde"), 2);
        let req = ChatRequest {
            messages: vec![Message::text(Role::User, "hello there")],
            ..Default::default()
        };
        assert_eq!(estimate_request(&req), 4 + 3);
        assert_eq!(estimate_request(&ChatRequest::default()), 1);
        let empty = ChatResponse {
            id: String::new(),
            model: String::new(),
            content: vec![],
            finish: FinishReason::Stop,
            usage: None,
        };
        assert_eq!(estimate_response(&empty), 1);
    }

    #[test]
    fn other_scripts_weigh_more_than_english() {
        // Real tokenizers give CJK about a token a character, Cyrillic about half.
        assert_eq!(estimate_text("你好世界"), 4);
        assert_eq!(estimate_text("привет"), 3);
        assert_eq!(estimate_text("👍"), 1);
        assert_eq!(estimate_text("café"), 2);
    }

    #[test]
    fn requests_count_every_part() {
        let req = ChatRequest {
            system: Some("be brief".into()),
            messages: vec![
                Message {
                    role: Role::User,
                    content: vec![
                        Part::Text("look".into()),
                        Part::Image {
                            url: "https://x/y.png".into(),
                        },
                    ],
                },
                Message {
                    role: Role::Assistant,
                    content: vec![Part::ToolCall {
                        id: "c1".into(),
                        name: "f".into(),
                        arguments: "{}".into(),
                    }],
                },
            ],
            tools: vec![ToolDef {
                name: "f".into(),
                description: None,
                parameters: serde_json::json!({}),
            }],
            ..Default::default()
        };
        let want = (4 + 2) + (4 + 1 + IMAGE_TOKENS) + (4 + 1 + 1 + 1) + (TOOL_TOKENS + 1 + 1);
        assert_eq!(estimate_request(&req), want);
    }
}
