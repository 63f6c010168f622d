//! Plain views of stored records, in the shape the platform publishes them (a run's live
//! events carry its [`RunView`]); the HTTP crate's documented DTOs are built from these.

use berth_core::clock::rfc3339;
use berth_store::RunRecord;
use serde::Serialize;

/// A run as its events (`run.started`, `run.completed`…) and the API show it.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub id: String,
    pub agent: String,
    pub version: i64,
    pub thread: Option<String>,
    pub status: String,
    pub output: Option<String>,
    pub error: Option<serde_json::Value>,
    pub usage: serde_json::Value,
    pub created_at: String,
    pub finished_at: Option<String>,
}

impl From<&RunRecord> for RunView {
    fn from(r: &RunRecord) -> Self {
        RunView {
            id: r.id.clone(),
            agent: r.agent.clone(),
            version: r.version,
            thread: r.thread_id.clone(),
            status: r.status.clone(),
            output: r.output.clone(),
            // Stored as JSON text; a row that does not parse shows no error object rather
            // than failing the whole answer.
            error: r
                .error
                .as_deref()
                .and_then(|e| serde_json::from_str(e).ok()),
            usage: serde_json::from_str(&r.usage).unwrap_or(serde_json::Value::Null),
            created_at: rfc3339(r.created_at_ms),
            finished_at: r.finished_at_ms.map(rfc3339),
        }
    }
}
