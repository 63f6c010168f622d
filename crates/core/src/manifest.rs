//! The agent manifest (`agent.toml`): its types, strict parsing (unknown fields refused)
//! and validation whose errors name the file, line and field.

use crate::clock::parse_duration;
use crate::name::AgentName;
use crate::policy::{is_alias_name, is_model_ref};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub model: ModelSpec,
    #[serde(default)]
    pub prompt: PromptSpec,
    #[serde(default)]
    pub tools: ToolsSpec,
    #[serde(default)]
    pub limits: LimitsSpec,
    #[serde(default)]
    pub memory: MemorySpec,
    #[serde(default)]
    pub component: Option<ComponentSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// `provider/model` or an alias from the tenant policy.
    pub name: String,
    #[serde(default)]
    pub fallbacks: Vec<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptSpec {
    /// May use `{{tenant.name}}`, `{{agent.name}}`, `{{agent.version}}`.
    #[serde(default)]
    pub system: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsSpec {
    #[serde(default, rename = "use")]
    pub use_: Vec<String>,
    #[serde(default)]
    pub approval: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    #[serde(default = "default_timeout")]
    pub timeout: String,
    pub max_cost_usd: Option<f64>,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        LimitsSpec {
            max_steps: default_max_steps(),
            timeout: default_timeout(),
            max_cost_usd: None,
        }
    }
}

fn default_max_steps() -> u32 {
    8
}
fn default_timeout() -> String {
    "60s".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySpec {
    #[serde(default = "default_history")]
    pub history: u32,
}

impl Default for MemorySpec {
    fn default() -> Self {
        MemorySpec {
            history: default_history(),
        }
    }
}

fn default_history() -> u32 {
    20
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSpec {
    pub path: String,
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    #[serde(default = "default_cpu_ms")]
    pub cpu_ms: u64,
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Non-secret variables the component reads through its `config` import.
    #[serde(default)]
    pub config: std::collections::BTreeMap<String, String>,
}

fn default_memory_mb() -> u32 {
    64
}
fn default_cpu_ms() -> u64 {
    2000
}

/// A manifest problem: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}{}: {field}: {message}", .line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ManifestError {
    pub file: String,
    /// 1-based line, when the problem can be placed in the text.
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

/// The line on which `key = …` is first written in `text` (for errors found after parsing).
fn line_of(text: &str, section: Option<&str>, key: &str) -> Option<usize> {
    let mut in_section = section.is_none();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            in_section =
                section.is_some_and(|s| t.trim_matches(|c| c == '[' || c == ']').trim() == s);
            continue;
        }
        if in_section && t.split('=').next().is_some_and(|k| k.trim() == key) {
            return Some(i + 1);
        }
    }
    None
}

impl Manifest {
    /// Parses and validates `text` (the contents of `file`).
    pub fn parse(file: &str, text: &str) -> Result<Manifest, ManifestError> {
        // Through serde_path_to_error, so a type error names its field (`model.name`), not
        // only its line.
        let manifest: Manifest = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| {
                let path = e.path().to_string();
                let e = e.into_inner();
                let line = e
                    .span()
                    .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
                ManifestError {
                    file: file.to_owned(),
                    line,
                    field: if path.is_empty() || path == "." {
                        "toml".to_owned()
                    } else {
                        path
                    },
                    message: e.message().to_owned(),
                }
            })?;
        manifest
            .validate()
            .map_err(|(section, key, message)| ManifestError {
                file: file.to_owned(),
                line: line_of(text, section, key.rsplit('.').next().unwrap_or(key)),
                field: match section {
                    Some(s) => format!("{s}.{key}"),
                    None => key.to_owned(),
                },
                message,
            })?;
        Ok(manifest)
    }

    /// Checks values beyond their types; returns (section, key, message) of the first problem.
    pub fn validate(&self) -> Result<(), (Option<&'static str>, &'static str, String)> {
        AgentName::parse(&self.name).map_err(|e| (None, "name", e.to_string()))?;
        if self.description.len() > 1000 {
            return Err((None, "description", "at most 1000 characters".into()));
        }
        let model_ok = |m: &str| is_model_ref(m) || is_alias_name(m);
        if !model_ok(&self.model.name) {
            return Err((
                Some("model"),
                "name",
                format!("{:?} is not provider/model or an alias", self.model.name),
            ));
        }
        if let Some(bad) = self.model.fallbacks.iter().find(|f| !model_ok(f)) {
            return Err((
                Some("model"),
                "fallbacks",
                format!("{bad:?} is not provider/model or an alias"),
            ));
        }
        if let Some(t) = self.model.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err((
                Some("model"),
                "temperature",
                "must be between 0 and 2".into(),
            ));
        }
        if self.model.max_tokens == Some(0) {
            return Err((Some("model"), "max_tokens", "must be at least 1".into()));
        }
        for p in self.tools.use_.iter().chain(&self.tools.approval) {
            if p.is_empty() || p.contains(char::is_whitespace) {
                return Err((Some("tools"), "use", format!("{p:?} is not a tool pattern")));
            }
        }
        if !(1..=100).contains(&self.limits.max_steps) {
            return Err((
                Some("limits"),
                "max_steps",
                "must be between 1 and 100".into(),
            ));
        }
        match parse_duration(&self.limits.timeout) {
            Some(d) if !d.is_zero() && d <= std::time::Duration::from_secs(3600) => {}
            _ => {
                return Err((
                    Some("limits"),
                    "timeout",
                    format!(
                        "{:?} is not a duration between 1ms and 1h, like \"60s\"",
                        self.limits.timeout
                    ),
                ));
            }
        }
        if let Some(c) = self.limits.max_cost_usd
            && !(c.is_finite() && c > 0.0)
        {
            return Err((
                Some("limits"),
                "max_cost_usd",
                "must be a positive number".into(),
            ));
        }
        if self.memory.history > 1000 {
            return Err((Some("memory"), "history", "at most 1000 messages".into()));
        }
        if let Some(c) = &self.component {
            if c.path.is_empty()
                || c.path.starts_with('/')
                || c.path.split('/').any(|seg| seg == "..")
            {
                return Err((
                    Some("component"),
                    "path",
                    "must be a relative path inside the bundle".into(),
                ));
            }
            if !(1..=4096).contains(&c.memory_mb) {
                return Err((
                    Some("component"),
                    "memory_mb",
                    "must be between 1 and 4096".into(),
                ));
            }
            if !(1..=600_000).contains(&c.cpu_ms) {
                return Err((
                    Some("component"),
                    "cpu_ms",
                    "must be between 1 and 600000".into(),
                ));
            }
            if let Some(h) = c
                .allowed_hosts
                .iter()
                .find(|h| !(h.starts_with("https://") || h.starts_with("http://")))
            {
                return Err((
                    Some("component"),
                    "allowed_hosts",
                    format!("{h:?} must be an http(s) origin"),
                ));
            }
        }
        Ok(())
    }

    /// Files the bundle must contain besides `agent.toml`.
    pub fn referenced_files(&self) -> Vec<&str> {
        self.component.iter().map(|c| c.path.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = r#"
name = "support"
description = "Answers customer questions"

[model]
name = "openai/gpt-4o-mini"
fallbacks = ["anthropic/claude-haiku-4-5"]
temperature = 0.2
max_tokens = 1024

[prompt]
system = "You are the support agent of {{tenant.name}}."

[tools]
use = ["crm__*", "sandbox__exec"]
approval = ["crm__refund"]

[limits]
max_steps = 8
timeout = "60s"
max_cost_usd = 0.25

[memory]
history = 20

[component]
path = "agent.wasm"
memory_mb = 64
cpu_ms = 2000
allowed_hosts = ["https://api.example.com"]
"#;

    #[test]
    fn the_example_of_api_md_parses() {
        let m = Manifest::parse("agent.toml", EXAMPLE).unwrap();
        assert_eq!(m.name, "support");
        assert_eq!(m.tools.use_, vec!["crm__*", "sandbox__exec"]);
        assert_eq!(m.referenced_files(), vec!["agent.wasm"]);
        let minimal = Manifest::parse(
            "agent.toml",
            "name = \"a\"\n[model]\nname = \"mock/echo\"\n",
        )
        .unwrap();
        assert_eq!((minimal.limits.max_steps, minimal.memory.history), (8, 20));
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = Manifest::parse(
            "agent.toml",
            "name = \"a\"\n[model]\nname = \"mock/echo\"\ntemprature = 1\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(4));
        assert!(e.message.contains("temprature"), "{e}");
        let e = Manifest::parse(
            "x/agent.toml",
            "name = \"Bad Name\"\n[model]\nname = \"mock/echo\"\n",
        )
        .unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("name", Some(1)));
        assert!(e.to_string().starts_with("x/agent.toml:1: name:"), "{e}");
        let e = Manifest::parse(
            "agent.toml",
            "name = \"a\"\n[model]\nname = \"mock/echo\"\n[limits]\ntimeout = \"soon\"\n",
        )
        .unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("limits.timeout", Some(5)));
        let e = Manifest::parse(
            "agent.toml",
            "name = \"a\"\n[model]\nname = \"mock/echo\"\n[component]\npath = \"../x.wasm\"\n",
        )
        .unwrap_err();
        assert_eq!(e.field, "component.path");
        let e = Manifest::parse("agent.toml", "name = \"a\"\n").unwrap_err();
        assert!(e.message.contains("model"), "{e}");
        let e = Manifest::parse(
            "agent.toml",
            "name = \"a\"\n[model]\nname = \"two words\"\n",
        )
        .unwrap_err();
        assert_eq!(e.field, "model.name");
    }

    #[test]
    fn type_errors_name_the_field_path_and_line() {
        let e = Manifest::parse("agent.toml", "name = \"a\"\n[model]\nname = 42\n").unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("model.name", Some(3)), "{e}");
        assert!(
            e.to_string().starts_with("agent.toml:3: model.name: "),
            "{e}"
        );
        let e = Manifest::parse(
            "agent.toml",
            "name = \"a\"\n[model]\nname = \"mock/echo\"\n[limits]\nmax_steps = \"many\"\n",
        )
        .unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.line),
            ("limits.max_steps", Some(5)),
            "{e}"
        );
    }

    #[test]
    fn a_model_is_provider_slash_model_or_alias_shaped() {
        let parse = |model: &str| {
            Manifest::parse(
                "agent.toml",
                &format!(
                    "name = \"a\"\n[model]\nname = {}\n",
                    serde_json::to_string(model).unwrap()
                ),
            )
        };
        for good in [
            "mock/echo",
            "openai/gpt-4o-mini",
            "fast",
            "my-alias.v2",
            "or/meta/llama-3",
        ] {
            assert!(parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/echo",
            "mock/",
            "two words",
            "mock/echo\u{0}",
            "fast!",
            "caf\u{e9}\u{202e}",
            "a\tb",
        ] {
            let e = parse(bad).expect_err(bad);
            assert_eq!(e.field, "model.name", "{bad}: {e}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC{0,300}") {
            let _ = Manifest::parse("agent.toml", &text);
        }
    }
}
