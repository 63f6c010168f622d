//! Parse failures of client requests and upstream answers, naming the offending field.

/// Everything that can go wrong while reading a wire format. `Field` is what a client
/// sees as a 400 with `param` set to the field, so its path is written the way a reader
/// of the request would point at it (`messages[2].content[0].type`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// A field is missing or has the wrong shape.
    #[error("{field}: {message}")]
    Field { field: String, message: String },
    /// The body is not JSON at all.
    #[error("not valid JSON: {0}")]
    Json(String),
    /// An SSE event grew past the size limit.
    #[error("a streamed event is larger than {0} bytes")]
    EventTooLarge(usize),
    /// The upstream reported an error inside an answer or a stream (an `error` event or
    /// an OpenAI chunk carrying `error`): the call failed even though the HTTP status was
    /// 200, so it must not be mistaken for a malformed request.
    #[error("the upstream reported an error: {0}")]
    Upstream(String),
}

pub(crate) fn field(field: impl Into<String>, message: impl Into<String>) -> LlmError {
    LlmError::Field {
        field: field.into(),
        message: message.into(),
    }
}
