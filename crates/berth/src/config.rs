//! `berth.toml`: the server configuration, read from a file, then `BERTH_*` environment
//! variables, then command-line flags, with unknown keys and bad values refused by name.

use berth_core::Plan;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("config key '{key}': {message}")]
    Value { key: String, message: String },
}

fn value_error(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Value {
        key: key.into(),
        message: message.into(),
    }
}

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

/// `BERTH_*` variables that are not config keys.
const NON_CONFIG_ENV: &[&str] = &[
    "OPERATOR_TOKEN",
    "MASTER_KEY",
    "URL",
    "TOKEN",
    "CONFIG",
    "JSON",
];

/// Command-line overrides of `berth serve`.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
}

impl Config {
    /// The defaults of `berth serve` without a file.
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::from_table(toml::Table::new())
    }

    /// Loads `file` (if given), overlays `env` (`BERTH_*` pairs) and `overrides`, validates.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            None => toml::Table::new(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Syntax {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    })?
            }
        };
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut operator_token = None;
        let mut master_key = None;
        for (name, raw) in env.iter().cloned() {
            let Some(rest) = name.strip_prefix("BERTH_") else {
                continue;
            };
            match rest {
                "OPERATOR_TOKEN" => operator_token = Some(raw),
                "MASTER_KEY" => master_key = Some(raw),
                r if NON_CONFIG_ENV.contains(&r) || r.starts_with("TEST_") => {}
                r => set_path(&mut table, r, &raw, &name)?,
            }
        }
        if let Some(v) = &overrides.listen {
            table.insert("listen".into(), toml::Value::String(v.clone()));
        }
        if let Some(v) = &overrides.data_dir {
            table.insert(
                "data_dir".into(),
                toml::Value::String(v.display().to_string()),
            );
        }
        if let Some(v) = &overrides.database_url {
            table.insert("database_url".into(), toml::Value::String(v.clone()));
        }
        let mut config = Self::from_table(table)?;
        config.operator_token = operator_token.filter(|t| !t.is_empty());
        config.master_key = master_key.filter(|k| !k.is_empty());
        for p in &mut config.providers {
            if let Some(var) = &p.api_key_env {
                p.api_key = env
                    .iter()
                    .find(|(k, _)| k == var)
                    .map(|(_, v)| v.clone())
                    .filter(|v| !v.is_empty());
                if p.api_key.is_none() {
                    // A provider without its key still starts (others may work); calls to it
                    // will fail with the provider's own authentication error.
                    eprintln!("warning: providers.{}: {var} is not set", p.name);
                }
            }
        }
        if let Some(jwt) = &mut config.auth.jwt
            && let Some(var) = &jwt.hs256_secret_env
        {
            let secret = env
                .iter()
                .find(|(k, _)| k == var)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty());
            if secret.is_none() {
                return Err(value_error(
                    "auth.jwt.hs256_secret_env",
                    format!("names {var}, which is not set"),
                ));
            }
            jwt.hs256_secret = secret;
        }
        Ok(config)
    }

    fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                value_error(
                    if path == "." {
                        "(top level)".to_owned()
                    } else {
                        path
                    },
                    e.into_inner().to_string(),
                )
            })?;
        let mut config = config;
        config.resolve_paths()?;
        config.validate()?;
        Ok(config)
    }

    /// Makes every path of the configuration absolute, once, against the working directory
    /// at load: later consumers (wasmtime's code cache, the sandbox helper, which runs in
    /// another directory) may refuse or misread relative paths, and a `chdir` would
    /// silently move them.
    fn resolve_paths(&mut self) -> Result<(), ConfigError> {
        fn absolute(key: &str, path: &Path) -> Result<PathBuf, ConfigError> {
            std::path::absolute(path).map_err(|e| {
                value_error(
                    key,
                    format!("{} cannot be made absolute: {e}", path.display()),
                )
            })
        }
        self.data_dir = absolute("data_dir", &self.data_dir)?;
        if let Some(p) = &self.master_key_file {
            self.master_key_file = Some(absolute("master_key_file", p)?);
        }
        for (i, p) in self.sandbox.extra_read_only.iter_mut().enumerate() {
            *p = absolute(&format!("sandbox.extra_read_only[{i}]"), p)?;
        }
        if let Some(p) = &self.sandbox.helper {
            self.sandbox.helper = Some(absolute("sandbox.helper", p)?);
        }
        if let Some(p) = &self.sandbox.work_dir {
            self.sandbox.work_dir = Some(absolute("sandbox.work_dir", p)?);
        }
        if let Some(url) = &self.database_url {
            self.database_url = Some(absolute_sqlite_url(url)?);
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.listen.parse::<SocketAddr>().map_err(|_| {
            value_error(
                "listen",
                format!("{:?} is not an address like 127.0.0.1:7700", self.listen),
            )
        })?;
        let url = self.database_url();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(value_error(
                "database_url",
                "must start with sqlite:// or postgres://",
            ));
        }
        if let Some(r) = &self.redis_url {
            if r.starts_with("rediss://") {
                // The Redis client is built without TLS (one TLS stack, fewer crates);
                // refusing is better than failing at the first connection.
                return Err(value_error(
                    "redis_url",
                    "rediss:// (TLS) is not supported; use redis:// on a private network or a TLS sidecar",
                ));
            }
            if !r.starts_with("redis://") {
                return Err(value_error("redis_url", "must start with redis://"));
            }
        }
        if self.redis_key_prefix.is_empty()
            || self.redis_key_prefix.len() > 64
            || !self
                .redis_key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
        {
            return Err(value_error(
                "redis_key_prefix",
                "1 to 64 characters of letters, digits, '-', '_', ':' and '.'",
            ));
        }
        for (i, cidr) in self.egress.allow_private.iter().enumerate() {
            cidr.parse::<ipnet::IpNet>().map_err(|_| {
                value_error(
                    format!("egress.allow_private[{i}]"),
                    format!("{cidr:?} is not a CIDR like 127.0.0.0/8"),
                )
            })?;
        }
        if let Some(jwt) = &self.auth.jwt
            && jwt.jwks_url.is_none()
            && jwt.hs256_secret_env.is_none()
        {
            return Err(value_error("auth.jwt", "set jwks_url or hs256_secret_env"));
        }
        if !(1..=1024).contains(&self.runs.workers) {
            return Err(value_error("runs.workers", "must be between 1 and 1024"));
        }
        if !(1..=100_000).contains(&self.runs.max_concurrent) {
            return Err(value_error(
                "runs.max_concurrent",
                "must be between 1 and 100000",
            ));
        }
        if !(1..=1_000_000).contains(&self.runs.max_queued_per_tenant) {
            return Err(value_error(
                "runs.max_queued_per_tenant",
                "must be between 1 and 1000000",
            ));
        }
        if !(1..=10_240).contains(&self.runs.max_input_kb) {
            return Err(value_error(
                "runs.max_input_kb",
                "must be between 1 and 10240 (a request body is at most 10 MiB)",
            ));
        }
        for (key, value) in [
            ("runs.lease", &self.runs.lease),
            ("runs.approval_timeout", &self.runs.approval_timeout),
            ("mcp.connect_timeout", &self.mcp.connect_timeout),
            ("mcp.call_timeout", &self.mcp.call_timeout),
            ("mcp.health_interval", &self.mcp.health_interval),
        ] {
            if parse_duration(value).is_none_or(|d| d < std::time::Duration::from_millis(100)) {
                return Err(value_error(
                    key,
                    format!("{value:?} is not a duration like \"30s\" (at least 100ms)"),
                ));
            }
        }
        if !(1..=65_536).contains(&self.mcp.max_result_kb) {
            return Err(value_error(
                "mcp.max_result_kb",
                "must be between 1 and 65536",
            ));
        }
        if !(1..=300).contains(&self.http.header_read_timeout_secs) {
            return Err(value_error(
                "http.header_read_timeout_secs",
                "must be between 1 and 300",
            ));
        }
        if !(1..=1_000_000).contains(&self.http.max_connections) {
            return Err(value_error(
                "http.max_connections",
                "must be between 1 and 1000000",
            ));
        }
        if !(1..=self.http.max_connections).contains(&self.http.max_connections_per_ip) {
            return Err(value_error(
                "http.max_connections_per_ip",
                "must be between 1 and http.max_connections",
            ));
        }
        for (key, mb) in [
            ("gateway.max_response_mb", self.gateway.max_response_mb),
            (
                "gateway.max_stream_event_mb",
                self.gateway.max_stream_event_mb,
            ),
            ("gateway.max_stream_mb", self.gateway.max_stream_mb),
        ] {
            if !(1..=4096).contains(&mb) {
                return Err(value_error(key, "must be between 1 and 4096 (MiB)"));
            }
        }
        if !(1..=10_000).contains(&self.mcp.max_tools_per_server) {
            return Err(value_error(
                "mcp.max_tools_per_server",
                "must be between 1 and 10000",
            ));
        }
        if self.sandbox.enabled {
            self.sandbox.settings()?;
        }
        if !matches!(self.log.format.as_str(), "json" | "text") {
            return Err(value_error("log.format", "must be \"json\" or \"text\""));
        }
        for (i, p) in self.providers.iter().enumerate() {
            if !matches!(
                p.kind.as_str(),
                "openai" | "anthropic" | "openai-compatible" | "mock"
            ) {
                return Err(value_error(
                    format!("providers[{i}].kind"),
                    format!(
                        "{:?} is not one of openai, anthropic, openai-compatible, mock",
                        p.kind
                    ),
                ));
            }
            if let Some(t) = &p.timeout {
                parse_duration(t).ok_or_else(|| {
                    value_error(
                        format!("providers[{i}].timeout"),
                        format!("{t:?} is not a duration like \"120s\""),
                    )
                })?;
            }
        }
        for (model, price) in &self.prices {
            // Prices match exact names only, so a name no call can have is a mistake.
            if model != berth_meter::DEFAULT_PRICE_KEY && !model.contains('/') {
                return Err(value_error(
                    format!("prices.\"{model}\""),
                    "name a model as \"provider/model\", or \"*\" for the default price",
                ));
            }
            if price.input < 0.0
                || price.output < 0.0
                || price.cached_input.is_some_and(|c| c < 0.0)
            {
                return Err(value_error(
                    format!("prices.\"{model}\""),
                    "prices must not be negative",
                ));
            }
        }
        for (name, plan) in &self.plans {
            if plan.weight == 0 {
                return Err(value_error(
                    format!("plans.{name}.weight"),
                    "must be at least 1",
                ));
            }
        }
        if !self.plans().contains_key(&self.default_plan) {
            return Err(value_error(
                "default_plan",
                format!("no plan named {:?}", self.default_plan),
            ));
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 7700)))
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("berth.db").display()))
    }

    pub fn master_key_path(&self) -> PathBuf {
        self.master_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("master.key"))
    }

    /// The configured plans, or the built-in `free` and `pro` when none are configured.
    pub fn plans(&self) -> BTreeMap<String, Plan> {
        if self.plans.is_empty() {
            berth_core::plan::default_plans()
        } else {
            self.plans.clone()
        }
    }
}

/// `sqlite://relative/file.db` (or `sqlite:relative.db`) with its file made absolute; every
/// other URL (PostgreSQL, `sqlite::memory:`, absolute files) unchanged.
fn absolute_sqlite_url(url: &str) -> Result<String, ConfigError> {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Ok(url.to_owned());
    };
    let (file, query) = match rest.split_once('?') {
        Some((file, query)) => (file, Some(query)),
        None => (rest, None),
    };
    if file.is_empty() || file.starts_with(':') || Path::new(file).is_absolute() {
        return Ok(url.to_owned());
    }
    let absolute = std::path::absolute(file).map_err(|e| {
        value_error(
            "database_url",
            format!("{file} cannot be made absolute: {e}"),
        )
    })?;
    Ok(match query {
        Some(q) => format!("sqlite://{}?{q}", absolute.display()),
        None => format!("sqlite://{}", absolute.display()),
    })
}

/// Sets `BERTH_A__B_C=v` as key path `a.b_c`. Values that read as TOML numbers, booleans
/// or arrays take that type; anything else is a string.
fn set_path(table: &mut toml::Table, path: &str, raw: &str, var: &str) -> Result<(), ConfigError> {
    let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    let value = parse_env_value(raw);
    let mut cur = table;
    for (i, key) in keys.iter().enumerate() {
        if key.is_empty() {
            return Err(value_error(
                var,
                "empty key segment in environment variable name",
            ));
        }
        if i + 1 == keys.len() {
            cur.insert(key.clone(), value);
            return Ok(());
        }
        let entry = cur
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| value_error(var, format!("'{key}' is not a table")))?;
    }
    Ok(())
}

fn parse_env_value(raw: &str) -> toml::Value {
    let looks_typed = raw == "true"
        || raw == "false"
        || raw.starts_with('[')
        || raw.parse::<i64>().is_ok()
        || raw.parse::<f64>().is_ok();
    if looks_typed
        && let Ok(mut t) = format!("v = {raw}").parse::<toml::Table>()
        && let Some(v) = t.remove("v")
    {
        return v;
    }
    toml::Value::String(raw.to_owned())
}

pub use berth_core::clock::parse_duration;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load_str(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path), env(vars), &Overrides::default())
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::defaults().unwrap();
        assert_eq!(c.listen, "127.0.0.1:7700");
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(c.data_dir, cwd.join(".berth"));
        assert_eq!(
            c.database_url(),
            format!("sqlite://{}", cwd.join(".berth/berth.db").display())
        );
        assert_eq!(c.master_key_path(), cwd.join(".berth/master.key"));
        assert!(c.plans().contains_key("free") && c.plans().contains_key("pro"));
    }

    #[test]
    fn the_example_of_api_md_parses() {
        let text = r#"
listen = "127.0.0.1:7700"
data_dir = ".berth"
database_url = "sqlite://.berth/berth.db"
[egress]
allow_private = []
[auth.jwt]
hs256_secret_env = "JWT_SECRET"
[[providers]]
name = "openai"
kind = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"
timeout = "120s"
[prices."openai/gpt-4o-mini"]
input = 0.15
output = 0.60
cached_input = 0.075
[plans.free]
requests_per_minute = 60
tokens_per_minute = 100000
concurrent_runs = 2
monthly_budget_usd = 5
weight = 1
[plans.pro]
requests_per_minute = 3000
tokens_per_minute = 5000000
concurrent_runs = 50
weight = 10
"#;
        let c = load_str(text, &[("JWT_SECRET", "shh")]).unwrap();
        assert_eq!(c.plans["pro"].weight, 10);
        assert!(
            load_str(text, &[])
                .unwrap_err()
                .to_string()
                .contains("JWT_SECRET")
        );
        assert_eq!(c.prices["openai/gpt-4o-mini"].cached_input, Some(0.075));
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../berth.example.toml");
        let c = Config::load(Some(&path), env(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:7700");
        assert_eq!(c.plans()["pro"].weight, 10);
        let s = c.sandbox.settings().unwrap();
        let d = berth_sandbox::SandboxSettings::default();
        assert_eq!(
            (
                s.memory_bytes,
                s.max_processes,
                s.max_output_bytes,
                s.max_timeout
            ),
            (
                d.memory_bytes,
                d.max_processes,
                d.max_output_bytes,
                d.max_timeout
            )
        );
        assert_eq!(s.read_only, d.read_only);
    }

    #[test]
    fn sandbox_settings_are_checked_by_key() {
        let err = load_str("[sandbox]\nmemroy_mb = 1\n", &[]).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `memroy_mb`"),
            "{err}"
        );
        let err = load_str("[sandbox]\nmax_timeout = \"soon\"\n", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key 'sandbox.max_timeout': \"soon\" is not a duration like \"10s\""
        );
        let err = load_str("[sandbox]\ndefault_timeout = \"2m\"\n", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key 'sandbox': default_timeout must be positive and at most max_timeout"
        );
        let err = load_str("[sandbox]\nmax_processes = 1\n", &[]).unwrap_err();
        assert!(err.to_string().contains("max_processes"), "{err}");
        // A disabled sandbox is not checked, and the environment reaches its keys.
        let c = load_str("[sandbox]\nenabled = false\nmax_processes = 1\n", &[]).unwrap();
        assert!(!c.sandbox.enabled);
        let c = load_str("", &[("BERTH_SANDBOX__MAX_PROCESSES", "16")]).unwrap();
        assert_eq!(c.sandbox.settings().unwrap().max_processes, 16);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = load_str("lisen = \"x\"", &[]).unwrap_err().to_string();
        assert!(err.contains("lisen"), "{err}");
        let err = load_str("[plans.free]\nrequests_per_minute = 1\ntokens_per_minute = 1\nconcurrent_runs = 1\nwieght = 2", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("plans.free") && err.contains("wieght"),
            "{err}"
        );
        let err = load_str("", &[("BERTH_NOPE", "1")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("listen = \"nowhere\"", "listen"),
            ("database_url = \"mysql://x\"", "database_url"),
            (
                "[egress]\nallow_private = [\"10.0.0.0/33\"]",
                "egress.allow_private[0]",
            ),
            (
                "[[providers]]\nname = \"x\"\nkind = \"cohere\"",
                "providers[0].kind",
            ),
            (
                "[[providers]]\nname = \"x\"\nkind = \"openai\"\ntimeout = \"soon\"",
                "providers[0].timeout",
            ),
            ("default_plan = \"gold\"", "default_plan"),
            ("listen = 7", "listen"),
            ("[auth.jwt]\nissuer = \"x\"", "auth.jwt"),
            ("redis_url = \"http://x\"", "redis_url"),
            ("redis_url = \"rediss://x:6380\"", "redis_url"),
            ("redis_key_prefix = \"a b\"", "redis_key_prefix"),
        ];
        for (text, key) in cases {
            let err = load_str(text, &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{text:?} gave {err}");
        }
        assert!(matches!(
            load_str("listen = ", &[]),
            Err(ConfigError::Syntax { .. })
        ));
    }

    #[test]
    fn environment_overrides_file_and_flags_override_environment() {
        let c = load_str(
            "listen = \"127.0.0.1:1\"",
            &[
                ("BERTH_LISTEN", "127.0.0.1:2"),
                ("BERTH_PLANS__FREE__REQUESTS_PER_MINUTE", "7"),
                ("BERTH_PLANS__FREE__TOKENS_PER_MINUTE", "8"),
                ("BERTH_PLANS__FREE__CONCURRENT_RUNS", "9"),
                ("BERTH_EGRESS__ALLOW_PRIVATE", "[\"127.0.0.0/8\"]"),
                ("BERTH_AUTH__JWT__ISSUER", "https://issuer.example"),
                ("BERTH_AUTH__JWT__HS256_SECRET_ENV", "JWT_SECRET"),
                ("JWT_SECRET", "shh"),
                ("BERTH_OPERATOR_TOKEN", "op"),
                ("BERTH_URL", "ignored"),
                ("OTHER", "ignored"),
            ],
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:2");
        assert_eq!(c.plans["free"].requests_per_minute, 7);
        assert_eq!(c.egress.allow_private, vec!["127.0.0.0/8"]);
        let jwt = c.auth.jwt.unwrap();
        assert_eq!(jwt.issuer.as_deref(), Some("https://issuer.example"));
        assert_eq!(jwt.hs256_secret.as_deref(), Some("shh"));
        assert_eq!(c.operator_token.as_deref(), Some("op"));
        let flags = Overrides {
            listen: Some("127.0.0.1:3".into()),
            ..Default::default()
        };
        let c = Config::load(None, env(&[("BERTH_LISTEN", "127.0.0.1:2")]), &flags).unwrap();
        assert_eq!(c.listen, "127.0.0.1:3");
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("120s"),
            Some(std::time::Duration::from_secs(120))
        );
        assert_eq!(
            parse_duration("500ms"),
            Some(std::time::Duration::from_millis(500))
        );
        assert_eq!(
            parse_duration("2m"),
            Some(std::time::Duration::from_secs(120))
        );
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("10"), None);
    }

    proptest! {
        #[test]
        fn arbitrary_files_never_panic(text in "\\PC{0,200}") {
            let _ = load_str(&text, &[]);
        }

        #[test]
        fn arbitrary_env_never_panics(key in "[A-Z_]{1,30}", value in "\\PC{0,40}") {
            let _ = Config::load(None, vec![(format!("BERTH_{key}"), value)], &Overrides::default());
        }

        #[test]
        fn arbitrary_durations_never_panic(s in "\\PC{0,20}") {
            let _ = parse_duration(&s);
        }
    }
}
