//! Runs of manifest agents (synchronous for now): pick the version, keep the thread,
//! run the built-in loop through the gateway, record the run, its trace and the thread.

use crate::auth::TenantAuth;
use crate::error::ApiError;
use crate::service::policy;
use crate::state::AppState;
use berth_core::clock::now_ms;
use berth_core::{Id, IdKind, Manifest, Role, TenantScope};
use berth_gateway::CallMeta;
use berth_llm::{Message, Role as MsgRole};
use berth_runtime::{RunContext, choose_version, run_builtin};
use berth_store::{Page, PageRequest, RunFilter, RunRecord, RunStep, ThreadRecord};
use serde_json::{Value, json};

pub struct RunRequest {
    pub input: Value,
    pub thread: Option<String>,
    pub version: Option<i64>,
    pub stream: bool,
    pub asynchronous: bool,
}

fn input_messages(input: &Value) -> Result<Vec<Message>, ApiError> {
    let bad = |m: &str| ApiError::invalid("invalid_input", "input", m.to_owned());
    match input {
        Value::String(s) if !s.is_empty() => Ok(vec![Message::text(MsgRole::User, s.clone())]),
        Value::Array(list) if !list.is_empty() => list
            .iter()
            .map(|m| {
                let text = m["content"]
                    .as_str()
                    .ok_or_else(|| bad("each message needs a string content"))?;
                let role = match m["role"].as_str() {
                    Some("user") => MsgRole::User,
                    Some("assistant") => MsgRole::Assistant,
                    _ => return Err(bad("message roles are user or assistant")),
                };
                Ok(Message::text(role, text))
            })
            .collect(),
        _ => Err(bad(
            "input is a non-empty string or a non-empty array of {role, content} messages",
        )),
    }
}

/// Thread messages are stored as `{"role", "content"}` with the text of each turn.
fn stored(m: &Message) -> String {
    let role = match m.role {
        MsgRole::User => "user",
        MsgRole::Assistant => "assistant",
        MsgRole::Tool => "tool",
    };
    json!({"role": role, "content": m.text_content()}).to_string()
}

fn restored(text: &str) -> Option<Message> {
    let v: Value = serde_json::from_str(text).ok()?;
    let role = match v["role"].as_str()? {
        "user" => MsgRole::User,
        "assistant" => MsgRole::Assistant,
        // Tool turns are kept for the record but not replayed: their calls are not stored.
        _ => return None,
    };
    Some(Message::text(
        role,
        v["content"].as_str().unwrap_or_default(),
    ))
}

enum ThreadChoice {
    None,
    New,
    Existing(ThreadRecord),
}

fn run_not_found(id: &str) -> ApiError {
    ApiError::not_found("run_not_found", format!("no run with id '{id}'"))
}

pub async fn start(
    state: &AppState,
    auth: &TenantAuth,
    agent: &str,
    req: RunRequest,
) -> Result<RunRecord, ApiError> {
    let scope = auth.require_for_agent(Role::Invoker, agent)?;
    if req.stream || req.asynchronous {
        return Err(ApiError::bad_request(
            "not_supported",
            "this server runs agents synchronously only for now; omit stream and async",
        ));
    }
    if req.version.is_some() {
        auth.require_role(Role::Developer)?;
    }
    let input = input_messages(&req.input)?;
    let summary = state.store.get_agent(scope, agent).await?.ok_or_else(|| {
        ApiError::not_found("agent_not_found", format!("no agent named '{agent}'"))
    })?;
    let thread = match req.thread.as_deref() {
        None => ThreadChoice::None,
        Some("new") => ThreadChoice::New,
        Some(id) => ThreadChoice::Existing(
            state
                .store
                .get_thread(scope, id)
                .await?
                .filter(|t| t.agent == agent)
                .ok_or_else(|| {
                    ApiError::not_found(
                        "thread_not_found",
                        format!("agent '{agent}' has no thread '{id}'"),
                    )
                })?,
        ),
    };
    let key_id = auth.0.key.as_ref().map(|k| k.id.as_str());
    let thread_version = match &thread {
        ThreadChoice::Existing(t) => Some(t.version),
        _ => None,
    };
    let version = choose_version(&summary.traffic, req.version, key_id, thread_version)
        .ok_or_else(|| {
            ApiError::conflict(
                "no_traffic",
                format!("agent '{agent}' has no version receiving traffic"),
            )
        })?;
    let record = state
        .store
        .get_version(scope, agent, version)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "version_not_found",
                format!("agent '{agent}' has no version {version}"),
            )
        })?;
    let manifest: Manifest =
        serde_json::from_str(&record.manifest).map_err(|e| ApiError::internal(&e))?;
    if manifest.component.is_some() {
        return Err(ApiError::bad_request(
            "not_supported",
            "component agents cannot run on this server yet",
        ));
    }
    let (thread_id, history) = match thread {
        ThreadChoice::None => (None, Vec::new()),
        ThreadChoice::New => {
            let t = ThreadRecord {
                id: Id::new(IdKind::Thread).into_string(),
                agent: agent.to_owned(),
                version,
                created_at_ms: now_ms(),
                messages: Vec::new(),
            };
            state.store.create_thread(scope, &t).await?;
            (Some(t.id), Vec::new())
        }
        ThreadChoice::Existing(t) => {
            let history = t.messages.iter().filter_map(|m| restored(m)).collect();
            (Some(t.id), history)
        }
    };
    let mut run = RunRecord {
        id: Id::new(IdKind::Run).into_string(),
        agent: agent.to_owned(),
        version,
        thread_id,
        key_id: key_id.map(str::to_owned),
        status: "running".to_owned(),
        output: None,
        error: None,
        usage: json!({}).to_string(),
        created_at_ms: now_ms(),
        finished_at_ms: None,
    };
    state.store.insert_run(scope, &run).await?;
    let policy = policy::effective(state, scope).await?;
    let ctx = RunContext {
        scope,
        meta: CallMeta {
            key_id: run.key_id.clone(),
            agent: Some(agent.to_owned()),
            tags: vec![],
        },
        policy: &policy,
        manifest: &manifest,
        tenant_name: &auth.0.tenant.name,
        version,
        history,
        input,
    };
    let started = std::time::Instant::now();
    let outcome = run_builtin(&state.gateway, ctx).await;
    run.status = outcome.status.to_owned();
    run.output = outcome.output.clone();
    run.error = outcome.error.as_ref().map(Value::to_string);
    run.usage = outcome.usage_json(0).to_string();
    run.finished_at_ms = Some(now_ms());
    let messages: Vec<String> = outcome.new_messages.iter().map(stored).collect();
    state
        .store
        .finish_run(scope, &run, &outcome.steps, &messages)
        .await?;
    tracing::debug!(run = %run.id, status = %run.status, ms = started.elapsed().as_millis() as u64, "run finished");
    Ok(run)
}

/// Any role reads the tenant's runs (roles include the ones below them, and a viewer reads
/// runs); a key restricted to one agent reads that agent's runs only.
pub async fn get(state: &AppState, auth: &TenantAuth, id: &str) -> Result<RunRecord, ApiError> {
    let scope = auth.require_role(Role::Viewer)?;
    let run = state
        .store
        .get_run(scope, id)
        .await?
        .ok_or_else(|| run_not_found(id))?;
    if let Some(only) = auth.0.scope.principal().agent_restriction()
        && run.agent != only
    {
        return Err(run_not_found(id));
    }
    Ok(run)
}

pub async fn list(
    state: &AppState,
    auth: &TenantAuth,
    mut filter: RunFilter,
    page: &PageRequest,
) -> Result<Page<RunRecord>, ApiError> {
    let scope: &TenantScope = auth.require_role(Role::Viewer)?;
    if let Some(only) = auth.0.scope.principal().agent_restriction() {
        if filter.agent.as_deref().is_some_and(|a| a != only) {
            return Ok(Page {
                items: vec![],
                next_cursor: None,
            });
        }
        filter.agent = Some(only.to_owned());
    }
    Ok(state.store.list_runs(scope, &filter, page).await?)
}

pub async fn trace(
    state: &AppState,
    auth: &TenantAuth,
    id: &str,
) -> Result<Vec<RunStep>, ApiError> {
    let run = get(state, auth, id).await?;
    Ok(state.store.run_steps(&auth.0.scope, &run.id).await?)
}

pub async fn thread(
    state: &AppState,
    auth: &TenantAuth,
    id: &str,
) -> Result<ThreadRecord, ApiError> {
    let scope = auth.require_role(Role::Viewer)?;
    let t = state.store.get_thread(scope, id).await?.ok_or_else(|| {
        ApiError::not_found("thread_not_found", format!("no thread with id '{id}'"))
    })?;
    if let Some(only) = auth.0.scope.principal().agent_restriction()
        && t.agent != only
    {
        return Err(ApiError::not_found(
            "thread_not_found",
            format!("no thread with id '{id}'"),
        ));
    }
    Ok(t)
}

pub async fn delete_thread(state: &AppState, auth: &TenantAuth, id: &str) -> Result<(), ApiError> {
    auth.require_role(Role::Invoker)?;
    thread(state, auth, id).await?;
    state.store.delete_thread(&auth.0.scope, id).await?;
    Ok(())
}
