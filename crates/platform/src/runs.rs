//! Runs of manifest agents: pick the version, keep the thread, then run synchronously,
//! streamed or queued (the execution itself is `runner`'s); cancel; follow a run's events;
//! read runs, traces and threads.

use crate::Platform;
use crate::auth::TenantCaller;
use crate::error::Error;
use crate::limits::{self, Admitted, Ask};
use crate::view::RunView;
use crate::{policy, runner};
use berth_audit::NewEntry;
use berth_core::clock::now_ms;
use berth_core::{AgentName, Id, IdKind, Manifest, Role, TenantScope};
use berth_llm::{Message, Role as MsgRole};
use berth_runtime::{Begin, LiveRun, RunEvent, RunUsage, choose_version};
use berth_store::{Page, PageRequest, RunFilter, RunRecord, RunStep, ThreadRecord};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::mpsc;

pub struct RunRequest {
    pub input: Value,
    pub thread: Option<String>,
    pub version: Option<i64>,
    pub stream: bool,
    pub asynchronous: bool,
    pub metadata: Value,
}

/// The run's input as messages, refused with 413 when its text is larger than
/// `max_bytes` (a run holds its input in its prompt, trace, thread and events).
fn input_messages(input: &Value, max_bytes: usize) -> Result<Vec<Message>, Error> {
    let bad = |m: &str| Error::invalid("invalid_input", "input", m.to_owned());
    let bytes: usize = match input {
        Value::String(s) => s.len(),
        Value::Array(list) => list
            .iter()
            .map(|m| m["content"].as_str().map_or(0, str::len))
            .sum(),
        _ => 0,
    };
    if bytes > max_bytes {
        return Err(Error::too_large(format!(
            "a run's input may be at most {} KiB of text ({} KiB given; [runs] max_input_kb)",
            max_bytes / 1024,
            bytes.div_ceil(1024)
        ))
        .with_param("input"));
    }
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

enum ThreadChoice {
    None,
    New,
    Existing(ThreadRecord),
}

fn run_not_found(id: &str) -> Error {
    Error::not_found("run_not_found", format!("no run with id '{id}'"))
}

/// How a started run is answered.
pub enum Started {
    /// Synchronous: the run as it ended (or paused for approval).
    Done(RunRecord),
    /// Asynchronous: queued for the workers.
    Queued(RunRecord),
    /// Streamed: its events follow live.
    Stream(RunRecord, Arc<LiveRun>),
}

/// Starts a run. Every run counts against the tenant's (and the key's and agent's)
/// requests per minute; the answer carries the `x-ratelimit-*` headers of the returned
/// [`Admitted`]. (The model calls a run makes are metered, not rate limited.)
pub async fn start(
    state: &Platform,
    auth: &TenantCaller,
    agent: &str,
    req: RunRequest,
) -> Result<(Started, Admitted), Error> {
    let scope = auth.require_for_agent(Role::Invoker, agent)?;
    if req.stream && req.asynchronous {
        return Err(Error::bad_request(
            "invalid_run_mode",
            "a run is either streamed or asynchronous, not both",
        )
        .with_param("async"));
    }
    if req.version.is_some() {
        auth.require_role(Role::Developer)?;
    }
    let input = input_messages(&req.input, state.runner.settings.max_input_bytes)?;
    // Admission before the store is read, so a flood of runs costs no database work. A
    // name that is not an agent name names no agent (the answer is a 404 below) and has
    // no bucket of its own.
    let policy = policy::effective(state, scope).await?;
    let ask = Ask {
        agent: AgentName::parse(agent).ok().map(|_| agent),
        tokens: None,
    };
    let admitted = limits::admit(state, auth, &policy, ask).await?;
    let summary =
        state.store.get_agent(scope, agent).await?.ok_or_else(|| {
            Error::not_found("agent_not_found", format!("no agent named '{agent}'"))
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
                    Error::not_found(
                        "thread_not_found",
                        format!("agent '{agent}' has no thread '{id}'"),
                    )
                })?,
        ),
    };
    let key_id = auth.key.as_ref().map(|k| k.id.as_str());
    let thread_version = match &thread {
        ThreadChoice::Existing(t) => Some(t.version),
        _ => None,
    };
    let version = choose_version(&summary.traffic, req.version, key_id, thread_version)
        .ok_or_else(|| {
            Error::conflict(
                "no_traffic",
                format!("agent '{agent}' has no version receiving traffic"),
            )
        })?;
    let record = state
        .store
        .get_version(scope, agent, version)
        .await?
        .ok_or_else(|| {
            Error::not_found(
                "version_not_found",
                format!("agent '{agent}' has no version {version}"),
            )
        })?;
    let manifest: Manifest =
        serde_json::from_str(&record.manifest).map_err(|e| Error::internal(&e))?;
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
            let history = t
                .messages
                .iter()
                .filter_map(|m| runner::record::restored(m))
                .collect();
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
        usage: RunUsage::default().to_json().to_string(),
        created_at_ms: now_ms(),
        finished_at_ms: None,
        // Kept with every run, so that a queued one can be executed by any worker later.
        request: Some(json!({"input": input, "metadata": req.metadata}).to_string()),
        checkpoint: None,
        lease_until_ms: None,
        started_by: Some(scope.principal().actor()),
    };
    let share = limits::share_of(state, &auth.tenant.plan, &policy);
    if req.asynchronous {
        state
            .runner
            .scheduler
            .can_queue(scope.tenant_str(), share)
            .map_err(|r| runner::refused(r, share))?;
        run.status = "queued".to_owned();
        state.store.insert_run(scope, &run).await?;
        // Live from now on, so a follower of the queued run sees it start.
        state.runner.hub.register(scope, &run.id, Vec::new);
        state.runner.enqueue(scope, share, &run.id);
        return Ok((Started::Queued(run), admitted));
    }
    // A run that starts now needs a slot now: the tenant's concurrency and the node's
    // capacity are checked before anything is stored.
    let permit = state
        .runner
        .scheduler
        .admit(scope.tenant_str(), share)
        .map_err(|r| runner::refused(r, share))?;
    run.lease_until_ms = Some(now_ms() + state.runner.settings.lease.as_millis() as i64);
    state.store.insert_run(scope, &run).await?;
    let live = state.runner.hub.register(scope, &run.id, Vec::new);
    live.emit(RunEvent::new(
        "run.started",
        json!({"run": RunView::from(&run)}),
    ));
    let done = runner::executor::launch(
        state,
        runner::executor::Launch {
            scope: scope.clone(),
            run: run.clone(),
            manifest,
            tenant: runner::executor::RunTenant {
                name: auth.tenant.name.clone(),
                plan: auth.tenant.plan.clone(),
            },
            begin: Begin::Fresh { history, input },
            live: live.clone(),
            permit,
        },
    );
    if req.stream {
        return Ok((Started::Stream(run, live), admitted));
    }
    let finished = done.await.map_err(|_| {
        Error::unavailable("shutting_down", "the server stopped before the run ended")
    })?;
    Ok((Started::Done(finished), admitted))
}

/// Cancels a run that has not ended: a queued one is never executed, a running one stops at
/// once (what it already spent is kept), a waiting one's approvals are cancelled.
pub async fn cancel(state: &Platform, auth: &TenantCaller, id: &str) -> Result<RunRecord, Error> {
    let run = get(state, auth, id).await?;
    let scope = auth.require_for_agent(Role::Invoker, &run.agent)?;
    if auth.scope.principal().role() == Role::Invoker
        && !run.started_by_actor(&auth.scope.principal().actor())
    {
        return Err(Error::forbidden(
            "not_your_run",
            "an invoker may cancel only the runs it started",
        ));
    }
    let entry = NewEntry::new(
        scope.principal().actor(),
        "run.cancel",
        id,
        json!({"agent": run.agent, "status_before": run.status}),
    );
    let (stored, changed) = state
        .store
        .cancel_run(scope, id, &entry)
        .await?
        .ok_or_else(|| run_not_found(id))?;
    if changed && let Some(live) = state.runner.hub.get(scope, id) {
        live.cancel.cancel();
        // A run that no task executes (queued, or waiting for approval) ends here.
        if !live.is_executing() {
            live.emit(runner::record::terminal_event(&stored));
            state.runner.hub.remove(scope, id);
        }
    }
    Ok(stored)
}

/// The run's events: replayed from the live run, or rebuilt from the store, then followed
/// until the run ends. Each event is sent on `tx`; the answer ends when the run has.
pub async fn follow(state: Platform, scope: TenantScope, id: String, tx: mpsc::Sender<RunEvent>) {
    let mut sent = 0usize;
    loop {
        if let Some(live) = state.runner.hub.get(&scope, &id) {
            loop {
                let batch = tokio::select! {
                    _ = state.runner.closing.cancelled() => return,
                    _ = tx.closed() => return,
                    b = live.next_events(sent) => b,
                };
                if batch.is_empty() {
                    break;
                }
                for e in batch {
                    sent += 1;
                    let end = e.is_terminal();
                    if tx.send((*e).clone()).await.is_err() || end {
                        return;
                    }
                }
            }
        }
        let (run, steps) = match state.store.get_run(&scope, &id).await {
            Ok(Some(run)) => {
                let steps = state.store.run_steps(&scope, &id).await.unwrap_or_default();
                (run, steps)
            }
            _ => return,
        };
        let events = runner::record::stored_events(&run, &steps);
        for e in events.into_iter().skip(sent) {
            sent += 1;
            if tx.send(e).await.is_err() {
                return;
            }
        }
        if run.is_terminal() {
            return;
        }
        tokio::select! {
            _ = state.runner.closing.cancelled() => return,
            _ = tx.closed() => return,
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
        }
    }
}

/// Any role reads the tenant's runs (roles include the ones below them, and a viewer reads
/// runs); a key restricted to one agent reads that agent's runs only.
pub async fn get(state: &Platform, auth: &TenantCaller, id: &str) -> Result<RunRecord, Error> {
    let scope = auth.require_role(Role::Viewer)?;
    let run = state
        .store
        .get_run(scope, id)
        .await?
        .ok_or_else(|| run_not_found(id))?;
    if !auth.sees_agent(&run.agent) {
        return Err(run_not_found(id));
    }
    Ok(run)
}

pub async fn list(
    state: &Platform,
    auth: &TenantCaller,
    mut filter: RunFilter,
    page: &PageRequest,
) -> Result<Page<RunRecord>, Error> {
    let scope: &TenantScope = auth.require_role(Role::Viewer)?;
    let Some(agent) = auth.agent_filter(filter.agent.take()) else {
        return Ok(Page {
            items: vec![],
            next_cursor: None,
        });
    };
    filter.agent = agent;
    Ok(state.store.list_runs(scope, &filter, page).await?)
}

pub async fn trace(state: &Platform, auth: &TenantCaller, id: &str) -> Result<Vec<RunStep>, Error> {
    let run = get(state, auth, id).await?;
    Ok(state.store.run_steps(&auth.scope, &run.id).await?)
}

pub async fn thread(
    state: &Platform,
    auth: &TenantCaller,
    id: &str,
) -> Result<ThreadRecord, Error> {
    let scope = auth.require_role(Role::Viewer)?;
    let t =
        state.store.get_thread(scope, id).await?.ok_or_else(|| {
            Error::not_found("thread_not_found", format!("no thread with id '{id}'"))
        })?;
    if !auth.sees_agent(&t.agent) {
        return Err(Error::not_found(
            "thread_not_found",
            format!("no thread with id '{id}'"),
        ));
    }
    Ok(t)
}

pub async fn delete_thread(state: &Platform, auth: &TenantCaller, id: &str) -> Result<(), Error> {
    auth.require_role(Role::Invoker)?;
    thread(state, auth, id).await?;
    state.store.delete_thread(&auth.scope, id).await?;
    Ok(())
}
