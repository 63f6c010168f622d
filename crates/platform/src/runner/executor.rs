//! The worker pool and the execution of one run: a queued run is claimed and prepared
//! (its manifest, where it begins, its tenant), a fresh one is launched on a tracked task;
//! either executes under `catch_unwind`, the built-in loop or a component, and ends in
//! [`super::record`].

use super::RunPermit;
use super::record::{audit_dlp_hits, end_live, finish, record_tool_calls, restored, stored};
use crate::Platform;
use crate::error::Error;
use crate::view::RunView;
use crate::{budgets, components, policy};
use berth_audit::NewEntry;
use berth_core::clock::now_ms;
use berth_core::{Manifest, TenantScope};
use berth_gateway::CallMeta;
use berth_llm::{Message, Role as MsgRole};
use berth_runtime::{
    Begin, Checkpoint, Decision, LiveRun, RunEvent, RunSpec, Status, ToolHost, events_from_steps,
    run_builtin,
};
use berth_store::{ApprovalFilter, PageRequest, RunRecord, RunStep, UsageEvent};
use futures_util::FutureExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::oneshot;

pub(crate) async fn worker(state: Platform) {
    loop {
        let (job, permit) = tokio::select! {
            _ = state.runner.closing.cancelled() => return,
            next = state.runner.scheduler.next() => next,
        };
        state.runner.taken(&job);
        let scope = TenantScope::for_system(job.tenant.clone());
        let result = execute_queued(&state, &scope, &job.run_id).await;
        drop(permit);
        if let Err(e) = result {
            tracing::error!(tenant = %scope.tenant(), run = %job.run_id, error = %e.message, "queued run could not be executed");
        }
    }
}

/// Claims a queued run and executes it (fresh, or resumed from its checkpoint).
pub(super) async fn execute_queued(
    state: &Platform,
    scope: &TenantScope,
    run_id: &str,
) -> Result<(), Error> {
    let Some(run) = state
        .store
        .claim_run(scope, run_id, state.runner.lease_until())
        .await?
    else {
        return Ok(()); // taken by another worker, or cancelled
    };
    let prepared = prepare(state, scope, &run).await;
    let (manifest, begin, next_seq, tenant) = match prepared {
        Ok(p) => p,
        Err(e) => {
            let live = state.runner.hub.register(scope, run_id, Vec::new);
            let mut failed = run.clone();
            failed.status = "failed".to_owned();
            failed.error = Some(
                json!({"type": "internal", "code": "run_unstartable", "message": e.message})
                    .to_string(),
            );
            failed.finished_at_ms = Some(now_ms());
            finish(state, scope, failed, &[], &[], &live).await;
            return Ok(());
        }
    };
    let stored_steps = if next_seq > 1 {
        state.store.run_steps(scope, run_id).await?
    } else {
        Vec::new()
    };
    let started_run = run.clone();
    // A run resumed after a restart (or on another node) is not live here yet: its
    // followers replay what the store holds, then continue live.
    let live = state.runner.hub.register(scope, run_id, || {
        let mut seed = vec![RunEvent::new(
            "run.started",
            json!({"run": RunView::from(&started_run)}),
        )];
        seed.extend(events_from_steps(&stored_steps));
        seed
    });
    // A cancel that landed between the claim and this point found no execution to stop
    // (and may have ended the live run this one replaced): the store says so.
    if let Some(stored) = state.store.get_run(scope, run_id).await?
        && stored.status == "cancelled"
    {
        end_live(state, scope, stored, &live);
        return Ok(());
    }
    if live.is_empty() {
        live.emit(RunEvent::new(
            "run.started",
            json!({"run": RunView::from(&run)}),
        ));
    }
    execute_guarded(
        state, scope, run, &manifest, &tenant, begin, next_seq, &live,
    )
    .await;
    Ok(())
}

/// The tenant a run belongs to, as its execution needs it.
#[derive(Debug, Clone)]
pub struct RunTenant {
    pub name: String,
    pub plan: String,
}

type Prepared = (Manifest, Begin, i64, RunTenant);

/// What a claimed run needs: its manifest, where it begins, and its tenant's name.
pub(super) async fn prepare(
    state: &Platform,
    scope: &TenantScope,
    run: &RunRecord,
) -> Result<Prepared, Error> {
    let version = state
        .store
        .get_version(scope, &run.agent, run.version)
        .await?
        .ok_or_else(|| {
            Error::not_found(
                "version_not_found",
                format!(
                    "agent '{}' has no version {} any more",
                    run.agent, run.version
                ),
            )
        })?;
    let manifest: Manifest =
        serde_json::from_str(&version.manifest).map_err(|e| Error::internal(&e))?;
    let tenant = state
        .store
        .get_tenant(scope.tenant())
        .await?
        .ok_or_else(|| Error::not_found("tenant_not_found", "the run's tenant is gone"))?;
    if let Some(cp) = &run.checkpoint {
        let checkpoint: Checkpoint = serde_json::from_str(cp).map_err(|e| Error::internal(&e))?;
        let approvals = state
            .store
            .list_approvals(
                scope,
                &ApprovalFilter {
                    run_id: Some(run.id.clone()),
                    ..Default::default()
                },
                &PageRequest {
                    limit: PageRequest::MAX_LIMIT,
                    cursor: None,
                },
            )
            .await?;
        let decisions: HashMap<String, Decision> = approvals
            .items
            .into_iter()
            .filter(|a| a.status != "pending")
            .map(|a| {
                (
                    a.id,
                    Decision {
                        status: a.status,
                        reason: a.reason,
                        decided_by: a.decided_by,
                    },
                )
            })
            .collect();
        let next_seq = checkpoint.next_seq;
        return Ok((
            manifest,
            Begin::Resume {
                checkpoint,
                decisions,
            },
            next_seq,
            RunTenant {
                name: tenant.name,
                plan: tenant.plan,
            },
        ));
    }
    let request: Value = run
        .request
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or(Value::Null);
    let input: Vec<Message> =
        serde_json::from_value(request["input"].clone()).map_err(|e| Error::internal(&e))?;
    let history = match &run.thread_id {
        Some(t) => state
            .store
            .get_thread(scope, t)
            .await?
            .map(|t| t.messages.iter().filter_map(|m| restored(m)).collect())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let who = RunTenant {
        name: tenant.name,
        plan: tenant.plan,
    };
    Ok((manifest, Begin::Fresh { history, input }, 1, who))
}

/// A fresh run ready to execute now, with the slot it was admitted to.
pub struct Launch {
    pub scope: TenantScope,
    pub run: RunRecord,
    pub manifest: Manifest,
    pub tenant: RunTenant,
    pub begin: Begin,
    pub live: Arc<LiveRun>,
    pub permit: RunPermit,
}

/// Executes a run on a tracked task, so that it finishes even if the request that started
/// it goes away; the answer is the run as stored when this execution ended.
pub fn launch(state: &Platform, l: Launch) -> oneshot::Receiver<RunRecord> {
    let (tx, rx) = oneshot::channel();
    let s = state.clone();
    state.tasks.spawn(async move {
        // The slot is the run's until this execution ends, and free before its answer
        // leaves, so the caller's next run finds it free.
        let permit = l.permit;
        let done = execute_guarded(
            &s,
            &l.scope,
            l.run,
            &l.manifest,
            &l.tenant,
            l.begin,
            1,
            &l.live,
        )
        .await;
        drop(permit);
        let _ = tx.send(done);
    });
    rx
}

/// Executes a run and contains a panic anywhere in it: the run ends `failed` with code
/// `internal` (stored, its lease released, its followers told, its usage so far kept)
/// instead of staying `running` under a heartbeat that would renew its lease for ever, and
/// the worker or task that executed it goes on. The panic's text goes to the log only.
#[allow(clippy::too_many_arguments)] // one run's whole context, passed once
pub(super) async fn execute_guarded(
    state: &Platform,
    scope: &TenantScope,
    run: RunRecord,
    manifest: &Manifest,
    tenant: &RunTenant,
    begin: Begin,
    next_seq: i64,
    live: &Arc<LiveRun>,
) -> RunRecord {
    let mut failed = run.clone();
    let execution = execute(state, scope, run, manifest, tenant, begin, next_seq, live);
    match std::panic::AssertUnwindSafe(execution).catch_unwind().await {
        Ok(done) => done,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(tenant = %scope.tenant(), run = %failed.id, panic = %what, "run panicked");
            metrics::counter!("berth_run_panics_total").increment(1);
            failed.status = "failed".to_owned();
            failed.error = Some(
                json!({"type": "internal", "code": "internal",
                       "message": "the run stopped on an internal error; usage spent so far is kept"})
                .to_string(),
            );
            failed.usage = live.usage().to_string();
            failed.finished_at_ms = Some(now_ms());
            finish(state, scope, failed, &[], &[], live).await
        }
    }
}

#[allow(clippy::too_many_arguments)] // one run's whole context, passed once
pub(super) async fn execute(
    state: &Platform,
    scope: &TenantScope,
    mut run: RunRecord,
    manifest: &Manifest,
    tenant: &RunTenant,
    begin: Begin,
    next_seq: i64,
    live: &Arc<LiveRun>,
) -> RunRecord {
    live.set_executing(true);
    #[cfg(feature = "test-hooks")]
    crate::test_hooks::maybe_panic(&run.agent);
    let policy = match policy::effective(state, scope).await {
        Ok(p) => p,
        Err(e) => {
            run.status = "failed".to_owned();
            run.error = Some(
                json!({"type": "internal", "code": "policy_unavailable", "message": e.message})
                    .to_string(),
            );
            run.finished_at_ms = Some(now_ms());
            return finish(state, scope, run, &[], &[], live).await;
        }
    };
    if manifest.component.is_some() {
        return execute_component(state, scope, run, manifest, tenant, policy, begin, live).await;
    }
    let dlp = state.runner.dlp_for(scope, &policy);
    let spec = RunSpec {
        scope,
        meta: CallMeta {
            key_id: run.key_id.clone(),
            agent: Some(run.agent.clone()),
            tags: Vec::new(),
            run_id: Some(run.id.clone()),
            agent_version: Some(run.version),
            budgets: budgets::for_tenant(
                state,
                &tenant.plan,
                &policy,
                Some(&run.agent),
                run.key_id.as_deref(),
            ),
            cost_limit: None,
        },
        policy: &policy,
        manifest,
        tenant_name: &tenant.name,
        version: run.version,
        run_id: &run.id,
        key_id: run.key_id.as_deref(),
        approval_timeout: state.runner.settings.approval_timeout,
        dlp: dlp.as_ref(),
    };
    let tools: &dyn ToolHost = state.runner.tools.as_ref();
    let outcome = run_builtin(&state.gateway, tools, &spec, live, begin, next_seq).await;
    run.usage = outcome.usage.to_json().to_string();
    record_tool_calls(state, scope, &run, &outcome.steps).await;
    audit_dlp_hits(state, scope, &run, &outcome.dlp_hits).await;
    if outcome.status == Status::WaitingApproval {
        run.status = "waiting_approval".to_owned();
        run.checkpoint = outcome
            .checkpoint
            .as_ref()
            .and_then(|c| serde_json::to_string(c).ok());
        match state
            .store
            .pause_run(scope, &run, &outcome.steps, &outcome.approvals)
            .await
        {
            Ok(true) => {
                for a in &outcome.approvals {
                    let entry = NewEntry::new(
                        "system",
                        "approval.request",
                        &a.id,
                        json!({"run": run.id, "agent": run.agent, "tool": a.tool}),
                    );
                    if let Err(e) = state.store.append_audit(scope, &entry).await {
                        tracing::error!(error = %e, "approval request not audited");
                    }
                }
                live.set_executing(false);
                // The run stays live here while it waits, so followers keep following.
                return run;
            }
            Ok(false) => {
                // Cancelled while it ran: the store's answer is the truth.
                let stored = state
                    .store
                    .get_run(scope, &run.id)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(run);
                return end_live(state, scope, stored, live);
            }
            Err(e) => {
                tracing::error!(run = %run.id, error = %e, "could not pause the run");
                run.status = "failed".to_owned();
                run.error = Some(json!({"type": "internal", "code": "store_unavailable", "message": "the run could not be saved"}).to_string());
                return end_live(state, scope, run, live);
            }
        }
    }
    run.status = outcome.status.as_str().to_owned();
    run.output = outcome.output.clone();
    run.error = outcome.error.as_ref().map(Value::to_string);
    run.finished_at_ms = Some(now_ms());
    let messages: Vec<String> = outcome.new_messages.iter().map(stored).collect();
    finish(state, scope, run, &outcome.steps, &messages, live).await
}

/// Runs a component agent: its imports are served by [`components::ServerHost`] for this
/// run's tenant; its CPU time is metered as compute.
#[allow(clippy::too_many_arguments)] // one run's whole context, passed once
pub(super) async fn execute_component(
    state: &Platform,
    scope: &TenantScope,
    mut run: RunRecord,
    manifest: &Manifest,
    tenant: &RunTenant,
    policy: Arc<berth_core::Policy>,
    begin: Begin,
    live: &Arc<LiveRun>,
) -> RunRecord {
    let (history, input) = match begin {
        Begin::Fresh { history, input } => (history, input),
        // Components never pause, so they have no checkpoint to resume from.
        Begin::Resume { checkpoint, .. } => (Vec::new(), checkpoint.new_messages),
    };
    let text: Vec<String> = input.iter().map(Message::text_content).collect();
    let text = text.join("\n");
    let fail = |mut run: RunRecord, kind: &str, code: &str, message: String| {
        run.status = "failed".to_owned();
        run.error = Some(json!({"type": kind, "code": code, "message": message}).to_string());
        run.finished_at_ms = Some(now_ms());
        run
    };
    let loaded = match components::load(state, scope, &run.agent, run.version, manifest).await {
        Ok(l) => l,
        Err(e) => {
            let run = fail(run, "invalid_request", "component_unavailable", e.message);
            return finish(state, scope, run, &[], &[], live).await;
        }
    };
    let Some((limits, grants)) = components::ServerHost::limits_and_grants(manifest) else {
        let run = fail(
            run,
            "internal",
            "component_unavailable",
            "the manifest has no component".into(),
        );
        return finish(state, scope, run, &[], &[], live).await;
    };
    let host = Arc::new(components::ServerHost::new(
        state.clone(),
        scope.clone(),
        Arc::new(manifest.clone()),
        policy.clone(),
        components::call_meta(state, &tenant.plan, &policy, &run),
        run.id.clone(),
        tenant.name.clone(),
        run.version,
        history,
        live.clone(),
        state.runner.dlp_for(scope, &policy),
    ));
    let outcome = tokio::select! {
        biased;
        _ = live.cancel.cancelled() => None,
        r = loaded.run(&text, &limits, &grants, host.clone()) => Some(r),
    };
    let (mut steps, mut usage) = host.take();
    let mut messages: Vec<String> = input.iter().map(stored).collect();
    match outcome {
        None => {
            run.status = "cancelled".to_owned();
            run.finished_at_ms = Some(now_ms());
        }
        Some(Ok(out)) => {
            usage.compute_ms = out.compute_ms;
            messages.push(stored(&Message::text(
                MsgRole::Assistant,
                out.output.clone(),
            )));
            run.status = "succeeded".to_owned();
            run.output = Some(out.output);
            run.finished_at_ms = Some(now_ms());
        }
        Some(Err(e)) => {
            usage.compute_ms = e.compute_ms;
            let code = e.code.as_str();
            let kind = match code {
                "timeout" => "timeout",
                "cpu_limit" | "memory_limit" => "limit_exceeded",
                "invalid" | "busy" => "unavailable",
                _ => "agent_error",
            };
            steps.push(RunStep {
                seq: steps.len() as i64 + 1,
                kind: "error".to_owned(),
                at_ms: now_ms(),
                data: json!({"code": code, "message": e.message}).to_string(),
            });
            run = fail(run, kind, code, e.message);
        }
    }
    // A limit or rule the host enforced ends the run as it would a built-in agent's,
    // whatever the component made of the refusal.
    if run.status != "cancelled"
        && let Some((kind, code, message)) = host.stopped()
    {
        run.output = None;
        run = fail(run, kind, code, message);
    }
    audit_dlp_hits(state, scope, &run, &host.take_dlp_hits()).await;
    if usage.compute_ms > 0 {
        state
            .usage
            .record(
                scope,
                UsageEvent {
                    id: format!("evt_compute_{}", run.id),
                    at_ms: now_ms(),
                    kind: "compute".to_owned(),
                    key_id: run.key_id.clone(),
                    agent: Some(run.agent.clone()),
                    provider: Some("component".to_owned()),
                    latency_ms: i64::try_from(usage.compute_ms).unwrap_or(i64::MAX),
                    status: run.status.clone(),
                    run_id: Some(run.id.clone()),
                    agent_version: Some(run.version),
                    ..UsageEvent::default()
                },
            )
            .await;
    }
    run.usage = usage.to_json().to_string();
    record_tool_calls(state, scope, &run, &steps).await;
    finish(state, scope, run, &steps, &messages, live).await
}
