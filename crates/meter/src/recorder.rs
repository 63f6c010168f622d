//! The usage recorder: request handlers hand events to a channel and return; a tracked
//! background task writes them in batches, grouped by tenant, retrying on store errors.
//! Each event carries its idempotency key, so a batch retried after a partial failure
//! counts every event once.

use berth_core::{TenantId, TenantScope};
use berth_store::{UsageEvent, UsageStore};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

enum Message {
    Event(Box<(TenantScope, UsageEvent)>),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct UsageRecorder {
    tx: mpsc::Sender<Message>,
}

/// Events buffered before a write is forced.
const BATCH: usize = 1000;
/// How long an event may wait for its batch.
const INTERVAL: Duration = Duration::from_millis(200);
/// Events that may wait in the channel before `record` applies back-pressure.
const CAPACITY: usize = 100_000;

impl UsageRecorder {
    /// Starts the writer task on `tasks`. It ends, after writing everything queued, when
    /// `shutdown` is cancelled or every `UsageRecorder` clone is dropped.
    pub fn start(
        store: Arc<dyn UsageStore>,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(CAPACITY);
        tasks.spawn(run(store, rx, shutdown));
        UsageRecorder { tx }
    }

    /// Queues an event. Waits only if the writer is far behind (back-pressure, not loss).
    pub async fn record(&self, scope: &TenantScope, event: UsageEvent) {
        let msg = Message::Event(Box::new((scope.clone(), event)));
        if let Err(e) = self.tx.send(msg).await {
            // Only after shutdown: say so loudly rather than lose it silently.
            if let Message::Event(ev) = e.0 {
                tracing::error!(tenant = %ev.0.tenant(), event = %ev.1.id, "usage event after recorder shutdown");
            }
        }
    }

    /// Queues an event without waiting, for callers that cannot (a `Drop`). If the
    /// channel is full, a task delivers it.
    pub fn record_detached(&self, scope: &TenantScope, event: UsageEvent) {
        let msg = Message::Event(Box::new((scope.clone(), event)));
        if let Err(mpsc::error::TrySendError::Full(msg)) = self.tx.try_send(msg) {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(msg).await;
            });
        }
    }

    /// Waits until every event queued before this call is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(
    store: Arc<dyn UsageStore>,
    mut rx: mpsc::Receiver<Message>,
    shutdown: CancellationToken,
) {
    let mut pending: HashMap<TenantId, (TenantScope, Vec<UsageEvent>)> = HashMap::new();
    let mut count = 0usize;
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Message::Event(ev)) => {
                    let (scope, event) = *ev;
                    pending.entry(scope.tenant().clone()).or_insert_with(|| (scope, Vec::new())).1.push(event);
                    count += 1;
                    if count >= BATCH {
                        write_all(store.as_ref(), &mut pending).await;
                        count = 0;
                    }
                }
                Some(Message::Flush(done)) => {
                    write_all(store.as_ref(), &mut pending).await;
                    count = 0;
                    let _ = done.send(());
                }
                None => {
                    write_all(store.as_ref(), &mut pending).await;
                    return;
                }
            },
            _ = shutdown.cancelled(), if !rx.is_closed() => {
                // Refuse new events; the loop keeps receiving what is already queued and
                // ends when `recv` reports the channel empty and closed.
                rx.close();
            }
            _ = tick.tick() => {
                if count > 0 {
                    write_all(store.as_ref(), &mut pending).await;
                    count = 0;
                }
            }
        }
    }
}

/// Writes every pending batch, retrying each with backoff until it is stored: usage is
/// money, so it is kept in memory rather than dropped while the store is down.
async fn write_all(
    store: &dyn UsageStore,
    pending: &mut HashMap<TenantId, (TenantScope, Vec<UsageEvent>)>,
) {
    for (_, (scope, events)) in pending.drain() {
        let mut delay = Duration::from_millis(50);
        loop {
            match store.insert_usage(&scope, &events).await {
                Ok(_) => break,
                Err(e) if e.is_missing_tenant() => {
                    tracing::warn!(tenant = %scope.tenant(), events = events.len(), "usage events of a deleted tenant dropped");
                    break;
                }
                Err(e) => {
                    tracing::warn!(tenant = %scope.tenant(), events = events.len(), error = %e, "usage write failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_store::contract::new_tenant;
    use berth_store::{SqliteStore, Store, UsageQuery};

    #[tokio::test]
    async fn events_are_batched_flushed_and_drained_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&format!("sqlite://{}", dir.path().join("b.db").display()))
                .await
                .unwrap(),
        );
        let a = new_tenant(store.as_ref(), "meter-a").await;
        let tasks = TaskTracker::new();
        let usage: Arc<dyn UsageStore> = store.clone();
        let shutdown = CancellationToken::new();
        let rec = UsageRecorder::start(usage, &tasks, shutdown.clone());
        for i in 0..2500 {
            let ev = UsageEvent {
                id: format!("evt_{i}"),
                kind: "llm".into(),
                status: "ok".into(),
                cost_nano: 3,
                ..Default::default()
            };
            rec.record(&a, ev).await;
        }
        // A retried event (same id) counts once.
        rec.record(
            &a,
            UsageEvent {
                id: "evt_7".into(),
                kind: "llm".into(),
                status: "ok".into(),
                cost_nano: 3,
                ..Default::default()
            },
        )
        .await;
        rec.flush().await;
        let rows = store.query_usage(&a, &UsageQuery::default()).await.unwrap();
        assert_eq!((rows[0].requests, rows[0].cost_nano), (2500, 7500));
        // Events queued just before shutdown are still written.
        rec.record(
            &a,
            UsageEvent {
                id: "evt_last".into(),
                kind: "llm".into(),
                status: "ok".into(),
                ..Default::default()
            },
        )
        .await;
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
        assert_eq!(
            store.query_usage(&a, &UsageQuery::default()).await.unwrap()[0].requests,
            2501
        );
    }
}
