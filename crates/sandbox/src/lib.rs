//! The code sandbox: the built-in tool `sandbox__exec` runs untrusted Python or shell code
//! in a fresh container (user, PID, mount, network, IPC, UTS and cgroup namespaces; a
//! read-only view of the system directories and nothing else of the host; a size-capped
//! scratch tmpfs; rlimits; a seccomp deny list; a wall-clock timeout; capped output).
//!
//! The server never forks into a container itself: each call starts the helper process
//! (`helper.rs`, `berth __sandbox-helper`) as an unprivileged user, which builds the
//! container with hakoniwa and reports back (`protocol.rs`). `sandbox.rs` is the server's
//! side of that exchange; `tool.rs` the `ToolHost` with validation, metering and audit.

pub mod fair;
pub mod helper;
pub mod protocol;
pub mod sandbox;
pub mod settings;
#[cfg(feature = "tool")]
pub mod tool;

pub use protocol::HELPER_ARG;
pub use sandbox::{ExecOutcome, Language, Sandbox, SandboxError};
pub use settings::{MAX_CODE_BYTES, SandboxSettings};
#[cfg(feature = "tool")]
pub use tool::{SandboxTools, TOOL_NAME};
