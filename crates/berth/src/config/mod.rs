//! `berth.toml`: the server configuration, read from a file, then `BERTH_*` environment
//! variables, then command-line flags, with unknown keys and bad values refused by name.
//! The file model (`model.rs`), the environment (`env.rs`), path resolution (`paths.rs`)
//! and validation (`validate.rs`) are one module each; this one puts them in order.

mod env;
mod model;
mod paths;
#[cfg(test)]
mod tests;
mod validate;

pub use berth_core::clock::parse_duration;
pub use model::{
    AuthConfig, Config, EgressConfig, GatewayConfig, HttpConfig, JwtConfig, LogConfig, McpConfig,
    PriceConfig, ProviderConfig, RunsConfig, SandboxConfig, UsageConfig,
};

use berth_core::Plan;
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
        let secrets = env::overlay(&mut table, &env)?;
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
        env::resolve_secrets(&mut config, secrets, &env)?;
        Ok(config)
    }

    fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
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
        config.resolve_paths()?;
        config.validate()?;
        Ok(config)
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
