//! Runs live in this process: the events each has emitted (so a late follower replays them),
//! a wake-up for followers, the token that cancels the run, and its usage so far.
//!
//! Events of a run that is not live here (finished, or paused on another node) are rebuilt
//! from its stored trace by [`events_from_steps`], in the same order and kinds a live run
//! emits them, so a follower may start on the store and continue on the live run.

use berth_core::TenantScope;
use berth_store::RunStep;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One event of a run, as sent on its SSE stream.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEvent {
    pub kind: String,
    pub data: Value,
}

impl RunEvent {
    pub fn new(kind: &str, data: Value) -> Self {
        RunEvent {
            kind: kind.to_owned(),
            data,
        }
    }

    /// `run.completed`, `run.failed` or `run.cancelled`: nothing follows it.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "run.completed" | "run.failed" | "run.cancelled"
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind; keep serving it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A run live in this process.
#[derive(Default)]
pub struct LiveRun {
    events: Mutex<Vec<Arc<RunEvent>>>,
    notify: Notify,
    ended: AtomicBool,
    /// Set while a task executes the run (not while it waits in the queue or for approval).
    executing: AtomicBool,
    pub cancel: CancellationToken,
    usage: Mutex<Value>,
    /// Steps taken since the heartbeat last stored them, so that a crash keeps (and bills)
    /// what was done: the heartbeat writes them with the lease, the end writes the rest.
    unsaved_steps: Mutex<Vec<berth_store::RunStep>>,
}

impl LiveRun {
    /// Keeps a copy of a step for the heartbeat to store.
    pub fn keep_step(&self, step: &berth_store::RunStep) {
        lock(&self.unsaved_steps).push(step.clone());
    }

    /// The steps not stored yet (the caller stores them, or puts them back on failure).
    pub fn take_unsaved_steps(&self) -> Vec<berth_store::RunStep> {
        std::mem::take(&mut *lock(&self.unsaved_steps))
    }

    /// Puts back steps whose write failed, ahead of newer ones.
    pub fn return_unsaved_steps(&self, mut steps: Vec<berth_store::RunStep>) {
        let mut kept = lock(&self.unsaved_steps);
        steps.append(&mut kept);
        *kept = steps;
    }

    /// Appends an event and wakes the followers; nothing is appended after a terminal one.
    pub fn emit(&self, event: RunEvent) {
        {
            let mut events = lock(&self.events);
            if self.ended.load(Ordering::Acquire) {
                return;
            }
            if event.is_terminal() {
                self.ended.store(true, Ordering::Release);
            }
            events.push(Arc::new(event));
        }
        self.notify.notify_waiters();
    }

    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// The events from index `from` on, waiting for at least one unless the run has ended
    /// (then an empty answer means there will be no more).
    pub async fn next_events(&self, from: usize) -> Vec<Arc<RunEvent>> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so an event emitted in between is not missed.
            notified.as_mut().enable();
            {
                let events = lock(&self.events);
                if events.len() > from {
                    return events[from..].to_vec();
                }
                if self.ended() {
                    return Vec::new();
                }
            }
            notified.await;
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.events).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn set_executing(&self, on: bool) {
        self.executing.store(on, Ordering::Release);
    }

    pub fn is_executing(&self) -> bool {
        self.executing.load(Ordering::Acquire)
    }

    pub fn set_usage(&self, usage: Value) {
        *lock(&self.usage) = usage;
    }

    pub fn usage(&self) -> Value {
        lock(&self.usage).clone()
    }
}

/// The live runs of this process, keyed by tenant and run id.
#[derive(Default)]
pub struct RunHub {
    runs: Mutex<HashMap<(String, String), Arc<LiveRun>>>,
}

impl RunHub {
    /// The live run, created (with `seed` as its first events) if it is not live yet.
    pub fn register(
        &self,
        scope: &TenantScope,
        run_id: &str,
        seed: impl FnOnce() -> Vec<RunEvent>,
    ) -> Arc<LiveRun> {
        let mut runs = lock(&self.runs);
        runs.entry((scope.tenant_str().to_owned(), run_id.to_owned()))
            .or_insert_with(|| {
                let live = LiveRun::default();
                lock(&live.events).extend(seed().into_iter().map(Arc::new));
                Arc::new(live)
            })
            .clone()
    }

    pub fn get(&self, scope: &TenantScope, run_id: &str) -> Option<Arc<LiveRun>> {
        lock(&self.runs)
            .get(&(scope.tenant_str().to_owned(), run_id.to_owned()))
            .cloned()
    }

    pub fn remove(&self, scope: &TenantScope, run_id: &str) {
        lock(&self.runs).remove(&(scope.tenant_str().to_owned(), run_id.to_owned()));
    }

    /// The runs a task of this process is executing: (tenant, run id, live run).
    pub fn executing(&self) -> Vec<(String, String, Arc<LiveRun>)> {
        lock(&self.runs)
            .iter()
            .filter(|(_, live)| live.is_executing())
            .map(|((t, r), live)| (t.clone(), r.clone(), live.clone()))
            .collect()
    }
}

/// The events a run's stored steps stand for, as a live run would have emitted them (a
/// model turn's text as one `message.delta`).
pub fn events_from_steps(steps: &[RunStep]) -> Vec<RunEvent> {
    let mut out = Vec::new();
    for s in steps {
        let d: Value = serde_json::from_str(&s.data).unwrap_or(Value::Null);
        match s.kind.as_str() {
            "llm_call" => {
                for text in d["response"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["text"].as_str())
                    .filter(|t| !t.is_empty())
                {
                    out.push(RunEvent::new("message.delta", json!({"text": text})));
                }
            }
            "tool_call" => {
                out.push(RunEvent::new("tool.call", tool_call_event(&d)));
                out.push(RunEvent::new("tool.result", tool_result_event(&d)));
            }
            "approval" => {
                let kind = if d["status"] == "pending" {
                    "approval.required"
                } else {
                    "approval.decided"
                };
                out.push(RunEvent::new(kind, d));
            }
            "log" => out.push(RunEvent::new("log", d)),
            _ => {}
        }
    }
    out
}

/// `tool.call` of a `tool_call` step's data.
pub fn tool_call_event(step: &Value) -> Value {
    json!({"id": step["id"], "tool": step["tool"], "arguments": step["arguments"]})
}

/// `tool.result` of a `tool_call` step's data.
pub fn tool_result_event(step: &Value) -> Value {
    let mut v = json!({"id": step["id"], "tool": step["tool"]});
    for k in ["result", "error"] {
        if let Some(x) = step.get(k) {
            v[k] = x.clone();
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_replay_then_wait_and_nothing_follows_the_end() {
        let live = Arc::new(LiveRun::default());
        live.emit(RunEvent::new("run.started", json!({})));
        let follower = {
            let live = live.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                loop {
                    let batch = live.next_events(seen.len()).await;
                    if batch.is_empty() {
                        return seen;
                    }
                    seen.extend(batch.iter().map(|e| e.kind.clone()));
                }
            })
        };
        tokio::task::yield_now().await;
        live.emit(RunEvent::new("message.delta", json!({"text": "hi"})));
        live.emit(RunEvent::new("run.completed", json!({})));
        live.emit(RunEvent::new("message.delta", json!({"text": "late"})));
        let seen = follower.await.unwrap();
        assert_eq!(seen, ["run.started", "message.delta", "run.completed"]);
    }
}
