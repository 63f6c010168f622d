//! Token estimates for when an upstream reports no usage: deterministic, conservative,
//! and never zero for non-empty text, because a missing report must not bill as free.

use crate::canonical::{ChatRequest, Part};

/// About four characters per token for English text, rounded up; at least one.
pub fn estimate_text(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    (text.chars().count() as u64).div_ceil(4).max(1)
}

/// Input tokens of a request: its texts, tool definitions and a few tokens per message.
pub fn estimate_request(req: &ChatRequest) -> u64 {
    const PER_MESSAGE: u64 = 4;
    const PER_IMAGE: u64 = 85;
    let mut total = req.system.as_deref().map_or(0, estimate_text);
    for m in &req.messages {
        total += PER_MESSAGE;
        for p in &m.content {
            total += match p {
                Part::Text(t) => estimate_text(t),
                Part::Image { .. } => PER_IMAGE,
                Part::ToolCall {
                    name, arguments, ..
                } => estimate_text(name) + estimate_text(arguments),
                Part::ToolResult { content, .. } => estimate_text(content),
            };
        }
    }
    for t in &req.tools {
        total += estimate_text(&t.name)
            + t.description.as_deref().map_or(0, estimate_text)
            + estimate_text(&t.parameters.to_string());
    }
    total.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::{Message, Role};

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
    }
}
