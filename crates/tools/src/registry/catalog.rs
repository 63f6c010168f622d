//! Tool names and catalogues: which server and tool names are valid, how a server's tool
//! list becomes the tenant's catalogue (`server__tool` entries; unusable tools left out
//! and named), and the stored form of that list.

use super::ToolEntry;
use berth_store::McpServerRecord;
use serde_json::Value;

/// A server name: lower-case letters, digits and `-`, at most 32, starting with a letter or
/// digit (it becomes the `server__` prefix of every tool name).
pub fn valid_server_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

/// Splits `server__tool` (the server part never holds `__`).
pub fn split_name(name: &str) -> Option<(&str, &str)> {
    name.split_once("__")
        .filter(|(s, t)| !s.is_empty() && !t.is_empty())
}

/// Turns a server's tools into catalogue entries; tools with names a model cannot use or
/// without an object schema are left out and named in the second list.
pub(super) fn catalogue(
    server: &str,
    tools: &[rmcp::model::Tool],
    max: usize,
) -> (Vec<ToolEntry>, Vec<String>) {
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    for t in tools {
        let schema = Value::Object((*t.input_schema).clone());
        let object_schema = schema.get("type").and_then(Value::as_str) == Some("object");
        if !valid_tool_name(&t.name) || !object_schema || kept.len() >= max {
            skipped.push(t.name.chars().take(64).collect());
            continue;
        }
        kept.push(ToolEntry {
            name: format!("{server}__{}", t.name),
            server: server.to_owned(),
            tool: t.name.to_string(),
            description: t
                .description
                .as_ref()
                .map(|d| d.chars().take(4096).collect()),
            input_schema: schema,
            annotations: t
                .annotations
                .as_ref()
                .and_then(|a| serde_json::to_value(a).ok()),
        });
    }
    (kept, skipped)
}

pub(super) fn skipped_note(skipped: &[String]) -> Option<String> {
    (!skipped.is_empty()).then(|| {
        format!(
            "left out {} tool(s) with an unusable name or schema: {}",
            skipped.len(),
            skipped.join(", ")
        )
    })
}

/// The stored form of a tool list: the kept tools as the server described them.
pub(super) fn tools_json(listed: &[rmcp::model::Tool], kept: &[ToolEntry]) -> String {
    let kept: Vec<&rmcp::model::Tool> = listed
        .iter()
        .filter(|t| kept.iter().any(|k| k.tool == t.name))
        .collect();
    serde_json::to_string(&kept).unwrap_or_else(|_| "[]".into())
}

pub(super) fn entries_of(record: &McpServerRecord) -> Vec<ToolEntry> {
    let listed: Vec<rmcp::model::Tool> = serde_json::from_str(&record.tools).unwrap_or_default();
    catalogue(&record.name, &listed, usize::MAX).0
}
