//! Structured logs (JSON by default) behind a redaction layer: token shapes and registered
//! secret values are masked in every line before it is written, as a second wall behind
//! code that never logs secrets in the first place.

use crate::config::LogConfig;
use regex::Regex;
use std::io::Write;
use std::sync::{Arc, OnceLock, RwLock};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Masks credentials in text: token shapes by pattern, and registered secret values by
/// keyed hashes only. For a value it keeps its length, a keyed hash of its first
/// `WINDOW` bytes (all of it when shorter) and a keyed hash of the whole; a line is
/// searched by hashing each of its windows of that length, and a window that matches is
/// masked when the value's length from there hashes the same. So the process holds no
/// plaintext of a tenant's secret for the sake of its logs, and a tenant's entries are
/// dropped when the secret or the tenant is deleted.
#[derive(Clone, Default)]
pub struct Redactor {
    masks: Arc<RwLock<Masks>>,
}

/// Bytes of a value's first window: lines are hashed once per window length in use, so a
/// fixed cap keeps the cost per line at a few hashes per byte.
const WINDOW: usize = 16;
/// Shorter values are not registered (they would mask ordinary words).
const MIN_SECRET: usize = 6;

/// Whose value an entry is: a platform secret (kept for the process's life), or one
/// tenant's named secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Owner {
    Platform,
    Tenant { tenant: String, secret: String },
}

/// What is kept of one value: no byte of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    owner: Owner,
    len: usize,
    window: usize,
    window_hash: u64,
    full_hash: u64,
}

#[derive(Default)]
struct Masks {
    /// The key of every hash: random per process.
    key: std::hash::RandomState,
    entries: Vec<Entry>,
    /// Window length → window hash → indexes into `entries`; rebuilt on each change
    /// (registrations are rare, lines are many).
    index: std::collections::BTreeMap<usize, std::collections::HashMap<u64, Vec<usize>>>,
}

impl Masks {
    fn hash(&self, bytes: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.key.hash_one(bytes)
    }

    fn add(&mut self, owner: Owner, secret: &str) {
        let bytes = secret.as_bytes();
        if bytes.len() < MIN_SECRET {
            return;
        }
        let window = bytes.len().min(WINDOW);
        let entry = Entry {
            len: bytes.len(),
            window,
            window_hash: self.hash(&bytes[..window]),
            full_hash: self.hash(bytes),
            owner,
        };
        if self.entries.contains(&entry) {
            return;
        }
        // A tenant's secret has one value: writing it again replaces the old one.
        if matches!(entry.owner, Owner::Tenant { .. }) {
            self.entries.retain(|e| e.owner != entry.owner);
        }
        self.entries.push(entry);
        self.reindex();
    }

    fn remove(&mut self, keep: impl Fn(&Owner) -> bool) {
        let before = self.entries.len();
        self.entries.retain(|e| keep(&e.owner));
        if self.entries.len() != before {
            self.reindex();
        }
    }

    fn reindex(&mut self) {
        self.index.clear();
        for (i, e) in self.entries.iter().enumerate() {
            self.index
                .entry(e.window)
                .or_default()
                .entry(e.window_hash)
                .or_default()
                .push(i);
        }
    }

    /// Byte ranges of `text` that hold a registered value.
    fn find(&self, text: &str) -> Vec<(usize, usize)> {
        let bytes = text.as_bytes();
        let mut found = Vec::new();
        for (&window, by_hash) in &self.index {
            if bytes.len() < window {
                continue;
            }
            for start in 0..=bytes.len() - window {
                if !text.is_char_boundary(start) {
                    continue;
                }
                let Some(candidates) = by_hash.get(&self.hash(&bytes[start..start + window]))
                else {
                    continue;
                };
                for &i in candidates {
                    let e = &self.entries[i];
                    let end = start + e.len;
                    if end <= bytes.len()
                        && text.is_char_boundary(end)
                        && self.hash(&bytes[start..end]) == e.full_hash
                    {
                        found.push((start, end));
                    }
                }
            }
        }
        found.sort_unstable();
        found
    }
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
    /// Adds a platform value (the operator token, say) that must never appear in a log
    /// line, for the life of the process.
    pub fn register(&self, secret: &str) {
        if let Ok(mut m) = self.masks.write() {
            m.add(Owner::Platform, secret);
        }
    }

    /// Adds the value of a tenant's secret `name` (replacing an older value of it).
    pub fn register_tenant_secret(&self, tenant: &str, name: &str, value: &str) {
        if let Ok(mut m) = self.masks.write() {
            let owner = Owner::Tenant {
                tenant: tenant.to_owned(),
                secret: name.to_owned(),
            };
            m.add(owner, value);
        }
    }

    /// Drops what is kept of a tenant's secret `name`, or of all its secrets (`None`).
    pub fn forget_tenant_secrets(&self, tenant: &str, name: Option<&str>) {
        if let Ok(mut m) = self.masks.write() {
            m.remove(|o| match o {
                Owner::Platform => true,
                Owner::Tenant { tenant: t, secret } => {
                    t != tenant || name.is_some_and(|n| n != secret)
                }
            });
        }
    }

    pub fn redact(&self, line: &str) -> String {
        let out = match token_pattern() {
            Some(p) => p
                .replace_all(line, |c: &regex::Captures<'_>| {
                    let keep = c.get(1).or_else(|| c.get(2)).map_or("", |m| m.as_str());
                    format!("{keep}[redacted]")
                })
                .into_owned(),
            None => line.to_owned(),
        };
        let found = match self.masks.read() {
            Ok(m) if !m.entries.is_empty() => m.find(&out),
            _ => return out,
        };
        if found.is_empty() {
            return out;
        }
        let mut masked = String::with_capacity(out.len());
        let mut at = 0;
        for (start, end) in found {
            if end <= at {
                continue;
            }
            masked.push_str(&out[at..start.max(at)]);
            masked.push_str("[redacted]");
            at = end;
        }
        masked.push_str(&out[at..]);
        masked
    }
}

/// The MCP registry tells the redactor each credential it sends, and when one goes.
impl berth_tools::LogMask for Redactor {
    fn mask(&self, tenant: &berth_core::TenantId, secret: &str, value: &str) {
        self.register_tenant_secret(tenant.as_str(), secret, value);
    }

    fn forget(&self, tenant: &berth_core::TenantId, secret: Option<&str>) {
        self.forget_tenant_secrets(tenant.as_str(), secret);
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

    /// Everything the redactor keeps, as text: what a memory dump of it would show.
    fn state(r: &Redactor) -> String {
        format!("{:?}", r.masks.read().unwrap().entries)
    }

    #[test]
    fn tenant_secrets_are_masked_by_hashes_and_dropped_when_they_go() {
        let r = Redactor::default();
        let long = "crm-token-0123456789-abcdefghij-XYZ";
        let short = "pw-7731";
        r.register_tenant_secret("ten_a", "CRM", long);
        r.register_tenant_secret("ten_a", "PW", short);
        r.register_tenant_secret("ten_b", "CRM", "other-tenant-value-42");
        let line = format!(
            "upstream said {long}{long} and é{short}é, not crm-token-0123456789-abcdefghij"
        );
        let out = r.redact(&line);
        assert_eq!(
            out,
            "upstream said [redacted][redacted] and é[redacted]é, not crm-token-0123456789-abcdefghij"
        );
        let held = state(&r);
        assert!(
            !held.contains(long) && !held.contains(short) && !held.contains("crm-token"),
            "no plaintext is held: {held}"
        );
        // A rewritten value replaces the old one; a deleted secret is forgotten.
        r.register_tenant_secret("ten_a", "PW", "pw-new-99");
        assert_eq!(r.redact(short), short);
        assert_eq!(r.redact("pw-new-99"), "[redacted]");
        r.forget_tenant_secrets("ten_a", Some("CRM"));
        assert_eq!(r.redact(long), long, "the deleted secret's entry is gone");
        assert_eq!(r.redact("other-tenant-value-42"), "[redacted]");
        r.forget_tenant_secrets("ten_b", None);
        assert_eq!(r.redact("other-tenant-value-42"), "other-tenant-value-42");
        assert_eq!(r.masks.read().unwrap().entries.len(), 1, "{}", state(&r));
    }
}
