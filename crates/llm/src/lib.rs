//! LLM wire formats: OpenAI Chat Completions and Anthropic Messages, parsed into one
//! canonical form and rendered back out, streamed or not; OpenAI Embeddings; SSE parsing;
//! token estimates. Knows no tenants and does no IO.

pub mod anthropic;
pub mod canonical;
pub mod embeddings;
mod error;
mod fields;
pub mod openai;
pub mod sse;
pub mod tokens;

pub use canonical::*;
pub use error::LlmError;
