//! Executes runs: the worker pool that takes queued runs (asynchronous ones, and runs
//! resumed after an approval), the execution of one run with its events and its final
//! write, the heartbeat that keeps live runs' leases, and the sweeper that fails runs whose
//! process died (`interrupted`), expires approvals and picks up queued runs left by a
//! restart or by another node.

use crate::dto::RunDto;
use crate::error::ApiError;
use crate::service::{budgets, components, policy};
use crate::state::AppState;
use berth_audit::NewEntry;
use berth_core::clock::now_ms;
use berth_core::{Manifest, TenantId, TenantScope};
use berth_gateway::CallMeta;
use berth_llm::{Message, Role as MsgRole};
use berth_runtime::dlp::Dlp;
use berth_runtime::scheduler::{Permit, Refused, Scheduler, Share};
use berth_runtime::{
    Begin, Checkpoint, Decision, LiveRun, RunEvent, RunHub, RunSpec, Status, ToolHost,
    events_from_steps, run_builtin,
};
use berth_store::{ApprovalFilter, PageRequest, RunRecord, RunStep, UsageEvent};
use futures_util::FutureExt;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// How runs are executed; from `[runs]` of `berth.toml`.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Queued runs executed at once by this node.
    pub workers: usize,
    /// A running run not renewed for this long belongs to a dead process.
    pub lease: Duration,
    /// How long an approval waits for a decision.
    pub approval_timeout: Duration,
    /// Runs this node executes at once, all tenants and modes together.
    pub max_concurrent: usize,
    /// Queued runs one tenant may have waiting on this node.
    pub max_queued_per_tenant: usize,
    /// The largest input text a run accepts (beyond: 413).
    pub max_input_bytes: usize,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            workers: 8,
            lease: Duration::from_secs(30),
            approval_timeout: Duration::from_secs(24 * 3600),
            max_concurrent: 256,
            max_queued_per_tenant: 1000,
            max_input_bytes: 1024 * 1024,
        }
    }
}

type DlpEntry = (Arc<berth_core::Policy>, Arc<Dlp>);

/// A queued run waiting for a worker.
pub struct Job {
    tenant: TenantId,
    run_id: String,
}

/// A slot of the node's run capacity, held while a run executes.
pub type RunPermit = Permit<Job>;

/// The tenant's share of the node: its concurrency limit (the policy's, capped by the
/// plan's) and its plan's weight.
pub fn share_of(state: &AppState, plan: &str, policy: &berth_core::Policy) -> Share {
    match budgets::plan_of(state, plan) {
        Some(p) => Share {
            concurrency: policy
                .effective_limits(p)
                .concurrent_runs
                .unwrap_or(p.concurrent_runs),
            weight: p.weight,
        },
        None => Share {
            concurrency: 1,
            weight: 1,
        },
    }
}

/// The answer to a run the scheduler refused.
pub fn refused(r: Refused, share: Share) -> ApiError {
    match r {
        Refused::TenantLimit => {
            let mut e = ApiError::rate_limited(format!(
                "this tenant may execute {} runs at once (and queue a bounded number); retry when one ends",
                share.concurrency
            ));
            e.code = "concurrency_limited";
            e.retry_after_secs = Some(1);
            e
        }
        Refused::Overloaded => {
            let mut e = ApiError::unavailable(
                "overloaded",
                "the server is at capacity for this plan's tier; retry shortly",
            );
            e.retry_after_secs = Some(2);
            e
        }
    }
}

/// The run machinery of this node.
pub struct Runner {
    pub hub: RunHub,
    /// Every tool host behind the gate of `service::tools` (rate limits, audit).
    pub tools: Arc<dyn ToolHost>,
    pub settings: RunSettings,
    /// Who runs next, and how many at once (see `berth_runtime::scheduler`).
    pub scheduler: Arc<Scheduler<Job>>,
    /// Runs in the queue and not yet taken, so the sweeper does not queue them twice.
    waiting: std::sync::Mutex<HashSet<(TenantId, String)>>,
    /// Each tenant's data-loss rules, compiled once per policy (the policy cache hands out
    /// the same `Arc` until the policy changes or its entry is refreshed).
    dlp: std::sync::Mutex<HashMap<TenantId, DlpEntry>>,
    /// Cancelled when the server begins to stop: event streams end, workers stop taking
    /// runs (those already executing finish, see [`Runner::drain`]).
    pub closing: CancellationToken,
}

impl Runner {
    pub fn new(settings: RunSettings, tools: Arc<dyn ToolHost>) -> Self {
        Runner {
            hub: RunHub::default(),
            tools,
            scheduler: Scheduler::new(settings.max_concurrent, settings.max_queued_per_tenant),
            settings,
            waiting: std::sync::Mutex::default(),
            dlp: std::sync::Mutex::default(),
            closing: CancellationToken::new(),
        }
    }

    /// Hands a queued run to this node's workers (a run queued twice is executed once: the
    /// store's claim decides).
    pub fn enqueue(&self, scope: &TenantScope, share: Share, run_id: &str) {
        let key = (scope.tenant().clone(), run_id.to_owned());
        let fresh = self
            .waiting
            .lock()
            .map(|mut w| w.insert(key))
            .unwrap_or(true);
        if fresh {
            self.scheduler.enqueue(
                scope.tenant_str(),
                share,
                Job {
                    tenant: scope.tenant().clone(),
                    run_id: run_id.to_owned(),
                },
            );
        }
    }

    fn taken(&self, job: &Job) {
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(&(job.tenant.clone(), job.run_id.clone()));
        }
    }

    /// Waits (at most one lease period) for the runs this node executes to end; a run still
    /// executing after that is left to the next process, which marks it interrupted.
    pub async fn drain(&self) {
        let deadline = tokio::time::Instant::now() + self.settings.lease;
        while !self.hub.executing().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The compiled data-loss rules of `policy` (`None` when it has none).
    pub fn dlp_for(
        &self,
        scope: &TenantScope,
        policy: &Arc<berth_core::Policy>,
    ) -> Option<Arc<Dlp>> {
        let rules = policy.dlp.as_ref()?;
        let mut cache = self
            .dlp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((p, d)) = cache.get(scope.tenant())
            && Arc::ptr_eq(p, policy)
        {
            return Some(d.clone());
        }
        let d = Arc::new(Dlp::from_policy(rules));
        cache.insert(scope.tenant().clone(), (policy.clone(), d.clone()));
        Some(d)
    }

    fn lease_until(&self) -> i64 {
        now_ms() + i64::try_from(self.settings.lease.as_millis()).unwrap_or(30_000)
    }
}

/// Starts the workers, the heartbeat and the sweeper as tracked tasks that end on shutdown.
pub fn start(state: &AppState) {
    for _ in 0..state.runner.settings.workers.max(1) {
        supervise(state, "run worker", worker);
    }
    supervise(state, "run heartbeat", heartbeat);
    supervise(state, "run sweeper", sweeper);
}

/// Runs `task` on a tracked task and starts it again (after a second) if it panics, so a
/// bug met by one tenant's data cannot take a node's workers, heartbeat or sweeper away
/// for good. A task that returns (on shutdown) is not restarted.
fn supervise<F, Fut>(state: &AppState, name: &'static str, task: F)
where
    F: Fn(AppState) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let s = state.clone();
    state.tasks.spawn(async move {
        loop {
            match std::panic::AssertUnwindSafe(task(s.clone()))
                .catch_unwind()
                .await
            {
                Ok(()) => return,
                Err(_) => {
                    tracing::error!(task = name, "background task panicked; restarting it");
                    metrics::counter!("berth_task_panics_total", "task" => name).increment(1);
                }
            }
            tokio::select! {
                _ = s.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
}

async fn worker(state: AppState) {
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
async fn execute_queued(
    state: &AppState,
    scope: &TenantScope,
    run_id: &str,
) -> Result<(), ApiError> {
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
            json!({"run": RunDto::from(&started_run)}),
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
            json!({"run": RunDto::from(&run)}),
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
async fn prepare(
    state: &AppState,
    scope: &TenantScope,
    run: &RunRecord,
) -> Result<Prepared, ApiError> {
    let version = state
        .store
        .get_version(scope, &run.agent, run.version)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "version_not_found",
                format!(
                    "agent '{}' has no version {} any more",
                    run.agent, run.version
                ),
            )
        })?;
    let manifest: Manifest =
        serde_json::from_str(&version.manifest).map_err(|e| ApiError::internal(&e))?;
    let tenant = state
        .store
        .get_tenant(scope.tenant())
        .await?
        .ok_or_else(|| ApiError::not_found("tenant_not_found", "the run's tenant is gone"))?;
    if let Some(cp) = &run.checkpoint {
        let checkpoint: Checkpoint =
            serde_json::from_str(cp).map_err(|e| ApiError::internal(&e))?;
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
        serde_json::from_value(request["input"].clone()).map_err(|e| ApiError::internal(&e))?;
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
pub fn launch(state: &AppState, l: Launch) -> oneshot::Receiver<RunRecord> {
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
async fn execute_guarded(
    state: &AppState,
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
async fn execute(
    state: &AppState,
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
async fn execute_component(
    state: &AppState,
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

/// Audits each data-loss hit of a run by detector, never with the data.
async fn audit_dlp_hits(
    state: &AppState,
    scope: &TenantScope,
    run: &RunRecord,
    hits: &[berth_runtime::dlp::DlpHit],
) {
    for hit in hits {
        let entry = NewEntry::new(
            "system",
            "dlp.hit",
            &run.id,
            json!({"agent": run.agent, "on": hit.on, "detectors": hit.detectors, "action": hit.action}),
        );
        if let Err(e) = state.store.append_audit(scope, &entry).await {
            tracing::error!(error = %e, "data-loss hit not audited");
        }
    }
}

/// Meters the tool calls among `steps` (one `tool` usage event each, named by the step, so
/// a retried write counts once): the tool's server as provider, the tool as model.
async fn record_tool_calls(
    state: &AppState,
    scope: &TenantScope,
    run: &RunRecord,
    steps: &[RunStep],
) {
    for s in steps.iter().filter(|s| s.kind == "tool_call") {
        let d: Value = serde_json::from_str(&s.data).unwrap_or(Value::Null);
        if d["executed"] != true {
            continue;
        }
        let tool = d["tool"].as_str().unwrap_or_default();
        state
            .usage
            .record(
                scope,
                UsageEvent {
                    id: format!("evt_tool_{}_{}", run.id, s.seq),
                    at_ms: s.at_ms,
                    kind: "tool".to_owned(),
                    key_id: run.key_id.clone(),
                    agent: Some(run.agent.clone()),
                    provider: tool.split_once("__").map(|(server, _)| server.to_owned()),
                    model: Some(tool.to_owned()),
                    latency_ms: d["latency_ms"].as_i64().unwrap_or(0),
                    status: if d.get("error").is_some() {
                        "error"
                    } else {
                        "ok"
                    }
                    .to_owned(),
                    run_id: Some(run.id.clone()),
                    agent_version: Some(run.version),
                    ..UsageEvent::default()
                },
            )
            .await;
    }
}

/// Writes a finished run, records it as a billable run, and ends it for its followers.
async fn finish(
    state: &AppState,
    scope: &TenantScope,
    mut run: RunRecord,
    steps: &[RunStep],
    messages: &[String],
    live: &Arc<LiveRun>,
) -> RunRecord {
    // The run's model calls (usage and budget settlements) were journaled as they ended:
    // durable before the run is answered.
    state.gateway.durable().await;
    match state.store.finish_run(scope, &run, steps, messages).await {
        Ok(status) => {
            if status != run.status
                && let Ok(Some(stored)) = state.store.get_run(scope, &run.id).await
            {
                run = stored;
            }
        }
        Err(e) => {
            // The lease runs out and the sweeper marks the run interrupted.
            tracing::error!(run = %run.id, error = %e, "could not store the finished run");
        }
    }
    state
        .usage
        .record(
            scope,
            UsageEvent {
                // One run event per run, whatever retries happen.
                id: format!("evt_run_{}", run.id),
                at_ms: now_ms(),
                kind: "run".to_owned(),
                key_id: run.key_id.clone(),
                agent: Some(run.agent.clone()),
                status: run.status.clone(),
                run_id: Some(run.id.clone()),
                agent_version: Some(run.version),
                ..UsageEvent::default()
            },
        )
        .await;
    end_live(state, scope, run, live)
}

/// Sends the terminal event and forgets the live run.
fn end_live(
    state: &AppState,
    scope: &TenantScope,
    run: RunRecord,
    live: &Arc<LiveRun>,
) -> RunRecord {
    live.set_executing(false);
    live.emit(terminal_event(&run));
    state.runner.hub.remove(scope, &run.id);
    run
}

/// `run.completed`, `run.failed` or `run.cancelled` with the run object.
pub fn terminal_event(run: &RunRecord) -> RunEvent {
    let kind = match run.status.as_str() {
        "succeeded" => "run.completed",
        "cancelled" => "run.cancelled",
        _ => "run.failed",
    };
    RunEvent::new(kind, json!({"run": RunDto::from(run)}))
}

/// The events a run not live here stands for: started (unless still queued), its stored
/// steps, and its end.
pub fn stored_events(run: &RunRecord, steps: &[RunStep]) -> Vec<RunEvent> {
    let mut out = Vec::new();
    if run.status != "queued" || run.checkpoint.is_some() || !steps.is_empty() {
        out.push(RunEvent::new(
            "run.started",
            json!({"run": RunDto::from(run)}),
        ));
    }
    out.extend(events_from_steps(steps));
    if run.is_terminal() {
        out.push(terminal_event(run));
    }
    out
}

/// Thread messages are stored as `{"role", "content", "parts"}`: the text for people and
/// API clients, and the parts (tool calls and results included) for replaying the thread.
pub fn stored(m: &Message) -> String {
    let role = match m.role {
        MsgRole::User => "user",
        MsgRole::Assistant => "assistant",
        MsgRole::Tool => "tool",
    };
    json!({"role": role, "content": m.text_content(), "parts": m.content}).to_string()
}

pub fn restored(text: &str) -> Option<Message> {
    let v: Value = serde_json::from_str(text).ok()?;
    let role = match v["role"].as_str()? {
        "user" => MsgRole::User,
        "assistant" => MsgRole::Assistant,
        "tool" => MsgRole::Tool,
        _ => return None,
    };
    if let Ok(content) = serde_json::from_value::<Vec<berth_llm::Part>>(v["parts"].clone())
        && !content.is_empty()
    {
        return Some(Message { role, content });
    }
    // Older rows carry text only; their tool turns cannot be replayed.
    (role != MsgRole::Tool).then(|| Message::text(role, v["content"].as_str().unwrap_or_default()))
}

/// Keeps the leases of the runs this node executes, with their usage so far.
async fn heartbeat(state: AppState) {
    let every = state.runner.settings.lease / 3;
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        for (tenant, run_id, live) in state.runner.hub.executing() {
            let Some(tenant) = TenantId::parse(&tenant) else {
                continue;
            };
            let scope = TenantScope::for_system(tenant);
            let usage = live.usage().to_string();
            // The steps taken since the last beat go with the lease: a crash keeps them.
            let steps = live.take_unsaved_steps();
            if let Err(e) = state
                .store
                .renew_lease(&scope, &run_id, state.runner.lease_until(), &usage, &steps)
                .await
            {
                tracing::warn!(run = %run_id, error = %e, "lease not renewed");
                live.return_unsaved_steps(steps);
            }
        }
    }
}

/// Once at start and then every lease period: runs of dead processes fail as
/// `interrupted`, approvals past their time expire, queued runs nobody holds are taken.
async fn sweeper(state: AppState) {
    loop {
        if let Err(e) = sweep(&state).await {
            tracing::warn!(error = %e.message, "run sweep failed");
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(state.runner.settings.lease.max(Duration::from_millis(200)) / 2) => {}
        }
    }
}

/// Sweeps every tenant. One tenant's failure (a store error on its rows, a policy that no
/// longer reads) is logged, counted and skipped: the tenants after it are swept all the
/// same. Only a failure to list tenants ends the pass early.
pub async fn sweep(state: &AppState) -> Result<(), ApiError> {
    let mut cursor = None;
    loop {
        let page = state
            .store
            .list_tenants(&PageRequest {
                limit: PageRequest::MAX_LIMIT,
                cursor: cursor.clone(),
            })
            .await?;
        for tenant in &page.items {
            if let Err(e) = sweep_tenant(state, tenant).await {
                metrics::counter!("berth_sweep_tenant_failures_total").increment(1);
                tracing::warn!(tenant = %tenant.id, error = %e.message, "sweep of one tenant failed; the others go on");
            }
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            return Ok(());
        }
    }
}

async fn sweep_tenant(state: &AppState, tenant: &berth_store::Tenant) -> Result<(), ApiError> {
    let interrupted = json!({"type": "internal", "code": "interrupted",
        "message": "the process running this run stopped before it finished; usage spent so far is kept"})
    .to_string();
    let scope = TenantScope::for_system(tenant.id.clone());
    for id in state
        .store
        .fail_expired_leases(&scope, now_ms(), &interrupted)
        .await?
    {
        tracing::warn!(tenant = %tenant.id, run = %id, "run interrupted: its process stopped");
        let Ok(Some(run)) = state.store.get_run(&scope, &id).await else {
            continue;
        };
        // The tool calls its steps recorded before the crash are billed (model calls were
        // metered by the gateway as they were answered). Event ids are the steps', so a
        // call the dead process had already metered counts once.
        match state.store.run_steps(&scope, &id).await {
            Ok(steps) => record_tool_calls(state, &scope, &run, &steps).await,
            Err(e) => tracing::warn!(run = %id, error = %e, "steps of an interrupted run not read"),
        }
        if let Some(live) = state.runner.hub.get(&scope, &id) {
            end_live(state, &scope, run, &live);
        }
    }
    // Holds first: they need no policy, so a policy that no longer reads does not keep
    // this tenant's expired holds (and their money) from being settled.
    state.store.release_expired_holds(&scope, now_ms()).await?;
    let policy = policy::effective(state, &scope).await?;
    let share = share_of(state, &tenant.plan, &policy);
    for a in state.store.expired_approvals(&scope, now_ms()).await? {
        let entry = NewEntry::new(
            "system",
            "approval.expire",
            &a.id,
            json!({"run": a.run_id, "tool": a.tool}),
        );
        if state
            .store
            .decide_approval(
                &scope,
                &a.id,
                "expired",
                Some("no decision in time"),
                "system",
                &entry,
            )
            .await?
            .is_some()
            && let Some(run_id) = a.run_id.as_deref()
        {
            state.runner.enqueue(&scope, share, run_id);
        }
    }
    for run in state.store.queued_runs(&scope, 100).await? {
        state.runner.enqueue(&scope, share, &run.id);
    }
    Ok(())
}
