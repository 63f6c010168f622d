//! The tenant policy document (`PUT /v1/policy`): models, limits, budgets, tools, data-loss
//! rules and webhooks. Unknown fields are refused; `validate` names the first bad field.

use crate::name::AgentName;
use crate::plan::Plan;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub models: ModelPolicy,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub budgets: Vec<Budget>,
    #[serde(default)]
    pub tools: ToolPolicy,
    #[serde(default)]
    pub dlp: Option<DlpPolicy>,
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPolicy {
    /// Model patterns the tenant may use; absent means every model.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    #[serde(default)]
    pub fallbacks: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub routes: Vec<ModelRoute>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRoute {
    pub tag: String,
    pub model: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    pub concurrent_runs: Option<u32>,
    /// Requests per minute of each API key, so that one client cannot use up its
    /// tenant's whole limit; absent means no limit of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_key_requests_per_minute: Option<u32>,
    /// Requests per minute of each agent (its runs, and gateway calls attributed to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_agent_requests_per_minute: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Month,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// `tenant`, `agent:NAME` or `key:key_…`.
    pub scope: String,
    pub period: Period,
    pub limit_usd: f64,
    #[serde(default = "yes")]
    pub hard: bool,
    #[serde(default)]
    pub alert_at: Vec<f64>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolPolicy {
    /// Agent name (or `*`) → tool patterns it may call.
    #[serde(default)]
    pub allow: BTreeMap<String, Vec<String>>,
    /// Tool patterns whose calls wait for a human decision.
    #[serde(default)]
    pub approval: Vec<String>,
    #[serde(default)]
    pub rate_limits: Vec<ToolRateLimit>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolRateLimit {
    pub tool: String,
    pub per_minute: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DlpAction {
    Block,
    Redact,
    Allow,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlpPolicy {
    #[serde(default)]
    pub detect: Vec<String>,
    #[serde(default)]
    pub custom: Vec<CustomDetector>,
    #[serde(default = "allow_action")]
    pub on_tool_args: DlpAction,
    #[serde(default = "allow_action")]
    pub on_tool_results: DlpAction,
    #[serde(default = "allow_action")]
    pub on_llm_output: DlpAction,
}

fn allow_action() -> DlpAction {
    DlpAction::Allow
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDetector {
    pub name: String,
    pub regex: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
    pub events: Vec<String>,
    /// Name of the tenant secret used to sign deliveries.
    #[serde(default)]
    pub secret: Option<String>,
}

/// The built-in data-loss detectors.
pub const DLP_DETECTORS: &[&str] = &[
    "email",
    "phone",
    "credit_card",
    "iban",
    "us_ssn",
    "secret_token",
];
/// Custom data-loss detectors one policy may have at most: each is one more pass over
/// every screened text.
pub const MAX_CUSTOM_DETECTORS: usize = 32;
/// The longest custom detector pattern, in bytes (its compiled size is capped as well).
pub const MAX_CUSTOM_REGEX_BYTES: usize = 1024;
/// Events a webhook may subscribe to.
pub const WEBHOOK_EVENTS: &[&str] = &[
    "budget.alert",
    "run.failed",
    "run.completed",
    "approval.required",
];

/// A validation failure: the JSON path of the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PolicyError {
    pub field: String,
    pub message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError {
        field: field.into(),
        message: message.into(),
    }
}

/// `provider/model` with both parts non-empty and no spaces.
/// `provider/model`: a provider name of letters, digits, `-`, `_` and `.`, then a model name
/// of up to 256 characters with no spaces or control characters (a NUL in a model name would
/// be stored with every usage event of the call).
pub fn is_model_ref(s: &str) -> bool {
    match s.split_once('/') {
        Some((p, m)) => {
            (1..=64).contains(&p.len())
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && (1..=256).contains(&m.len())
                && !m.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

/// An alias of the tenant policy's `models.aliases`: 1 to 64 letters, digits, `-`, `_`, `.`
/// and `:`, starting with a letter or digit.
pub fn is_alias_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

fn check_pattern(field: &str, p: &str) -> Result<(), PolicyError> {
    if p.is_empty() || p.len() > 256 || p.contains(char::is_whitespace) {
        return Err(bad(
            field,
            "a pattern must be 1 to 256 characters without spaces",
        ));
    }
    Ok(())
}

impl Policy {
    /// Reads a policy document. A type error or an unknown field is refused with the JSON
    /// path of the field (`budgets[0].limit_usd`, `models.alow`), as `validate` names a bad
    /// value, so a client always learns which field to fix.
    pub fn from_json(document: serde_json::Value) -> Result<Policy, PolicyError> {
        serde_path_to_error::deserialize(document).map_err(|e| {
            let path = e.path().to_string();
            PolicyError {
                field: if path.is_empty() || path == "." {
                    "policy".to_owned()
                } else {
                    path
                },
                message: e.into_inner().to_string(),
            }
        })
    }

    /// Checks every field; `regex_ok` tells whether a custom detector's regex compiles
    /// (the regex engine lives above this crate).
    pub fn validate(
        &self,
        regex_ok: impl Fn(&str) -> Result<(), String>,
    ) -> Result<(), PolicyError> {
        let m = &self.models;
        for (i, p) in m.allow.iter().flatten().enumerate() {
            check_pattern(&format!("models.allow[{i}]"), p)?;
        }
        for (alias, target) in &m.aliases {
            if !is_alias_name(alias) {
                return Err(bad(
                    format!("models.aliases.{}", alias.escape_debug()),
                    "an alias is 1 to 64 letters, digits, '-', '_', '.' or ':', starting with a letter or digit",
                ));
            }
            if !is_model_ref(target) {
                return Err(bad(
                    format!("models.aliases.{alias}"),
                    format!("{target:?} is not a provider/model name"),
                ));
            }
        }
        let resolves = |s: &str| is_model_ref(s) || m.aliases.contains_key(s);
        for (from, chain) in &m.fallbacks {
            if !resolves(from) {
                return Err(bad(
                    format!("models.fallbacks.{from}"),
                    "must be a provider/model name or an alias",
                ));
            }
            for (i, to) in chain.iter().enumerate() {
                if !resolves(to) {
                    return Err(bad(
                        format!("models.fallbacks.{from}[{i}]"),
                        format!("{to:?} is not a provider/model name or an alias"),
                    ));
                }
            }
        }
        for (i, r) in m.routes.iter().enumerate() {
            if r.tag.is_empty() || r.tag.contains(',') {
                return Err(bad(
                    format!("models.routes[{i}].tag"),
                    "a tag is a non-empty word without commas",
                ));
            }
            if !resolves(&r.model) {
                return Err(bad(
                    format!("models.routes[{i}].model"),
                    format!("{:?} is not a provider/model name or an alias", r.model),
                ));
            }
        }
        let l = &self.limits;
        if l.requests_per_minute == Some(0)
            || l.tokens_per_minute == Some(0)
            || l.concurrent_runs == Some(0)
        {
            return Err(bad(
                "limits",
                "limits must be at least 1 (omit a limit to use the plan's)",
            ));
        }
        for (field, value) in [
            (
                "limits.per_key_requests_per_minute",
                l.per_key_requests_per_minute,
            ),
            (
                "limits.per_agent_requests_per_minute",
                l.per_agent_requests_per_minute,
            ),
        ] {
            if value == Some(0) {
                return Err(bad(field, "must be at least 1 (omit it for no limit)"));
            }
            // A narrower limit above the tenant's own would never apply: say so rather
            // than accept a setting that does nothing.
            if let (Some(v), Some(tenant)) = (value, l.requests_per_minute)
                && v > tenant
            {
                return Err(bad(
                    field,
                    format!("{v} is above limits.requests_per_minute ({tenant})"),
                ));
            }
        }
        for (i, b) in self.budgets.iter().enumerate() {
            let field = format!("budgets[{i}]");
            let scope_ok = b.scope == "tenant"
                || b.scope
                    .strip_prefix("agent:")
                    .is_some_and(|a| AgentName::parse(a).is_ok())
                || b.scope
                    .strip_prefix("key:")
                    .is_some_and(|k| crate::Id::parse(crate::IdKind::Key, k).is_some());
            if !scope_ok {
                return Err(bad(
                    format!("{field}.scope"),
                    "must be \"tenant\", \"agent:NAME\" or \"key:key_…\"",
                ));
            }
            if !(b.limit_usd.is_finite() && b.limit_usd >= 0.0) {
                return Err(bad(
                    format!("{field}.limit_usd"),
                    "must be a non-negative number",
                ));
            }
            for (j, a) in b.alert_at.iter().enumerate() {
                if !(*a > 0.0 && *a <= 1.0) {
                    return Err(bad(
                        format!("{field}.alert_at[{j}]"),
                        "alert fractions are in (0, 1]",
                    ));
                }
            }
        }
        for (agent, patterns) in &self.tools.allow {
            if agent != "*" && AgentName::parse(agent).is_err() {
                return Err(bad(
                    format!("tools.allow.{agent}"),
                    "keys are agent names or \"*\"",
                ));
            }
            for (i, p) in patterns.iter().enumerate() {
                check_pattern(&format!("tools.allow.{agent}[{i}]"), p)?;
            }
        }
        for (i, p) in self.tools.approval.iter().enumerate() {
            check_pattern(&format!("tools.approval[{i}]"), p)?;
        }
        for (i, r) in self.tools.rate_limits.iter().enumerate() {
            check_pattern(&format!("tools.rate_limits[{i}].tool"), &r.tool)?;
            if r.per_minute == 0 {
                return Err(bad(
                    format!("tools.rate_limits[{i}].per_minute"),
                    "must be at least 1",
                ));
            }
        }
        if let Some(d) = &self.dlp {
            for (i, name) in d.detect.iter().enumerate() {
                if !DLP_DETECTORS.contains(&name.as_str()) {
                    return Err(bad(
                        format!("dlp.detect[{i}]"),
                        format!(
                            "unknown detector {name:?}; known: {}",
                            DLP_DETECTORS.join(", ")
                        ),
                    ));
                }
            }
            if d.custom.len() > MAX_CUSTOM_DETECTORS {
                return Err(bad(
                    "dlp.custom",
                    format!(
                        "at most {MAX_CUSTOM_DETECTORS} custom detectors ({} given)",
                        d.custom.len()
                    ),
                ));
            }
            for (i, c) in d.custom.iter().enumerate() {
                if c.name.is_empty() || c.name.len() > 64 || c.name.contains(char::is_control) {
                    return Err(bad(
                        format!("dlp.custom[{i}].name"),
                        "must be 1 to 64 characters without control characters",
                    ));
                }
                if c.regex.len() > MAX_CUSTOM_REGEX_BYTES {
                    return Err(bad(
                        format!("dlp.custom[{i}].regex"),
                        format!(
                            "a pattern may be at most {MAX_CUSTOM_REGEX_BYTES} bytes ({} given)",
                            c.regex.len()
                        ),
                    ));
                }
                regex_ok(&c.regex).map_err(|e| bad(format!("dlp.custom[{i}].regex"), e))?;
            }
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            if !(w.url.starts_with("https://") || w.url.starts_with("http://")) {
                return Err(bad(format!("webhooks[{i}].url"), "must be an http(s) URL"));
            }
            for (j, e) in w.events.iter().enumerate() {
                if !WEBHOOK_EVENTS.contains(&e.as_str()) {
                    return Err(bad(
                        format!("webhooks[{i}].events[{j}]"),
                        format!("unknown event {e:?}; known: {}", WEBHOOK_EVENTS.join(", ")),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The tenant's effective limits: its own, capped by its plan's. Per-key and per-agent
    /// limits stay absent unless set, and are capped by the plan's requests per minute.
    pub fn effective_limits(&self, plan: &Plan) -> Limits {
        let cap = |own: Option<u64>, plan: u64| Some(own.map_or(plan, |o| o.min(plan)));
        let narrower = |own: Option<u32>| own.map(|o| o.min(plan.requests_per_minute));
        Limits {
            per_key_requests_per_minute: narrower(self.limits.per_key_requests_per_minute),
            per_agent_requests_per_minute: narrower(self.limits.per_agent_requests_per_minute),
            requests_per_minute: cap(
                self.limits.requests_per_minute.map(u64::from),
                u64::from(plan.requests_per_minute),
            )
            .and_then(|v| u32::try_from(v).ok()),
            tokens_per_minute: cap(self.limits.tokens_per_minute, plan.tokens_per_minute),
            concurrent_runs: cap(
                self.limits.concurrent_runs.map(u64::from),
                u64::from(plan.concurrent_runs),
            )
            .and_then(|v| u32::try_from(v).ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<Policy, String> {
        serde_json::from_value::<Policy>(v).map_err(|e| e.to_string())
    }

    fn ok_regex(_: &str) -> Result<(), String> {
        Ok(())
    }

    #[test]
    fn the_example_of_api_md_is_valid() {
        let p = parse(json!({
          "models": {"allow": ["openai/*", "mock/*"], "aliases": {"fast": "openai/gpt-4o-mini"},
                     "fallbacks": {"openai/gpt-4o": ["anthropic/claude-sonnet-4-5"]},
                     "routes": [{"tag": "classify", "model": "fast"}]},
          "limits": {"requests_per_minute": 600, "tokens_per_minute": 1000000, "concurrent_runs": 20},
          "budgets": [{"scope": "tenant", "period": "month", "limit_usd": 50, "hard": true, "alert_at": [0.5, 0.8, 1.0]}],
          "tools": {"allow": {"*": ["*"], "support": ["crm__*"]},
                    "approval": ["*__send_email", "*__delete_*"],
                    "rate_limits": [{"tool": "crm__*", "per_minute": 60}]},
          "dlp": {"detect": ["email", "phone", "credit_card", "iban", "us_ssn", "secret_token"],
                  "custom": [{"name": "ticket", "regex": "TCK-[0-9]{6}"}],
                  "on_tool_args": "block", "on_tool_results": "redact", "on_llm_output": "redact"},
          "webhooks": [{"url": "https://hooks.example.com/x", "events": ["budget.alert", "run.failed", "approval.required"], "secret": "HOOK"}]
        }))
        .unwrap();
        p.validate(ok_regex).unwrap();
        assert_eq!(p.models.aliases["fast"], "openai/gpt-4o-mini");
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(parse(json!({"modles": {}})).unwrap_err().contains("modles"));
        assert!(
            parse(json!({"models": {"alow": []}}))
                .unwrap_err()
                .contains("alow")
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (
                json!({"models": {"aliases": {"fast": "gpt"}}}),
                "models.aliases.fast",
            ),
            (
                json!({"models": {"fallbacks": {"openai/x": ["nope"]}}}),
                "models.fallbacks.openai/x[0]",
            ),
            (
                json!({"models": {"routes": [{"tag": "", "model": "mock/echo"}]}}),
                "models.routes[0].tag",
            ),
            (json!({"limits": {"requests_per_minute": 0}}), "limits"),
            (
                json!({"limits": {"per_key_requests_per_minute": 0}}),
                "limits.per_key_requests_per_minute",
            ),
            (
                json!({"limits": {"requests_per_minute": 10, "per_agent_requests_per_minute": 11}}),
                "limits.per_agent_requests_per_minute",
            ),
            (
                json!({"budgets": [{"scope": "team", "period": "day", "limit_usd": 1}]}),
                "budgets[0].scope",
            ),
            (
                json!({"budgets": [{"scope": "tenant", "period": "day", "limit_usd": -1}]}),
                "budgets[0].limit_usd",
            ),
            (
                json!({"budgets": [{"scope": "tenant", "period": "day", "limit_usd": 1, "alert_at": [1.5]}]}),
                "budgets[0].alert_at[0]",
            ),
            (
                json!({"tools": {"allow": {"Bad Agent": ["*"]}}}),
                "tools.allow.Bad Agent",
            ),
            (
                json!({"tools": {"rate_limits": [{"tool": "x", "per_minute": 0}]}}),
                "tools.rate_limits[0].per_minute",
            ),
            (json!({"dlp": {"detect": ["dna"]}}), "dlp.detect[0]"),
            (
                json!({"webhooks": [{"url": "ftp://x", "events": []}]}),
                "webhooks[0].url",
            ),
            (
                json!({"webhooks": [{"url": "https://x", "events": ["nope"]}]}),
                "webhooks[0].events[0]",
            ),
        ];
        for (doc, field) in cases {
            let err = parse(doc.clone()).unwrap().validate(ok_regex).unwrap_err();
            assert_eq!(err.field, field, "{doc}");
        }
        let p = parse(json!({"dlp": {"custom": [{"name": "x", "regex": "("}]}})).unwrap();
        assert_eq!(
            p.validate(|_| Err("unclosed group".into()))
                .unwrap_err()
                .field,
            "dlp.custom[0].regex"
        );
    }

    #[test]
    fn limits_are_capped_by_the_plan() {
        let plan = Plan {
            requests_per_minute: 60,
            tokens_per_minute: 1000,
            concurrent_runs: 2,
            monthly_budget_usd: None,
            weight: 1,
            markup_percent: 0.0,
        };
        let p =
            parse(json!({"limits": {"requests_per_minute": 600, "concurrent_runs": 1}})).unwrap();
        let l = p.effective_limits(&plan);
        assert_eq!(
            (
                l.requests_per_minute,
                l.tokens_per_minute,
                l.concurrent_runs
            ),
            (Some(60), Some(1000), Some(1))
        );
        assert_eq!(
            (
                l.per_key_requests_per_minute,
                l.per_agent_requests_per_minute
            ),
            (None, None)
        );
        let p = parse(json!({"limits": {"per_key_requests_per_minute": 600, "per_agent_requests_per_minute": 5}}))
            .unwrap();
        p.validate(ok_regex).unwrap();
        let l = p.effective_limits(&plan);
        assert_eq!(
            (
                l.per_key_requests_per_minute,
                l.per_agent_requests_per_minute
            ),
            (Some(60), Some(5))
        );
    }
}
