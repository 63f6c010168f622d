//! The one error type of the component host: a code the run engine can map to a run
//! failure, a message for people, and what the run consumed before it ended (a failed run
//! is still metered).

use std::fmt;

/// Why a component did not produce an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The component used up its `cpu_ms` (metered in fuel).
    CpuLimit,
    /// The component asked for more than its `memory_mb`.
    MemoryLimit,
    /// The run took longer than its wall-clock timeout (waiting on imports included).
    Timeout,
    /// The component trapped: a panic, `unreachable`, a stack overflow, a bad memory access.
    Trap,
    /// The component's `run` returned its own error (`agent_code` has its code).
    AgentError,
    /// Not a component of the `berth:agent` world, a corrupt artifact, or limits this
    /// engine cannot give.
    Invalid,
    /// Every instance slot of the pool is taken; try again later.
    Busy,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::CpuLimit => "cpu_limit",
            ErrorCode::MemoryLimit => "memory_limit",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Trap => "trap",
            ErrorCode::AgentError => "agent_error",
            ErrorCode::Invalid => "invalid",
            ErrorCode::Busy => "busy",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run (or compile, or load) that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ComponentError {
    pub code: ErrorCode,
    pub message: String,
    /// The code the component itself gave, for [`ErrorCode::AgentError`].
    pub agent_code: Option<String>,
    /// CPU time the component used before it failed (from fuel, see [`crate::RunOutput`]).
    pub compute_ms: u64,
    pub fuel_used: u64,
}

impl ComponentError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ComponentError {
            code,
            message: message.into(),
            agent_code: None,
            compute_ms: 0,
            fuel_used: 0,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, message)
    }
}
