//! The file model of `berth.toml`: one serde struct per table, each with its defaults (a
//! missing key is its default, an unknown key is refused), and what each table means to
//! the crate that takes it (`settings()`, `limits()`…).

use super::{ConfigError, parse_duration, value_error};
use berth_core::Plan;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The whole file. Secrets are `serde(skip)`: a file cannot set them, only the environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Defaults to `sqlite://<data_dir>/berth.db`.
    pub database_url: Option<String>,
    /// Shared rate limits across every process pointed at it; memory (this node) otherwise.
    pub redis_url: Option<String>,
    /// Prepended to every Redis key, so deployments (or tests) can share one Redis.
    #[serde(default = "default_redis_key_prefix")]
    pub redis_key_prefix: String,
    /// Defaults to `<data_dir>/master.key`.
    pub master_key_file: Option<PathBuf>,
    #[serde(default)]
    pub egress: EgressConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub runs: RunsConfig,
    #[serde(default)]
    pub sandbox: SandboxConfig,
    #[serde(default)]
    pub mcp: McpConfig,
    #[serde(default)]
    pub gateway: GatewayConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub usage: UsageConfig,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub prices: BTreeMap<String, PriceConfig>,
    #[serde(default)]
    pub plans: BTreeMap<String, Plan>,
    /// The plan of tenants created without one.
    #[serde(default = "default_plan")]
    pub default_plan: String,
    /// From `BERTH_OPERATOR_TOKEN` only; never read from a file.
    #[serde(skip)]
    pub operator_token: Option<String>,
    /// From `BERTH_MASTER_KEY` only; never read from a file.
    #[serde(skip)]
    pub master_key: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// CIDRs that tenant-supplied destinations may reach besides public addresses.
    #[serde(default)]
    pub allow_private: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub jwt: Option<JwtConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub jwks_url: Option<String>,
    /// Name of the environment variable holding the HS256 secret.
    pub hs256_secret_env: Option<String>,
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// The value of the variable `hs256_secret_env` names, resolved at load time.
    #[serde(skip)]
    pub hs256_secret: Option<String>,
}

/// `[runs]`: how agent runs are executed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsConfig {
    /// Queued (asynchronous or resumed) runs this node executes at once.
    #[serde(default = "default_run_workers")]
    pub workers: usize,
    /// A running run whose process has not renewed it for this long is failed as
    /// `interrupted` (it belonged to a process that died).
    #[serde(default = "default_run_lease")]
    pub lease: String,
    /// How long a tool call waits for a human decision before its approval expires (the
    /// model is then told the call was not approved).
    #[serde(default = "default_approval_timeout")]
    pub approval_timeout: String,
    /// Runs this node executes at once, all tenants together; under overload the lowest
    /// plan tiers are refused first (503).
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// Queued runs one tenant may have waiting on this node (beyond: 429).
    #[serde(default = "default_max_queued")]
    pub max_queued_per_tenant: usize,
    /// The largest input text a run accepts, in KiB (beyond: 413).
    #[serde(default = "default_max_input_kb")]
    pub max_input_kb: usize,
}

fn default_max_input_kb() -> usize {
    1024
}

fn default_max_concurrent() -> usize {
    256
}
fn default_max_queued() -> usize {
    1000
}

fn default_run_workers() -> usize {
    8
}
fn default_run_lease() -> String {
    "30s".to_owned()
}
fn default_approval_timeout() -> String {
    "24h".to_owned()
}

impl Default for RunsConfig {
    fn default() -> Self {
        RunsConfig {
            workers: default_run_workers(),
            lease: default_run_lease(),
            approval_timeout: default_approval_timeout(),
            max_concurrent: default_max_concurrent(),
            max_queued_per_tenant: default_max_queued(),
            max_input_kb: default_max_input_kb(),
        }
    }
}

impl RunsConfig {
    /// The settings the runner takes (durations were validated at load).
    pub fn settings(&self) -> berth_platform::RunSettings {
        let d = berth_platform::RunSettings::default();
        berth_platform::RunSettings {
            workers: self.workers,
            lease: parse_duration(&self.lease).unwrap_or(d.lease),
            approval_timeout: parse_duration(&self.approval_timeout).unwrap_or(d.approval_timeout),
            max_concurrent: self.max_concurrent,
            max_queued_per_tenant: self.max_queued_per_tenant,
            max_input_bytes: self.max_input_kb.saturating_mul(1024),
        }
    }
}

/// `[mcp]`: how Berth talks to tenants' MCP servers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// Connecting (and the protocol handshake) to a server.
    #[serde(default = "default_mcp_connect_timeout")]
    pub connect_timeout: String,
    /// One tool call or tool listing; a server slower than this fails the call.
    #[serde(default = "default_mcp_call_timeout")]
    pub call_timeout: String,
    /// How often every registered server is checked (and its tools listed again).
    #[serde(default = "default_mcp_health_interval")]
    pub health_interval: String,
    /// Largest tool result handed to a model or an `/mcp` client.
    #[serde(default = "default_mcp_max_result_kb")]
    pub max_result_kb: usize,
    /// Tools kept per server (the rest are left out and named in `last_error`).
    #[serde(default = "default_mcp_max_tools")]
    pub max_tools_per_server: usize,
}

fn default_mcp_connect_timeout() -> String {
    "10s".to_owned()
}
fn default_mcp_call_timeout() -> String {
    "30s".to_owned()
}
fn default_mcp_health_interval() -> String {
    "30s".to_owned()
}
fn default_mcp_max_result_kb() -> usize {
    1024
}
fn default_mcp_max_tools() -> usize {
    256
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            connect_timeout: default_mcp_connect_timeout(),
            call_timeout: default_mcp_call_timeout(),
            health_interval: default_mcp_health_interval(),
            max_result_kb: default_mcp_max_result_kb(),
            max_tools_per_server: default_mcp_max_tools(),
        }
    }
}

impl McpConfig {
    /// The settings the registry takes (durations were validated at load).
    pub fn settings(&self) -> berth_tools::RegistryConfig {
        let d = |v: &str, fallback: u64| {
            parse_duration(v).unwrap_or(std::time::Duration::from_secs(fallback))
        };
        let max_result_bytes = self.max_result_kb.saturating_mul(1024);
        berth_tools::RegistryConfig {
            limits: berth_tools::UpstreamLimits {
                connect_timeout: d(&self.connect_timeout, 10),
                call_timeout: d(&self.call_timeout, 30),
                // The JSON-RPC envelope around a result is allowed some room beyond it.
                max_response_bytes: max_result_bytes.saturating_mul(2).max(64 * 1024),
            },
            health_interval: d(&self.health_interval, 30),
            max_tools_per_server: self.max_tools_per_server,
            max_result_bytes,
        }
    }
}

/// `[gateway]`: how much of a provider's answers the gateway reads (a tenant's own provider
/// may be anyone); beyond it the call fails with `upstream_too_large` (502).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// A whole non-streamed answer (chat or embeddings).
    #[serde(default = "default_gateway_max_response_mb")]
    pub max_response_mb: usize,
    /// One event of a streamed answer.
    #[serde(default = "default_gateway_max_event_mb")]
    pub max_stream_event_mb: usize,
    /// A whole streamed answer.
    #[serde(default = "default_gateway_max_stream_mb")]
    pub max_stream_mb: usize,
}

fn default_gateway_max_response_mb() -> usize {
    32
}
fn default_gateway_max_event_mb() -> usize {
    8
}
fn default_gateway_max_stream_mb() -> usize {
    64
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_response_mb: default_gateway_max_response_mb(),
            max_stream_event_mb: default_gateway_max_event_mb(),
            max_stream_mb: default_gateway_max_stream_mb(),
        }
    }
}

impl GatewayConfig {
    pub fn body_limits(&self) -> berth_gateway::BodyLimits {
        let mb = |n: usize| n.saturating_mul(1 << 20);
        berth_gateway::BodyLimits {
            max_body_bytes: mb(self.max_response_mb),
            max_event_bytes: mb(self.max_stream_event_mb),
            max_stream_bytes: mb(self.max_stream_mb),
        }
    }
}

/// `[usage]`: how usage is kept before it reaches the database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageConfig {
    /// Journal every usage event and tool-call audit entry to `<data_dir>/journal`, synced
    /// before the answer it belongs to is finished, so a killed process loses no answered
    /// call. Off: they wait in memory for their batch (up to 200 ms for usage, one write for
    /// audit entries), which a `kill -9` loses.
    #[serde(default = "default_true")]
    pub journal: bool,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig { journal: true }
    }
}

/// `[http]`: the server's connections. A client holds a connection only while it sends
/// its request's headers in time, and one address cannot take them all.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The longest a client may take to send a request's headers (also how long an idle
    /// keep-alive connection stays open).
    #[serde(default = "default_header_read_timeout_secs")]
    pub header_read_timeout_secs: u64,
    /// Open connections in all; keep it below the process's file-descriptor limit.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Open connections from one client address (raise it behind a load balancer).
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
}

fn default_header_read_timeout_secs() -> u64 {
    10
}
fn default_max_connections() -> usize {
    4096
}
fn default_max_connections_per_ip() -> usize {
    256
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout_secs: default_header_read_timeout_secs(),
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
        }
    }
}

impl HttpConfig {
    pub fn limits(&self) -> berth_api::conn::ConnLimits {
        berth_api::conn::ConnLimits {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            header_read_timeout: std::time::Duration::from_secs(self.header_read_timeout_secs),
        }
    }
}

/// `[sandbox]`: the built-in tool `sandbox__exec` (untrusted code in a fresh container).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Offer `sandbox__exec` at all (agents still need it in `tools.use`).
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_python")]
    pub python: String,
    #[serde(default = "default_sh")]
    pub sh: String,
    /// The timeout of a call that names none, and the most a call may ask for.
    #[serde(default = "default_sandbox_timeout")]
    pub default_timeout: String,
    #[serde(default = "default_sandbox_max_timeout")]
    pub max_timeout: String,
    /// Address space of each process.
    #[serde(default = "default_sandbox_memory_mb")]
    pub memory_mb: u64,
    /// Processes and threads of one sandbox.
    #[serde(default = "default_sandbox_processes")]
    pub max_processes: u64,
    /// The largest file a process may write, and the size of the scratch directory.
    #[serde(default = "default_sandbox_file_mb")]
    pub max_file_mb: u64,
    #[serde(default = "default_sandbox_scratch_mb")]
    pub scratch_mb: u64,
    #[serde(default = "default_sandbox_open_files")]
    pub max_open_files: u64,
    /// Bytes of stdout, and of stderr, returned; the rest is dropped (`truncated`).
    #[serde(default = "default_sandbox_output_kb")]
    pub max_output_kb: u64,
    /// Sandboxes running at once on this node; further calls wait.
    #[serde(default = "default_sandbox_concurrent")]
    pub max_concurrent: usize,
    /// Host paths mounted read-only besides /usr, /bin, /sbin, /lib, /lib64 and a few of
    /// /etc (e.g. an interpreter installed under /opt).
    #[serde(default)]
    pub extra_read_only: Vec<PathBuf>,
    /// The user and group that sandboxes run as when Berth runs as root.
    #[serde(default = "default_sandbox_id")]
    pub run_as_uid: u32,
    #[serde(default = "default_sandbox_id")]
    pub run_as_gid: u32,
    /// The binary started (with `__sandbox-helper`) to build each sandbox; this one by
    /// default.
    pub helper: Option<PathBuf>,
    /// Where per-call root mount points are made (the sandbox user must be able to reach
    /// it); the system temp directory by default.
    pub work_dir: Option<PathBuf>,
}

fn default_true() -> bool {
    true
}
fn default_python() -> String {
    "/usr/bin/python3".to_owned()
}
fn default_sh() -> String {
    "/bin/sh".to_owned()
}
fn default_sandbox_timeout() -> String {
    "10s".to_owned()
}
fn default_sandbox_max_timeout() -> String {
    "60s".to_owned()
}
fn default_sandbox_memory_mb() -> u64 {
    512
}
fn default_sandbox_processes() -> u64 {
    32
}
fn default_sandbox_file_mb() -> u64 {
    16
}
fn default_sandbox_scratch_mb() -> u64 {
    64
}
fn default_sandbox_open_files() -> u64 {
    256
}
fn default_sandbox_output_kb() -> u64 {
    64
}
fn default_sandbox_concurrent() -> usize {
    4
}
fn default_sandbox_id() -> u32 {
    berth_sandbox::settings::RUN_AS
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            enabled: true,
            python: default_python(),
            sh: default_sh(),
            default_timeout: default_sandbox_timeout(),
            max_timeout: default_sandbox_max_timeout(),
            memory_mb: default_sandbox_memory_mb(),
            max_processes: default_sandbox_processes(),
            max_file_mb: default_sandbox_file_mb(),
            scratch_mb: default_sandbox_scratch_mb(),
            max_open_files: default_sandbox_open_files(),
            max_output_kb: default_sandbox_output_kb(),
            max_concurrent: default_sandbox_concurrent(),
            extra_read_only: Vec::new(),
            run_as_uid: default_sandbox_id(),
            run_as_gid: default_sandbox_id(),
            helper: None,
            work_dir: None,
        }
    }
}

impl SandboxConfig {
    /// The settings the sandbox takes, checked.
    pub fn settings(&self) -> Result<berth_sandbox::SandboxSettings, ConfigError> {
        let duration = |key: &str, value: &str| {
            parse_duration(value).ok_or_else(|| {
                value_error(
                    format!("sandbox.{key}"),
                    format!("{value:?} is not a duration like \"10s\""),
                )
            })
        };
        let mb = |v: u64| v.saturating_mul(1 << 20);
        let d = berth_sandbox::SandboxSettings::default();
        let mut read_only = d.read_only.clone();
        read_only.extend(self.extra_read_only.iter().cloned());
        let settings = berth_sandbox::SandboxSettings {
            python: self.python.clone(),
            sh: self.sh.clone(),
            default_timeout: duration("default_timeout", &self.default_timeout)?,
            max_timeout: duration("max_timeout", &self.max_timeout)?,
            memory_bytes: mb(self.memory_mb),
            max_processes: self.max_processes,
            max_file_bytes: mb(self.max_file_mb),
            max_open_files: self.max_open_files,
            scratch_bytes: mb(self.scratch_mb),
            max_output_bytes: self.max_output_kb.saturating_mul(1 << 10),
            max_concurrent: self.max_concurrent,
            read_only,
            helper: match &self.helper {
                Some(p) => vec![p.clone().into_os_string(), berth_sandbox::HELPER_ARG.into()],
                None => d.helper,
            },
            run_as: (self.run_as_uid, self.run_as_gid),
            work_dir: self.work_dir.clone().unwrap_or(d.work_dir),
        };
        settings.validate().map_err(|m| value_error("sandbox", m))?;
        Ok(settings)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `json` (default) or `text`.
    #[serde(default = "default_log_format")]
    pub format: String,
    /// A tracing filter such as `info` or `berth_api=debug,info`; `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    /// `openai`, `anthropic`, `openai-compatible` or `mock`.
    pub kind: String,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    pub timeout: Option<String>,
    /// The value of `api_key_env`, resolved at load time; never read from the file.
    #[serde(skip)]
    pub api_key: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub input: f64,
    pub output: f64,
    pub cached_input: Option<f64>,
}

fn default_listen() -> String {
    "127.0.0.1:7700".to_owned()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(".berth")
}
fn default_redis_key_prefix() -> String {
    "berth".to_owned()
}
fn default_plan() -> String {
    "free".to_owned()
}
fn default_tenant_claim() -> String {
    "tenant_id".to_owned()
}
fn default_role_claim() -> String {
    "role".to_owned()
}
fn default_log_format() -> String {
    "json".to_owned()
}
fn default_log_level() -> String {
    "info".to_owned()
}
