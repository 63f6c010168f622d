//! Environment overrides: every config key can be set as `BERTH_` + its upper-case path
//! (`__` between tables), and the values never read from a file (the operator token, the
//! master key, provider keys and the JWT secret) come from variables only.

use super::{Config, ConfigError, value_error};

/// `BERTH_*` variables that are not config keys.
const NON_CONFIG_ENV: &[&str] = &[
    "OPERATOR_TOKEN",
    "MASTER_KEY",
    "URL",
    "TOKEN",
    "CONFIG",
    "JSON",
];

/// The secrets set by `BERTH_*` variables that are not config keys.
#[derive(Debug, Default)]
pub(super) struct Secrets {
    pub operator_token: Option<String>,
    pub master_key: Option<String>,
}

/// Sets every `BERTH_*` config variable of `env` in `table`, and keeps the secrets aside.
pub(super) fn overlay(
    table: &mut toml::Table,
    env: &[(String, String)],
) -> Result<Secrets, ConfigError> {
    let mut secrets = Secrets::default();
    for (name, raw) in env.iter().cloned() {
        let Some(rest) = name.strip_prefix("BERTH_") else {
            continue;
        };
        match rest {
            "OPERATOR_TOKEN" => secrets.operator_token = Some(raw),
            "MASTER_KEY" => secrets.master_key = Some(raw),
            r if NON_CONFIG_ENV.contains(&r) || r.starts_with("TEST_") => {}
            r => set_path(table, r, &raw, &name)?,
        }
    }
    Ok(secrets)
}

/// Fills in the secrets of a loaded configuration: those set directly, and those the file
/// names a variable for (`providers[].api_key_env`, `auth.jwt.hs256_secret_env`).
pub(super) fn resolve_secrets(
    config: &mut Config,
    secrets: Secrets,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
    let var = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    config.operator_token = secrets.operator_token.filter(|t| !t.is_empty());
    config.master_key = secrets.master_key.filter(|k| !k.is_empty());
    for p in &mut config.providers {
        if let Some(name) = &p.api_key_env {
            p.api_key = var(name);
            if p.api_key.is_none() {
                // A provider without its key still starts (others may work); calls to it
                // will fail with the provider's own authentication error.
                eprintln!("warning: providers.{}: {name} is not set", p.name);
            }
        }
    }
    if let Some(jwt) = &mut config.auth.jwt
        && let Some(name) = &jwt.hs256_secret_env
    {
        let secret = var(name);
        if secret.is_none() {
            return Err(value_error(
                "auth.jwt.hs256_secret_env",
                format!("names {name}, which is not set"),
            ));
        }
        jwt.hs256_secret = secret;
    }
    Ok(())
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
