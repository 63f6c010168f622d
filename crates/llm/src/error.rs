//! Parse failures of client requests and upstream answers, naming the offending field.

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
}

pub(crate) fn field(field: impl Into<String>, message: impl Into<String>) -> LlmError {
    LlmError::Field {
        field: field.into(),
        message: message.into(),
    }
}
