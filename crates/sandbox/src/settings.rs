//! What a sandbox may use and how it is started; the defaults work on a Debian-like host.

use crate::protocol::HELPER_ARG;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// The default user and group of the helper and its sandboxes when the server runs as root:
/// an id from Debian's reserved, never-allocated range (65000-65533), so that no other
/// process of the host shares it (a process of the same user outside could trace the
/// sandbox's processes and read its files; `nobody` is often used by daemons).
pub const RUN_AS: u32 = 65533;

/// Code larger than this is refused before anything runs.
pub const MAX_CODE_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// The Python interpreter, inside one of the `read_only` paths.
    pub python: String,
    /// The POSIX shell.
    pub sh: String,
    /// The timeout of a call that names none.
    pub default_timeout: Duration,
    /// The largest timeout a call may ask for.
    pub max_timeout: Duration,
    /// Address space of each process (RLIMIT_AS).
    pub memory_bytes: u64,
    /// Processes and threads of one sandbox (RLIMIT_NPROC).
    pub max_processes: u64,
    /// The largest file a process may write (RLIMIT_FSIZE).
    pub max_file_bytes: u64,
    /// Open files per process (RLIMIT_NOFILE).
    pub max_open_files: u64,
    /// Size of the scratch tmpfs (`/sandbox`).
    pub scratch_bytes: u64,
    /// Bytes of stdout, and of stderr, kept; more sets `truncated`.
    pub max_output_bytes: u64,
    /// Sandboxes running at once on this node; further calls wait.
    pub max_concurrent: usize,
    /// Host paths bind-mounted read-only (those missing are skipped; links stay links).
    pub read_only: Vec<PathBuf>,
    /// The command that starts the helper process (a binary that runs
    /// `berth_sandbox::helper::main` when given [`HELPER_ARG`]).
    pub helper: Vec<OsString>,
    /// The user and group the helper runs as when the server runs as root. The sandbox's
    /// user namespace maps to them, never to host root.
    pub run_as: (u32, u32),
    /// Where the per-call root mount points are made (and removed).
    pub work_dir: PathBuf,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings {
            python: "/usr/bin/python3".to_owned(),
            sh: "/bin/sh".to_owned(),
            default_timeout: Duration::from_secs(10),
            max_timeout: Duration::from_secs(60),
            memory_bytes: 512 << 20,
            max_processes: 32,
            max_file_bytes: 16 << 20,
            max_open_files: 256,
            scratch_bytes: 64 << 20,
            max_output_bytes: 64 << 10,
            max_concurrent: 4,
            read_only: [
                "/usr",
                "/bin",
                "/sbin",
                "/lib",
                "/lib64",
                "/etc/ld.so.cache",
                "/etc/localtime",
                "/etc/alternatives",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
            helper: this_binary(),
            run_as: (RUN_AS, RUN_AS),
            work_dir: std::env::temp_dir(),
        }
    }
}

/// The running binary as the helper (`berth __sandbox-helper`).
pub fn this_binary() -> Vec<OsString> {
    let exe = std::env::current_exe()
        .map(PathBuf::into_os_string)
        .unwrap_or_else(|_| OsString::from("berth"));
    vec![exe, OsString::from(HELPER_ARG)]
}

impl SandboxSettings {
    /// Checks the settings once, at start, so that a call never meets a bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.default_timeout.is_zero() || self.default_timeout > self.max_timeout {
            return Err("default_timeout must be positive and at most max_timeout".into());
        }
        if self.max_timeout > Duration::from_secs(3600) {
            return Err("max_timeout must be at most 1h".into());
        }
        if self.max_processes < 2 {
            return Err("max_processes must be at least 2".into());
        }
        if self.memory_bytes < (16 << 20) {
            return Err("memory must be at least 16 MiB".into());
        }
        if self.max_concurrent == 0 {
            return Err("max_concurrent must be at least 1".into());
        }
        if self.max_output_bytes == 0 || self.scratch_bytes == 0 || self.max_open_files < 16 {
            return Err(
                "max_output_bytes and scratch must be positive, max_open_files at least 16".into(),
            );
        }
        for (key, path) in [("python", &self.python), ("sh", &self.sh)] {
            if !path.starts_with('/') {
                return Err(format!("{key} must be an absolute path"));
            }
        }
        if self.helper.is_empty() {
            return Err("helper must name a program".into());
        }
        Ok(())
    }
}
