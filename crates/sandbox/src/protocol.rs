//! What the server tells the helper process (one JSON `Spec` on its stdin) and what the
//! helper answers (one JSON `Report` on its stdout).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The argument that makes a binary act as the sandbox helper (`berth __sandbox-helper`).
pub const HELPER_ARG: &str = "__sandbox-helper";

/// The sandbox's user and group inside its user namespace (mapped to the helper's own).
pub const SANDBOX_UID: u32 = 1000;
pub const SANDBOX_GID: u32 = 1000;

/// The scratch directory inside the sandbox: working directory, `HOME`, `TMPDIR`, and the
/// only writable place.
pub const SCRATCH: &str = "/sandbox";

/// Where the code is put inside the sandbox (read-only), without the extension.
pub const CODE_DIR: &str = "/code";

/// One execution, as the helper needs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// An empty host directory owned by the helper's user: the container's root mount point.
    pub root: PathBuf,
    /// The interpreter (a path that the read-only system directories contain).
    pub program: String,
    /// The name of the code file under [`CODE_DIR`], e.g. `main.py`.
    pub file_name: String,
    pub code: String,
    pub timeout_ms: u64,
    /// Host paths bind-mounted read-only at the same place (missing ones are skipped;
    /// symbolic links such as `/bin -> usr/bin` are recreated as links).
    pub read_only: Vec<PathBuf>,
    pub limits: Limits,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// RLIMIT_AS of every process.
    pub memory_bytes: u64,
    /// RLIMIT_NPROC: processes (and threads) of the sandbox's user, its init included.
    pub max_processes: u64,
    /// RLIMIT_FSIZE: the largest file a process may write.
    pub max_file_bytes: u64,
    /// RLIMIT_NOFILE.
    pub max_open_files: u64,
    /// RLIMIT_CPU of every process, in seconds.
    pub cpu_seconds: u64,
    /// Size of the scratch tmpfs.
    pub scratch_bytes: u64,
    /// Bytes kept of stdout, and of stderr; the rest is read and dropped.
    pub max_output_bytes: u64,
}

/// What happened. `error` is set (and nothing ran) when the sandbox could not be set up.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Report {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The exit status, `128 + n` after signal `n`, `None` when killed at the timeout.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Wall time from the start of the sandbox to the end of its last process.
    pub duration_ms: u64,
    pub timed_out: bool,
    pub truncated: bool,
}

impl Report {
    pub fn failed(message: impl Into<String>) -> Self {
        Report {
            error: Some(message.into()),
            ..Report::default()
        }
    }
}
