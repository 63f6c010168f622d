//! Validation of a loaded configuration: every value checked once, at load, and refused
//! with the key it came from, so that a bad deploy stops at start and not at first use.

use super::{Config, ConfigError, parse_duration, value_error};
use std::net::SocketAddr;

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
}
