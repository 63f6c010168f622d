//! What one instance's store holds: the caller's host, the run's grants and counters, the
//! memory limiter, and a WASI context with nothing in it (no files, no environment, no
//! sockets) whose stdout and stderr are captured for the run's log.

use crate::engine::Settings;
use crate::host::{AgentHost, LogLevel};
use crate::run::Grants;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub(crate) struct State {
    pub host: Arc<dyn AgentHost>,
    pub grants: Grants,
    pub caps: Caps,
    pub limiter: MemoryLimiter,
    pub log_lines: u32,
    pub log_dropped: u32,
    pub stdout: Capture,
    pub stderr: Capture,
    wasi: WasiCtx,
    table: ResourceTable,
}

/// Sizes the host functions accept, copied from [`Settings`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    pub max_log_lines: u32,
    pub max_log_line_bytes: usize,
    pub max_kv_key_bytes: usize,
    pub max_kv_value_bytes: usize,
    pub max_http_body_bytes: usize,
}

impl State {
    pub fn new(
        host: Arc<dyn AgentHost>,
        grants: Grants,
        settings: &Settings,
        memory_bytes: usize,
    ) -> State {
        let stdout = Capture::new(settings.max_captured_output_bytes);
        let stderr = Capture::new(settings.max_captured_output_bytes);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        State {
            host,
            grants,
            caps: Caps {
                max_log_lines: settings.max_log_lines,
                max_log_line_bytes: settings.max_log_line_bytes,
                max_kv_key_bytes: settings.max_kv_key_bytes,
                max_kv_value_bytes: settings.max_kv_value_bytes,
                max_http_body_bytes: settings.max_http_body_bytes,
            },
            limiter: MemoryLimiter {
                max_bytes: memory_bytes,
                used: 0,
                peak: 0,
                hit: false,
            },
            log_lines: 0,
            log_dropped: 0,
            stdout,
            stderr,
            wasi,
            table: ResourceTable::new(),
        }
    }

    /// Sends a line to the run's log unless the run's quota of lines is spent.
    pub fn log(&mut self, level: LogLevel, message: &str) {
        if self.log_lines >= self.caps.max_log_lines {
            self.log_dropped = self.log_dropped.saturating_add(1);
            return;
        }
        self.log_lines += 1;
        let line = truncate(message, self.caps.max_log_line_bytes);
        self.host.log(level, line);
    }

    /// After the run: the captured stdout (info) and stderr (warn) lines, and how many
    /// lines were dropped.
    pub fn flush_output(&mut self) {
        for (capture, level) in [
            (self.stdout.clone(), LogLevel::Info),
            (self.stderr.clone(), LogLevel::Warn),
        ] {
            let text = capture.text();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                self.log(level, line);
            }
        }
        if self.log_dropped > 0 {
            let note = format!("{} log lines dropped (limit per run)", self.log_dropped);
            self.host.log(LogLevel::Warn, &note);
        }
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `memory_mb` for all the linear memories of one instance together. Growth beyond it
/// traps (rather than failing the `memory.grow`), so that the breach is reported as
/// `memory_limit` wherever it happens, and `hit` records it for the classification.
pub(crate) struct MemoryLimiter {
    pub max_bytes: usize,
    pub used: usize,
    /// The most `used` has been.
    pub peak: usize,
    pub hit: bool,
}

/// Tables are bounded too (a table bomb is a memory bomb); elements are pointer-sized.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.max_bytes {
            self.hit = true;
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} MiB reached",
                self.max_bytes >> 20
            )));
        }
        self.used = total;
        self.peak = self.peak.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.hit = true;
            return Err(wasmtime::Error::msg("table limit reached"));
        }
        Ok(true)
    }
}

/// A captured stdout or stderr: keeps the first `max` bytes and silently drops the rest
/// (a write never fails, so a chatty guest does not panic on a full pipe).
#[derive(Clone)]
pub(crate) struct Capture {
    buf: Arc<Mutex<Vec<u8>>>,
    max: usize,
}

impl Capture {
    fn new(max: usize) -> Self {
        Capture {
            buf: Arc::new(Mutex::new(Vec::new())),
            max,
        }
    }

    pub fn text(&self) -> String {
        let buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// The last `max` bytes (for an error message: a panic's text is at the end).
    pub fn tail(&self, max: usize) -> String {
        let text = self.text();
        let mut start = text.len().saturating_sub(max);
        while start < text.len() && !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].trim().to_owned()
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl Capture {
    fn push(&self, data: &[u8]) {
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.max.saturating_sub(buf.len());
        buf.extend_from_slice(&data[..data.len().min(room)]);
    }
}

impl StdoutStream for Capture {
    /// Written synchronously (no background task), so a panic's message is in the capture
    /// by the time the trap is classified.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always writable: what does not fit is dropped, never refused.
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
