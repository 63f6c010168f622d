//! Structured logs (JSON by default) behind a redaction layer: token shapes and registered
//! secret values are masked in every line before it is written, as a second wall behind
//! code that never logs secrets in the first place.

use crate::config::LogConfig;
use regex::Regex;
use std::io::Write;
use std::sync::{Arc, OnceLock, RwLock};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Masks credentials in text.
#[derive(Clone, Default)]
pub struct Redactor {
    exact: Arc<RwLock<Vec<String>>>,
}

fn token_pattern() -> Option<&'static Regex> {
    static PATTERN: OnceLock<Option<Regex>> = OnceLock::new();
    PATTERN
        .get_or_init(|| {
            Regex::new(r"(bk_|bop_)[A-Za-z0-9]{8,}|(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}|sk-[A-Za-z0-9_-]{16,}").ok()
        })
        .as_ref()
}

impl Redactor {
    /// Adds a value (the operator token, say) that must never appear in a log line.
    pub fn register(&self, secret: &str) {
        if secret.len() >= 6
            && let Ok(mut v) = self.exact.write()
            && !v.iter().any(|known| known == secret)
        {
            v.push(secret.to_owned());
        }
    }

    pub fn redact(&self, line: &str) -> String {
        let mut out = match token_pattern() {
            Some(p) => p
                .replace_all(line, |c: &regex::Captures<'_>| {
                    let keep = c.get(1).or_else(|| c.get(2)).map_or("", |m| m.as_str());
                    format!("{keep}[redacted]")
                })
                .into_owned(),
            None => line.to_owned(),
        };
        if let Ok(v) = self.exact.read() {
            for s in v.iter() {
                if out.contains(s.as_str()) {
                    out = out.replace(s.as_str(), "[redacted]");
                }
            }
        }
        out
    }
}

/// A writer that redacts each formatted event before it reaches stdout.
pub struct RedactingWriter {
    redactor: Redactor,
}

impl Write for RedactingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stdout()
            .lock()
            .write_all(self.redactor.redact(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

impl<'a> MakeWriter<'a> for Redactor {
    type Writer = RedactingWriter;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            redactor: self.clone(),
        }
    }
}

/// Installs the global subscriber once; later calls (tests starting several servers)
/// return the same redactor.
pub fn init(config: &LogConfig) -> Redactor {
    static INSTALLED: OnceLock<Redactor> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let redactor = Redactor::default();
            let filter = EnvFilter::try_from_default_env()
                .or_else(|_| EnvFilter::try_new(&config.level))
                .unwrap_or_else(|_| EnvFilter::new("info"));
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(redactor.clone());
            let _ = if config.format == "json" {
                builder
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .try_init()
            } else {
                builder.try_init()
            };
            redactor
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shapes_and_registered_values_are_masked() {
        let r = Redactor::default();
        r.register("hunter2-secret");
        let line = "auth bk_0123456789abcdef and Bearer eyJhbGciOi.x.y with hunter2-secret and sk-abcdefghijklmnopqrstu";
        let out = r.redact(line);
        assert!(!out.contains("0123456789abcdef"), "{out}");
        assert!(!out.contains("eyJhbGciOi"), "{out}");
        assert!(!out.contains("hunter2-secret"), "{out}");
        assert!(!out.contains("abcdefghijklmnopqrstu"), "{out}");
        assert!(out.contains("bk_[redacted]"), "{out}");
        assert_eq!(r.redact("nothing to hide"), "nothing to hide");
    }
}
