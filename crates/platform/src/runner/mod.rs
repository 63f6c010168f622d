//! Executes runs. This module holds the node's run machinery ([`Runner`]: the scheduler,
//! the queue's bookkeeping, live runs, the compiled data-loss rules) and knows no
//! [`crate::Platform`]; the work is split by concern into submodules that do, and
//! `crate::tasks` starts it:
//!
//! - [`executor`]: the worker pool that takes queued runs (asynchronous ones, and runs
//!   resumed after an approval) and the execution of one run, built-in or component;
//! - [`record`]: what a run leaves behind — its final write, the metering of its tool
//!   calls, its terminal events, its thread messages;
//! - `lease`: the heartbeat that keeps live runs' leases with their usage so far;
//! - [`sweeper`]: fails runs whose process died (`interrupted`), expires approvals and
//!   picks up queued runs left by a restart or by another node.

use crate::error::Error;
use berth_core::clock::now_ms;
use berth_core::{TenantId, TenantScope};
use berth_runtime::dlp::Dlp;
use berth_runtime::scheduler::{Permit, Refused, Scheduler, Share};
use berth_runtime::{RunHub, ToolHost};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub mod executor;
pub(crate) mod lease;
pub mod record;
pub mod sweeper;

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

/// The answer to a run the scheduler refused.
pub fn refused(r: Refused, share: Share) -> Error {
    match r {
        Refused::TenantLimit => {
            let mut e = Error::rate_limited(format!(
                "this tenant may execute {} runs at once (and queue a bounded number); retry when one ends",
                share.concurrency
            ));
            e.code = "concurrency_limited";
            e.retry_after_secs = Some(1);
            e
        }
        Refused::Overloaded => {
            let mut e = Error::unavailable(
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
