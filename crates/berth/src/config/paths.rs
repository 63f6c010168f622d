//! Path resolution: every path of the configuration made absolute once, at load.

use super::{Config, ConfigError, value_error};
use std::path::{Path, PathBuf};

impl Config {
    /// Makes every path of the configuration absolute, once, against the working directory
    /// at load: later consumers (wasmtime's code cache, the sandbox helper, which runs in
    /// another directory) may refuse or misread relative paths, and a `chdir` would
    /// silently move them.
    pub(super) fn resolve_paths(&mut self) -> Result<(), ConfigError> {
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
