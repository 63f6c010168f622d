//! OpenAI Embeddings: the request is validated and forwarded with the upstream model name;
//! usage is read from the answer.

use crate::error::{LlmError, field};
use serde_json::Value;

/// Checks a client's embeddings request; returns its model and the input's size in
/// characters (for an estimate when the upstream reports no usage).
pub fn check_request(body: &Value) -> Result<(String, u64), LlmError> {
    let model = body["model"]
        .as_str()
        .ok_or_else(|| field("model", "required string"))?;
    let chars = match &body["input"] {
        Value::String(s) => s.chars().count(),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.chars().count()),
                // Token arrays (numbers, or arrays of numbers) count four characters a token.
                Value::Number(_) => Ok(4),
                Value::Array(a) => Ok(a.len() * 4),
                _ => Err(field(format!("input[{i}]"), "expected a string or tokens")),
            })
            .sum::<Result<usize, _>>()?,
        _ => return Err(field("input", "required: a string or a non-empty array")),
    };
    Ok((model.to_owned(), chars as u64))
}

/// The input tokens an upstream reported.
pub fn usage(answer: &Value) -> Option<u64> {
    answer["usage"]["prompt_tokens"].as_u64()
}
