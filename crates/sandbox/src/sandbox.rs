//! The server's side of one execution: a fresh root directory, the helper process started
//! as an unprivileged user in its own process group, the spec sent, the report read, and
//! everything killed and removed whatever happens (timeout, cancelled call, dead helper).

use crate::protocol::{Limits, Report, Spec};
use crate::settings::SandboxSettings;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// Time the helper gets beyond the call's timeout to report before it is killed.
const GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Python,
    Sh,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Sh => "sh",
        }
    }
}

/// The result of a run, as the tool returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutcome {
    /// The exit status, `128 + n` after signal `n`, `null` when killed at the timeout.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
    pub timed_out: bool,
    /// stdout or stderr was longer than the cap and was cut.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    /// Nothing ran: the kernel refused the namespaces, or the helper could not start.
    #[error("the code sandbox is unavailable on this host: {0}")]
    Unavailable(String),
}

/// Runs code in sandboxes, at most `max_concurrent` at once.
#[derive(Clone)]
pub struct Sandbox {
    settings: Arc<SandboxSettings>,
    permits: Arc<Semaphore>,
}

impl Sandbox {
    pub fn new(settings: SandboxSettings) -> Self {
        let permits = Arc::new(Semaphore::new(settings.max_concurrent.max(1)));
        Sandbox {
            settings: Arc::new(settings),
            permits,
        }
    }

    pub fn settings(&self) -> &SandboxSettings {
        &self.settings
    }

    /// Runs `code` with `timeout` (the caller has checked both against the settings).
    pub async fn run(
        &self,
        language: Language,
        code: &str,
        timeout: Duration,
    ) -> Result<ExecOutcome, SandboxError> {
        let unavailable = SandboxError::Unavailable;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| unavailable("the sandbox is shutting down".into()))?;
        let s = &*self.settings;
        let as_root = nix::unistd::geteuid().is_root();
        let root = tempfile::Builder::new()
            .prefix("berth-sandbox-")
            .tempdir_in(&s.work_dir)
            .map_err(|e| {
                unavailable(format!(
                    "cannot create a directory in {}: {e}",
                    s.work_dir.display()
                ))
            })?;
        if as_root {
            std::os::unix::fs::chown(root.path(), Some(s.run_as.0), Some(s.run_as.1))
                .map_err(|e| unavailable(format!("cannot hand the root to the helper: {e}")))?;
        }
        let (program, file_name) = match language {
            Language::Python => (s.python.clone(), "main.py"),
            Language::Sh => (s.sh.clone(), "main.sh"),
        };
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let spec = Spec {
            root: root.path().to_path_buf(),
            program,
            file_name: file_name.to_owned(),
            code: code.to_owned(),
            timeout_ms,
            read_only: s.read_only.clone(),
            limits: Limits {
                memory_bytes: s.memory_bytes,
                max_processes: s.max_processes,
                max_file_bytes: s.max_file_bytes,
                max_open_files: s.max_open_files,
                // The wall clock ends the run first; this bounds each process's CPU too.
                cpu_seconds: timeout_ms.div_ceil(1000) + 1,
                scratch_bytes: s.scratch_bytes,
                max_output_bytes: s.max_output_bytes,
            },
        };
        let spec = serde_json::to_vec(&spec).map_err(|e| unavailable(e.to_string()))?;

        let (program, args) = s
            .helper
            .split_first()
            .ok_or_else(|| unavailable("no helper configured".into()))?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if as_root {
            // std also drops the supplementary groups when it changes the user as root.
            cmd.uid(s.run_as.0).gid(s.run_as.1);
        }
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| {
            unavailable(format!(
                "cannot start the helper {}: {e}",
                program.to_string_lossy()
            ))
        })?;
        let mut group = Group(child.id().and_then(|p| i32::try_from(p).ok()));
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(unavailable("the helper has no pipes".into()));
        };
        // JSON escaping grows text at most six-fold.
        let report_cap = s.max_output_bytes.saturating_mul(12) + (1 << 20);
        let talk = async {
            let send = async {
                let r = stdin.write_all(&spec).await;
                drop(stdin);
                r
            };
            let (sent, out, err, status) = tokio::join!(
                send,
                read_capped(stdout, report_cap),
                read_capped(stderr, 16 << 10),
                child.wait()
            );
            (sent, out, err, status)
        };
        let Ok((sent, out, err, status)) = tokio::time::timeout(timeout + GRACE, talk).await else {
            // The helper did not answer in time: kill everything it started.
            group.kill();
            tracing::warn!("sandbox helper did not report in time; killed");
            return Ok(ExecOutcome {
                exit_code: None,
                stdout: String::new(),
                stderr: String::new(),
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                timed_out: true,
                truncated: false,
            });
        };
        group.disarm();
        let report: Option<Report> = serde_json::from_slice(&out).ok();
        let Some(report) = report else {
            let why = String::from_utf8_lossy(&err).trim().to_owned();
            let status = status.map(|s| s.to_string()).unwrap_or_default();
            let sent = sent.err().map(|e| format!("; writing the spec: {e}"));
            return Err(unavailable(format!(
                "the helper gave no report ({status}{}){}",
                sent.unwrap_or_default(),
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                }
            )));
        };
        if let Some(e) = report.error {
            return Err(unavailable(e));
        }
        // Removing the mount points can wait on RCU grace periods while the kernel still
        // detaches the dead container's mounts (tens of ms on a busy host): off the call.
        tokio::task::spawn_blocking(move || drop(root));
        Ok(ExecOutcome {
            exit_code: report.exit_code,
            stdout: report.stdout,
            stderr: report.stderr,
            duration_ms: report.duration_ms,
            timed_out: report.timed_out,
            truncated: report.truncated,
        })
    }
}

async fn read_capped(r: impl AsyncRead + Unpin, cap: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = r.take(cap).read_to_end(&mut buf).await;
    buf
}

/// The helper's process group: killed on drop unless the helper was reaped first, so a
/// cancelled call (its future dropped) leaves nothing running.
struct Group(Option<i32>);

impl Group {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}
