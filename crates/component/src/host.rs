//! What the caller provides: [`AgentHost`], the one trait through which every import of a
//! component is served, so that the server can route them through the same gateway, tool,
//! store, metering, audit and egress paths as the built-in loop, for the run's tenant.
//!
//! By the time a method is called the host function has already checked the manifest's
//! allow-list (model, tool pattern, `allowed_hosts`) and the sizes; the implementation adds
//! the tenant's policy and the platform's own guards.

use async_trait::async_trait;
use berth_llm::{ChatRequest, ChatResponse, Message, ToolDef};

/// A failed import, as the component sees it (`error { code, message }` in WIT).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct HostError {
    /// `denied`, `not_found`, `invalid`, `too_large`, `failed`, `budget_exceeded`,
    /// `approval_required`…
    pub code: String,
    /// Shown to the component: never put a secret or an internal detail here.
    pub message: String,
}

impl HostError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        HostError {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    pub fn denied(message: impl Into<String>) -> Self {
        Self::new("denied", message)
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::new("failed", message)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// An outgoing request that passed the `allowed_hosts` check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Upper case: `GET`, `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD` or `OPTIONS`.
    pub method: String,
    /// Absolute, `http` or `https`, with no credentials.
    pub url: url::Url,
    /// Never `host`, `content-length`, `transfer-encoding`, `connection` (set by the client).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why an outgoing request got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The platform refused the destination (the egress guard: private, loopback or
    /// metadata addresses), or the tenant's policy did.
    #[error("denied: {0}")]
    Denied(String),
    /// Connection failure, timeout, an answer too large.
    #[error("failed: {0}")]
    Failed(String),
}

/// Serves a component's imports for one run. One value per run: it knows the run's tenant,
/// agent, version, thread and caller, and attributes every call to them.
#[async_trait]
pub trait AgentHost: Send + Sync {
    /// One model turn. `request.model` is the manifest's model or one of its fallbacks.
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, HostError>;
    /// The tools this run may offer the model; the host function keeps only those matching
    /// the manifest's `tools.use`.
    async fn list_tools(&self) -> Vec<ToolDef>;
    /// Calls a tool whose name matches `tools.use`; `arguments` is JSON text.
    async fn call_tool(&self, name: &str, arguments: &str) -> Result<String, HostError>;
    /// The agent's key-value store, scoped by the implementation to tenant and agent.
    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, HostError>;
    async fn kv_set(&self, key: &str, value: Vec<u8>) -> Result<(), HostError>;
    async fn kv_delete(&self, key: &str) -> Result<(), HostError>;
    /// Earlier messages of the run's thread, oldest first (empty without a thread).
    async fn history(&self) -> Vec<Message>;
    /// A log line of the run (the component's own, or its captured stdout and stderr).
    fn log(&self, level: LogLevel, message: &str);
    /// An outgoing request to an origin in `allowed_hosts`; the implementation must send it
    /// through the egress guard, which refuses private addresses.
    async fn http(&self, request: HttpRequest) -> Result<HttpResponse, HttpError>;
    /// A non-secret configuration variable of the agent.
    fn config(&self, key: &str) -> Option<String>;
}
