//! `sandbox__exec` as a tool host: the input checked, the code run, its wall time metered
//! as `compute` usage of the calling tenant, and every call audited (a digest of the code,
//! never the code).

use crate::sandbox::{ExecOutcome, Language, Sandbox, SandboxError};
use crate::settings::{MAX_CODE_BYTES, SandboxSettings};
use async_trait::async_trait;
use berth_audit::NewEntry;
use berth_core::TenantScope;
use berth_core::clock::now_ms;
use berth_core::id::{Id, IdKind};
use berth_llm::ToolDef;
use berth_meter::UsageRecorder;
use berth_runtime::{ToolCallCtx, ToolError, ToolHost};
use berth_store::{AuditStore, UsageEvent};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

pub const TOOL_NAME: &str = "sandbox__exec";

/// The tool's arguments, exactly: anything else is refused by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecInput {
    language: Language,
    code: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// The built-in `sandbox` tool server.
pub struct SandboxTools {
    sandbox: Sandbox,
    /// Each tenant's share of the node's sandboxes.
    slots: crate::fair::FairSlots,
    audit: Arc<dyn AuditStore>,
    usage: UsageRecorder,
}

impl SandboxTools {
    pub fn new(
        settings: SandboxSettings,
        audit: Arc<dyn AuditStore>,
        usage: UsageRecorder,
    ) -> Self {
        SandboxTools {
            slots: crate::fair::FairSlots::new(settings.max_concurrent),
            sandbox: Sandbox::new(settings),
            audit,
            usage,
        }
    }

    fn definition(&self) -> ToolDef {
        let s = self.sandbox.settings();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        ToolDef {
            name: TOOL_NAME.to_owned(),
            description: Some(format!(
                "Runs Python 3 or POSIX shell code in a fresh sandbox and returns JSON \
                 {{exit_code, stdout, stderr, duration_ms, timed_out, truncated}}. No network; \
                 the working directory /sandbox is the only writable place ({} MiB) and is \
                 discarded afterwards; stdout and stderr are cut after {} KiB each.",
                s.scratch_bytes >> 20,
                s.max_output_bytes >> 10
            )),
            parameters: json!({
                "type": "object",
                "properties": {
                    "language": {"type": "string", "enum": ["python", "sh"],
                                 "description": "python runs the code with python3, sh with /bin/sh"},
                    "code": {"type": "string", "maxLength": MAX_CODE_BYTES,
                             "description": "the program text"},
                    "timeout_ms": {"type": "integer", "minimum": 1, "maximum": ms(s.max_timeout),
                                   "default": ms(s.default_timeout),
                                   "description": "wall-clock limit; the whole process tree is killed at it"}
                },
                "required": ["language", "code"],
                "additionalProperties": false
            }),
        }
    }

    /// Checks the arguments against the schema and the limits.
    fn parse(&self, arguments: &str) -> Result<(ExecInput, Duration), String> {
        let s = self.sandbox.settings();
        let value: Value = serde_json::from_str(arguments)
            .map_err(|e| format!("arguments are not JSON: {}", without_position(&e)))?;
        if !value.is_object() {
            return Err("arguments must be a JSON object".to_owned());
        }
        let input: ExecInput = serde_json::from_value(value).map_err(|e| without_position(&e))?;
        if input.code.len() > MAX_CODE_BYTES {
            return Err(format!(
                "code is {} bytes; at most {MAX_CODE_BYTES} bytes are allowed",
                input.code.len()
            ));
        }
        let max = u64::try_from(s.max_timeout.as_millis()).unwrap_or(u64::MAX);
        let timeout = match input.timeout_ms {
            None => s.default_timeout,
            Some(ms) if (1..=max).contains(&ms) => Duration::from_millis(ms),
            Some(ms) => {
                return Err(format!(
                    "timeout_ms is {ms}; it must be between 1 and {max}"
                ));
            }
        };
        Ok((input, timeout))
    }

    async fn audit(&self, ctx: &ToolCallCtx<'_>, details: Value) {
        let mut details = details;
        details["agent"] = json!(ctx.agent);
        let entry = NewEntry::new(ctx.scope.actor(), "sandbox.exec", ctx.run_id, details);
        if let Err(e) = self.audit.append_audit(ctx.scope, &entry).await {
            tracing::error!(run = ctx.run_id, error = %e, "sandbox call not audited");
        }
    }

    async fn meter(&self, ctx: &ToolCallCtx<'_>, language: Language, outcome: &ExecOutcome) {
        let event = UsageEvent {
            id: Id::new(IdKind::Event).into_string(),
            at_ms: now_ms(),
            kind: "compute".to_owned(),
            key_id: ctx.key_id.map(str::to_owned),
            agent: Some(ctx.agent.to_owned()),
            provider: Some("sandbox".to_owned()),
            model: Some(language.as_str().to_owned()),
            latency_ms: i64::try_from(outcome.duration_ms).unwrap_or(i64::MAX),
            status: if outcome.timed_out { "timeout" } else { "ok" }.to_owned(),
            run_id: Some(ctx.run_id.to_owned()),
            ..UsageEvent::default()
        };
        self.usage.record(ctx.scope, event).await;
    }

    /// Runs one call; also the entry point for tests and benchmarks.
    pub async fn exec(&self, ctx: &ToolCallCtx<'_>, arguments: &str) -> Result<String, ToolError> {
        let (input, timeout) = match self.parse(arguments) {
            Ok(p) => p,
            Err(message) => {
                self.audit(ctx, json!({"error": message})).await;
                return Err(ToolError::Failed(format!(
                    "{TOOL_NAME}: invalid arguments: {message}"
                )));
            }
        };
        let digest = hex::encode(Sha256::digest(input.code.as_bytes()));
        let language = input.language;
        let Some(_place) = self.slots.acquire(ctx.scope.tenant().as_str()).await else {
            return Err(ToolError::Failed(format!(
                "{TOOL_NAME}: the sandbox is shutting down"
            )));
        };
        match self.sandbox.run(language, &input.code, timeout).await {
            Ok(outcome) => {
                self.meter(ctx, language, &outcome).await;
                self.audit(
                    ctx,
                    json!({"language": language.as_str(), "code_sha256": digest,
                           "code_bytes": input.code.len(), "exit_code": outcome.exit_code,
                           "duration_ms": outcome.duration_ms, "timed_out": outcome.timed_out,
                           "truncated": outcome.truncated}),
                )
                .await;
                serde_json::to_string(&outcome).map_err(|e| ToolError::Failed(e.to_string()))
            }
            Err(e @ SandboxError::Unavailable(_)) => {
                tracing::warn!(error = %e, "sandbox call refused");
                self.audit(
                    ctx,
                    json!({"language": language.as_str(), "code_sha256": digest,
                           "code_bytes": input.code.len(), "error": e.to_string()}),
                )
                .await;
                Err(ToolError::Failed(e.to_string()))
            }
        }
    }
}

/// serde_json's message without its " at line 1 column 9" (the model sees one line anyway).
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

#[async_trait]
impl ToolHost for SandboxTools {
    async fn list(&self, _scope: &TenantScope) -> Vec<ToolDef> {
        vec![self.definition()]
    }

    async fn call(
        &self,
        ctx: &ToolCallCtx<'_>,
        name: &str,
        arguments: &str,
    ) -> Result<String, ToolError> {
        if name != TOOL_NAME {
            return Err(ToolError::NotFound(name.to_owned()));
        }
        self.exec(ctx, arguments).await
    }
}
